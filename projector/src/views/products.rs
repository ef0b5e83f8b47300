//! `rm_products`: a product's catalogue entry and stock.

use domain::Event;
use domain::EventData;
use domain::product::ProductEvent;
use event_store::RecordedEvent;
use serde::{Deserialize, Serialize};

use super::{ApplyError, Declaration, View};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRow {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub on_hand: i64,
    pub reserved: i64,
    /// Always `on_hand - reserved`; stored so it can be read and filtered.
    pub available: i64,
    pub version: u64,
}

impl View for ProductRow {
    const DECLARATION: Declaration = read_models::PRODUCTS;

    fn version(&self) -> u64 {
        self.version
    }

    fn create<D: EventData>(event: &RecordedEvent<D>) -> Result<Self, ApplyError> {
        match ProductEvent::decode(&event.event_type, &event.data)? {
            ProductEvent::ProductCreated {
                sku,
                name,
                price_cents,
                initial_stock,
            } => Ok(ProductRow {
                sku,
                name,
                price_cents,
                on_hand: initial_stock,
                reserved: 0,
                available: initial_stock,
                version: event.version,
            }),
            _ => Err(ApplyError::out_of_place(event, "no ProductCreated before")),
        }
    }

    fn update<D: EventData>(&mut self, event: &RecordedEvent<D>) -> Result<(), ApplyError> {
        match ProductEvent::decode(&event.event_type, &event.data)? {
            ProductEvent::ProductCreated { .. } => {
                return Err(ApplyError::out_of_place(event, "the product exists"));
            }
            ProductEvent::ProductRestocked { quantity, .. } => self.on_hand += quantity,
            ProductEvent::InventoryReserved { quantity, .. } => self.reserved += quantity,
            ProductEvent::InventoryReleased { quantity, .. } => self.reserved -= quantity,
        }
        self.available = self.on_hand - self.reserved;
        self.version = event.version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::views::testing::{fold, recorded};

    #[test]
    fn reservations_move_stock_from_available_to_reserved_and_back() {
        let order = Uuid::from_u128(7);
        let events = [
            ProductEvent::ProductCreated {
                sku: "mug".into(),
                name: "Mug".into(),
                price_cents: 900,
                initial_stock: 10,
            },
            ProductEvent::ProductRestocked {
                sku: "mug".into(),
                quantity: 5,
            },
            ProductEvent::InventoryReserved {
                sku: "mug".into(),
                order_id: order,
                quantity: 4,
            },
            ProductEvent::InventoryReleased {
                sku: "mug".into(),
                order_id: order,
                quantity: 4,
            },
            ProductEvent::InventoryReserved {
                sku: "mug".into(),
                order_id: order,
                quantity: 3,
            },
        ];
        let recorded: Vec<_> = (1..)
            .zip(&events)
            .map(|(v, e)| recorded("product-mug", v, e))
            .collect();
        let row: ProductRow = fold(&recorded);
        assert_eq!(
            (row.on_hand, row.reserved, row.available, row.version),
            (15, 3, 12, 5)
        );
    }

    #[test]
    fn stock_events_before_the_product_exists_are_refused() {
        let event = recorded(
            "product-mug",
            1,
            &ProductEvent::ProductRestocked {
                sku: "mug".into(),
                quantity: 5,
            },
        );
        assert!(ProductRow::apply(&mut None, &event).is_err());
    }
}
