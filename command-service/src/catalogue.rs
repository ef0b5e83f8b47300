//! What an order placement needs to know about products and customers, and
//! what the saga's steps need to know about an order, remembered between
//! requests.
//!
//! Only facts that can never change once recorded are kept: a product's
//! price (`ProductCreated` sets it and no command changes it), that a
//! customer exists (no command removes one) and what an order was placed
//! with (customer, lines, total, address: `OrderPlaced` sets them and no
//! command changes them; its status is not kept). So a remembered answer is
//! always the answer a fresh load would give, on every replica, and
//! nothing has to be invalidated. Absence is never remembered: a product
//! or customer created a moment later must be found.
//!
//! If a command that changes prices is ever added, the price must stop
//! being remembered here (or be keyed by the product's version).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use domain::order::{Order, OrderLine, ShippingAddress};
use uuid::Uuid;

/// Entries kept per kind; when full, that kind is forgotten and refilled
/// (a forgotten entry costs one load).
const CAPACITY: usize = 100_000;

#[derive(Clone, Default)]
pub struct Catalogue {
    inner: Arc<RwLock<Known>>,
}

#[derive(Default)]
struct Known {
    prices: HashMap<String, i64>,
    customers: HashSet<Uuid>,
    orders: HashMap<Uuid, Arc<PlacedOrder>>,
}

/// What an order was placed with; none of it changes afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedOrder {
    pub customer_id: Uuid,
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
    pub shipping_address: Option<ShippingAddress>,
}

impl PlacedOrder {
    /// The placement facts of an order that exists.
    pub fn of(order: &Order) -> Self {
        Self {
            customer_id: order.customer_id,
            lines: order.lines.clone(),
            total_cents: order.total_cents,
            shipping_address: order.shipping_address.clone(),
        }
    }
}

impl Catalogue {
    /// The price of `sku`, if its product was seen to exist.
    pub fn price(&self, sku: &str) -> Option<i64> {
        self.read().prices.get(sku).copied()
    }

    pub fn remember_price(&self, sku: &str, price_cents: i64) {
        let mut known = self.write();
        if known.prices.len() >= CAPACITY {
            known.prices.clear();
        }
        known.prices.insert(sku.to_owned(), price_cents);
    }

    /// Whether `customer_id` was seen to exist.
    pub fn has_customer(&self, customer_id: Uuid) -> bool {
        self.read().customers.contains(&customer_id)
    }

    pub fn remember_customer(&self, customer_id: Uuid) {
        let mut known = self.write();
        if known.customers.len() >= CAPACITY {
            known.customers.clear();
        }
        known.customers.insert(customer_id);
    }

    /// What `order_id` was placed with, if it was seen to exist.
    pub fn order(&self, order_id: Uuid) -> Option<Arc<PlacedOrder>> {
        self.read().orders.get(&order_id).cloned()
    }

    pub fn remember_order(&self, order_id: Uuid, placed: Arc<PlacedOrder>) {
        let mut known = self.write();
        if known.orders.len() >= CAPACITY {
            known.orders.clear();
        }
        known.orders.insert(order_id, placed);
    }

    // A panic while holding the lock cannot leave a half-written entry
    // (each write is one insert or clear), so a poisoned lock is still
    // usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Known> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Known> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_what_was_seen_and_nothing_else() {
        let catalogue = Catalogue::default();
        assert_eq!(catalogue.price("SKU-1"), None);
        catalogue.remember_price("SKU-1", 1250);
        assert_eq!(catalogue.price("SKU-1"), Some(1250));
        assert_eq!(catalogue.price("SKU-2"), None);

        let customer = Uuid::now_v7();
        assert!(!catalogue.has_customer(customer));
        catalogue.remember_customer(customer);
        assert!(catalogue.has_customer(customer));
        assert!(!catalogue.has_customer(Uuid::now_v7()));

        let order = Uuid::now_v7();
        let placed = Arc::new(PlacedOrder {
            customer_id: customer,
            lines: vec![OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price_cents: 1250,
            }],
            total_cents: 2500,
            shipping_address: None,
        });
        assert_eq!(catalogue.order(order), None);
        catalogue.remember_order(order, Arc::clone(&placed));
        assert_eq!(catalogue.order(order), Some(placed));
        assert_eq!(catalogue.order(Uuid::now_v7()), None);
    }

    #[test]
    fn a_full_kind_is_forgotten_and_refilled() {
        let catalogue = Catalogue::default();
        for i in 0..CAPACITY {
            catalogue.remember_price(&format!("SKU-{i}"), 1);
        }
        catalogue.remember_price("LAST", 2);
        assert_eq!(catalogue.price("SKU-0"), None);
        assert_eq!(catalogue.price("LAST"), Some(2));
    }
}
