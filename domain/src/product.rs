//! A catalogue entry and its stock: on hand = reserved + available.
//! Stream `product-<sku>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::wire::event_names;
use crate::{Aggregate, DomainError, MAX_CENTS, MAX_QUANTITY};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ProductEvent {
    ProductCreated {
        sku: String,
        name: String,
        price_cents: i64,
        initial_stock: i64,
    },
    ProductRestocked {
        sku: String,
        quantity: i64,
    },
    InventoryReserved {
        sku: String,
        order_id: Uuid,
        quantity: i64,
    },
    InventoryReleased {
        sku: String,
        order_id: Uuid,
        quantity: i64,
    },
}
event_names!(ProductEvent {
    ProductCreated,
    ProductRestocked,
    InventoryReserved,
    InventoryReleased
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    Create {
        sku: String,
        name: String,
        price_cents: i64,
        initial_stock: i64,
    },
    Restock {
        quantity: i64,
    },
    /// Holds `quantity` for the order; repeating it for the same order
    /// changes nothing.
    Reserve {
        order_id: Uuid,
        quantity: i64,
    },
    /// Returns the order's reservation to available stock; nothing if it
    /// holds none.
    Release {
        order_id: Uuid,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub exists: bool,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub on_hand: i64,
    pub reserved: i64,
    /// Quantity held per order.
    pub reservations: BTreeMap<Uuid, i64>,
}

impl Product {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

impl Aggregate for Product {
    const SNAPSHOT_TYPE: &'static str = "product";
    type State = Product;
    type Command = ProductCommand;
    type Event = ProductEvent;

    fn decide(state: &Product, command: ProductCommand) -> Result<Vec<ProductEvent>, DomainError> {
        use ProductCommand::*;
        if !state.exists && !matches!(command, Create { .. }) {
            return Err(DomainError::NotFound {
                what: "product".into(),
            });
        }
        match command {
            Create {
                sku,
                name,
                price_cents,
                initial_stock,
            } => {
                if state.exists {
                    return Err(DomainError::AlreadyExists {
                        what: format!("product {sku}"),
                    });
                }
                if !valid_sku(&sku) {
                    return Err(DomainError::invalid(
                        "sku",
                        "must match ^[A-Za-z0-9_-]{1,64}$",
                    ));
                }
                if name.trim().is_empty() {
                    return Err(DomainError::invalid("name", "must not be empty"));
                }
                if !(0..=MAX_CENTS).contains(&price_cents) {
                    return Err(DomainError::invalid(
                        "price_cents",
                        format!("must be between 0 and {MAX_CENTS}"),
                    ));
                }
                if !(0..=MAX_QUANTITY).contains(&initial_stock) {
                    return Err(DomainError::invalid(
                        "initial_stock",
                        format!("must be between 0 and {MAX_QUANTITY}"),
                    ));
                }
                Ok(vec![ProductEvent::ProductCreated {
                    sku,
                    name,
                    price_cents,
                    initial_stock,
                }])
            }
            Restock { quantity } => {
                if quantity <= 0 {
                    return Err(DomainError::invalid("quantity", "must be greater than 0"));
                }
                if quantity > MAX_QUANTITY || state.on_hand.checked_add(quantity).is_none() {
                    return Err(DomainError::invalid(
                        "quantity",
                        format!("must be at most {MAX_QUANTITY}"),
                    ));
                }
                Ok(vec![ProductEvent::ProductRestocked {
                    sku: state.sku.clone(),
                    quantity,
                }])
            }
            Reserve { order_id, quantity } => {
                if quantity <= 0 {
                    return Err(DomainError::invalid("quantity", "must be greater than 0"));
                }
                if state.reservations.contains_key(&order_id) {
                    return Ok(vec![]);
                }
                if state.available() < quantity {
                    return Err(DomainError::InsufficientStock {
                        sku: state.sku.clone(),
                        requested: quantity,
                        available: state.available(),
                    });
                }
                Ok(vec![ProductEvent::InventoryReserved {
                    sku: state.sku.clone(),
                    order_id,
                    quantity,
                }])
            }
            Release { order_id } => Ok(state
                .reservations
                .get(&order_id)
                .map(|&quantity| ProductEvent::InventoryReleased {
                    sku: state.sku.clone(),
                    order_id,
                    quantity,
                })
                .into_iter()
                .collect()),
        }
    }

    fn evolve(mut state: Product, event: &ProductEvent) -> Product {
        match event {
            ProductEvent::ProductCreated {
                sku,
                name,
                price_cents,
                initial_stock,
            } => {
                state.exists = true;
                state.sku = sku.clone();
                state.name = name.clone();
                state.price_cents = *price_cents;
                state.on_hand = *initial_stock;
            }
            ProductEvent::ProductRestocked { quantity, .. } => state.on_hand += quantity,
            ProductEvent::InventoryReserved {
                order_id, quantity, ..
            } => {
                state.reserved += quantity;
                state.reservations.insert(*order_id, *quantity);
            }
            ProductEvent::InventoryReleased {
                order_id, quantity, ..
            } => {
                state.reserved -= quantity;
                state.reservations.remove(order_id);
            }
        }
        state
    }
}

/// `^[A-Za-z0-9_-]{1,64}$`
pub fn valid_sku(sku: &str) -> bool {
    (1..=64).contains(&sku.len())
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::ProductCommand::*;
    use super::ProductEvent::*;
    use super::*;
    use crate::given::given;

    fn created(stock: i64) -> ProductEvent {
        ProductCreated {
            sku: "mug".into(),
            name: "Mug".into(),
            price_cents: 1200,
            initial_stock: stock,
        }
    }

    fn order(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn a_new_product_is_created_with_its_initial_stock() {
        given::<Product>([])
            .when(Create {
                sku: "mug".into(),
                name: "Mug".into(),
                price_cents: 1200,
                initial_stock: 5,
            })
            .then([created(5)]);
    }

    #[test]
    fn creating_an_existing_sku_is_refused() {
        given::<Product>([created(5)])
            .when(Create {
                sku: "mug".into(),
                name: "Other".into(),
                price_cents: 1,
                initial_stock: 0,
            })
            .then_error(DomainError::AlreadyExists {
                what: "product mug".into(),
            });
    }

    #[test]
    fn a_sku_outside_the_allowed_alphabet_is_invalid() {
        given::<Product>([])
            .when(Create {
                sku: "mug!".into(),
                name: "Mug".into(),
                price_cents: 1,
                initial_stock: 0,
            })
            .then_error(DomainError::invalid(
                "sku",
                "must match ^[A-Za-z0-9_-]{1,64}$",
            ));
        assert!(valid_sku(&"a".repeat(64)));
        assert!(!valid_sku(&"a".repeat(65)));
        assert!(!valid_sku(""));
    }

    #[test]
    fn negative_price_or_stock_is_invalid() {
        given::<Product>([])
            .when(Create {
                sku: "mug".into(),
                name: "Mug".into(),
                price_cents: -1,
                initial_stock: 0,
            })
            .then_error(DomainError::invalid(
                "price_cents",
                "must be between 0 and 1000000000000",
            ));
        given::<Product>([])
            .when(Create {
                sku: "mug".into(),
                name: "Mug".into(),
                price_cents: 1,
                initial_stock: -1,
            })
            .then_error(DomainError::invalid(
                "initial_stock",
                "must be between 0 and 1000000",
            ));
    }

    #[test]
    fn restocking_needs_a_positive_quantity() {
        given::<Product>([created(0)])
            .when(Restock { quantity: 3 })
            .then([ProductRestocked {
                sku: "mug".into(),
                quantity: 3,
            }]);
        given::<Product>([created(0)])
            .when(Restock { quantity: 0 })
            .then_error(DomainError::invalid("quantity", "must be greater than 0"));
    }

    #[test]
    fn commands_on_an_unknown_product_are_refused() {
        given::<Product>([])
            .when(Restock { quantity: 3 })
            .then_error(DomainError::NotFound {
                what: "product".into(),
            });
    }

    #[test]
    fn reservation_takes_available_stock() {
        given::<Product>([created(5)])
            .when(Reserve {
                order_id: order(1),
                quantity: 5,
            })
            .then([InventoryReserved {
                sku: "mug".into(),
                order_id: order(1),
                quantity: 5,
            }]);
    }

    #[test]
    fn reservation_fails_when_stock_is_short() {
        let reserved = InventoryReserved {
            sku: "mug".into(),
            order_id: order(1),
            quantity: 4,
        };
        given::<Product>([created(5), reserved])
            .when(Reserve {
                order_id: order(2),
                quantity: 2,
            })
            .then_error(DomainError::InsufficientStock {
                sku: "mug".into(),
                requested: 2,
                available: 1,
            });
    }

    #[test]
    fn repeating_a_reservation_for_the_same_order_changes_nothing() {
        let reserved = InventoryReserved {
            sku: "mug".into(),
            order_id: order(1),
            quantity: 5,
        };
        given::<Product>([created(5), reserved])
            .when(Reserve {
                order_id: order(1),
                quantity: 5,
            })
            .then_nothing();
    }

    #[test]
    fn release_returns_the_orders_reservation_once() {
        let reserved = InventoryReserved {
            sku: "mug".into(),
            order_id: order(1),
            quantity: 2,
        };
        let released = InventoryReleased {
            sku: "mug".into(),
            order_id: order(1),
            quantity: 2,
        };
        given::<Product>([created(5), reserved.clone()])
            .when(Release { order_id: order(1) })
            .then([released.clone()]);
        given::<Product>([created(5), reserved, released])
            .when(Release { order_id: order(1) })
            .then_nothing();
    }

    #[test]
    fn stock_figures_add_up() {
        let events = [
            created(5),
            ProductRestocked {
                sku: "mug".into(),
                quantity: 3,
            },
            InventoryReserved {
                sku: "mug".into(),
                order_id: order(1),
                quantity: 6,
            },
            InventoryReleased {
                sku: "mug".into(),
                order_id: order(1),
                quantity: 6,
            },
            InventoryReserved {
                sku: "mug".into(),
                order_id: order(2),
                quantity: 2,
            },
        ];
        let state = events.iter().fold(Product::default(), Product::evolve);
        assert_eq!(
            (state.on_hand, state.reserved, state.available()),
            (8, 2, 6)
        );
    }

    #[test]
    fn events_round_trip_through_their_wire_form() {
        use crate::Event;
        let event = InventoryReserved {
            sku: "mug".into(),
            order_id: order(7),
            quantity: 2,
        };
        assert_eq!(event.event_type(), "InventoryReserved");
        let data = event.data();
        assert_eq!(data["quantity"], 2);
        assert_eq!(
            ProductEvent::decode("InventoryReserved", &data).unwrap(),
            event
        );
        assert!(ProductEvent::decode("Nonsense", &data).is_err());
        // The same from the JSON text the store holds, as replays read it.
        let text = serde_json::value::to_raw_value(&data).unwrap();
        assert_eq!(
            ProductEvent::decode("InventoryReserved", &text).unwrap(),
            event
        );
        assert!(ProductEvent::decode("Nonsense", &text).is_err());
        let wrong_shape = serde_json::value::RawValue::from_string(r#"{"sku": 1}"#.into()).unwrap();
        let error = ProductEvent::decode("InventoryReserved", &wrong_shape).unwrap_err();
        assert_eq!(error.event_type, "InventoryReserved");
    }
}
