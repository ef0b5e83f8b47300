//! Which stream holds what: every stream id of the platform is made here,
//! `<category>-<id>`, and every reader that picks streams by category
//! (the saga's intake, the read models) uses these prefixes.

use uuid::Uuid;

pub const ORDER: &str = "order-";
pub const CUSTOMER: &str = "customer-";
pub const PRODUCT: &str = "product-";
pub const SHIPMENT: &str = "shipment-";
pub const SAGA: &str = "saga-";

/// An order's stream: `order-<order uuid>`.
pub fn order(order_id: Uuid) -> String {
    format!("{ORDER}{order_id}")
}

/// A customer's stream: `customer-<customer uuid>`.
pub fn customer(customer_id: Uuid) -> String {
    format!("{CUSTOMER}{customer_id}")
}

/// A product's stream: `product-<sku>`.
pub fn product(sku: &str) -> String {
    format!("{PRODUCT}{sku}")
}

/// An order's shipment's stream: `shipment-<order uuid>`.
pub fn shipment(order_id: Uuid) -> String {
    format!("{SHIPMENT}{order_id}")
}

/// An order's fulfilment saga's stream: `saga-<order uuid>`.
pub fn saga(order_id: Uuid) -> String {
    format!("{SAGA}{order_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stream_id_is_its_category_and_its_id() {
        let id = Uuid::from_u128(7);
        assert_eq!(order(id), format!("order-{id}"));
        assert_eq!(customer(id), format!("customer-{id}"));
        assert_eq!(product("mug"), "product-mug");
        assert_eq!(shipment(id), format!("shipment-{id}"));
        assert_eq!(saga(id), format!("saga-{id}"));
    }
}
