//! `rm_orders`: an order's detail; also what its lists by customer and
//! status are read from.

use chrono::{DateTime, Utc};
use domain::EventData;
use domain::order::{OrderEvent, OrderLine, OrderStatus, ShippingAddress};
use domain::{Event, RejectionReason};
use event_store::RecordedEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApplyError, Declaration, View};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
    pub shipping_address: ShippingAddress,
    pub rejection_reason: Option<RejectionReason>,
    pub tracking_number: Option<String>,
    /// When the order was placed (its first event was recorded).
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
}

impl View for OrderRow {
    const DECLARATION: Declaration = read_models::ORDERS;

    fn version(&self) -> u64 {
        self.version
    }

    fn create<D: EventData>(event: &RecordedEvent<D>) -> Result<Self, ApplyError> {
        match OrderEvent::decode(&event.event_type, &event.data)? {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                total_cents,
                shipping_address,
            } => Ok(OrderRow {
                order_id,
                customer_id,
                status: OrderStatus::Pending,
                lines,
                total_cents,
                shipping_address,
                rejection_reason: None,
                tracking_number: None,
                created_at: event.recorded_at,
                updated_at: event.recorded_at,
                version: event.version,
            }),
            _ => Err(ApplyError::out_of_place(event, "no OrderPlaced before")),
        }
    }

    fn update<D: EventData>(&mut self, event: &RecordedEvent<D>) -> Result<(), ApplyError> {
        match OrderEvent::decode(&event.event_type, &event.data)? {
            OrderEvent::OrderPlaced { .. } => {
                return Err(ApplyError::out_of_place(event, "the order exists"));
            }
            OrderEvent::OrderConfirmed {
                tracking_number, ..
            } => {
                self.status = OrderStatus::Confirmed;
                self.tracking_number = Some(tracking_number);
            }
            OrderEvent::OrderRejected { reason, .. } => {
                self.status = OrderStatus::Rejected;
                self.rejection_reason = Some(reason);
            }
            // The order stays pending or confirmed until its saga has
            // compensated; then it is cancelled.
            OrderEvent::OrderCancellationRequested { .. } => {}
            OrderEvent::OrderCancelled { .. } => self.status = OrderStatus::Cancelled,
        }
        self.updated_at = event.recorded_at;
        self.version = event.version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::testing::{at, fold, recorded};

    fn placed(order_id: Uuid) -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id,
            customer_id: Uuid::from_u128(9),
            lines: vec![OrderLine {
                sku: "mug".into(),
                quantity: 2,
                unit_price_cents: 900,
            }],
            total_cents: 1_800,
            shipping_address: ShippingAddress {
                name: "Ada".into(),
                line1: "1 Analytical St".into(),
                city: "London".into(),
                postal_code: "N1".into(),
                country: "GB".into(),
            },
        }
    }

    #[test]
    fn a_confirmed_order_has_its_tracking_number_and_both_times() {
        let order_id = Uuid::from_u128(1);
        let stream = format!("order-{order_id}");
        let row: OrderRow = fold(&[
            recorded(&stream, 1, &placed(order_id)),
            recorded(
                &stream,
                2,
                &OrderEvent::OrderConfirmed {
                    order_id,
                    tracking_number: "TRK-1".into(),
                },
            ),
        ]);
        assert_eq!(row.status, OrderStatus::Confirmed);
        assert_eq!(row.tracking_number.as_deref(), Some("TRK-1"));
        assert_eq!((row.created_at, row.updated_at), (at(1), at(2)));
        assert_eq!(row.version, 2);
    }

    #[test]
    fn a_cancellation_request_keeps_the_status_until_cancelled() {
        let order_id = Uuid::from_u128(1);
        let stream = format!("order-{order_id}");
        let requested = OrderEvent::OrderCancellationRequested {
            order_id,
            reason: "changed my mind".into(),
        };
        let row: OrderRow = fold(&[
            recorded(&stream, 1, &placed(order_id)),
            recorded(&stream, 2, &requested),
        ]);
        assert_eq!(row.status, OrderStatus::Pending);
        let cancelled = OrderEvent::OrderCancelled {
            order_id,
            reason: "changed my mind".into(),
        };
        let mut row = Some(row);
        OrderRow::apply(&mut row, &recorded(&stream, 3, &cancelled)).unwrap();
        let row = row.unwrap();
        assert_eq!(row.status, OrderStatus::Cancelled);
    }

    #[test]
    fn an_unknown_event_type_is_refused() {
        let mut event = recorded("order-x", 1, &placed(Uuid::from_u128(1)));
        event.event_type = "OrderTeleported".into();
        assert!(matches!(
            OrderRow::apply(&mut None, &event),
            Err(ApplyError::Decode(_))
        ));
    }
}
