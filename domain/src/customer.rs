//! A customer and their balance: deposits − charges + refunds, never below
//! zero. Stream `customer-<uuid>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::wire::event_names;
use crate::{Aggregate, DomainError, MAX_CENTS};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CustomerEvent {
    CustomerRegistered {
        customer_id: Uuid,
        name: String,
        email: String,
    },
    FundsDeposited {
        customer_id: Uuid,
        amount_cents: i64,
    },
    PaymentCharged {
        customer_id: Uuid,
        order_id: Uuid,
        amount_cents: i64,
    },
    PaymentRefunded {
        customer_id: Uuid,
        order_id: Uuid,
        amount_cents: i64,
    },
}
event_names!(CustomerEvent {
    CustomerRegistered,
    FundsDeposited,
    PaymentCharged,
    PaymentRefunded
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    Register {
        customer_id: Uuid,
        name: String,
        email: String,
    },
    Deposit {
        amount_cents: i64,
    },
    /// Charges the order once; repeating it changes nothing.
    Charge {
        order_id: Uuid,
        amount_cents: i64,
    },
    /// Refunds what the order was charged, once; nothing if it was not.
    Refund {
        order_id: Uuid,
    },
}

/// What happened to one order's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPayment {
    pub amount_cents: i64,
    pub refunded: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub exists: bool,
    pub customer_id: Uuid,
    pub name: String,
    pub email: String,
    pub balance_cents: i64,
    pub payments: BTreeMap<Uuid, OrderPayment>,
}

impl Aggregate for Customer {
    const SNAPSHOT_TYPE: &'static str = "customer";
    type State = Customer;
    type Command = CustomerCommand;
    type Event = CustomerEvent;

    fn decide(
        state: &Customer,
        command: CustomerCommand,
    ) -> Result<Vec<CustomerEvent>, DomainError> {
        use CustomerCommand::*;
        if !state.exists && !matches!(command, Register { .. }) {
            return Err(DomainError::NotFound {
                what: "customer".into(),
            });
        }
        let customer_id = state.customer_id;
        match command {
            Register {
                customer_id,
                name,
                email,
            } => {
                if state.exists {
                    return Err(DomainError::AlreadyExists {
                        what: format!("customer {customer_id}"),
                    });
                }
                if name.trim().is_empty() {
                    return Err(DomainError::invalid("name", "must not be empty"));
                }
                if !plausible_email(&email) {
                    return Err(DomainError::invalid("email", "must look like name@domain"));
                }
                Ok(vec![CustomerEvent::CustomerRegistered {
                    customer_id,
                    name,
                    email,
                }])
            }
            Deposit { amount_cents } => {
                if amount_cents <= 0 {
                    return Err(DomainError::invalid(
                        "amount_cents",
                        "must be greater than 0",
                    ));
                }
                if amount_cents > MAX_CENTS
                    || state.balance_cents.checked_add(amount_cents).is_none()
                {
                    return Err(DomainError::invalid(
                        "amount_cents",
                        format!("must be at most {MAX_CENTS}"),
                    ));
                }
                Ok(vec![CustomerEvent::FundsDeposited {
                    customer_id,
                    amount_cents,
                }])
            }
            Charge {
                order_id,
                amount_cents,
            } => {
                if state.payments.contains_key(&order_id) {
                    return Ok(vec![]);
                }
                if amount_cents < 0 {
                    return Err(DomainError::invalid("amount_cents", "must not be negative"));
                }
                if state.balance_cents < amount_cents {
                    return Err(DomainError::PaymentDeclined {
                        balance_cents: state.balance_cents,
                        amount_cents,
                    });
                }
                Ok(vec![CustomerEvent::PaymentCharged {
                    customer_id,
                    order_id,
                    amount_cents,
                }])
            }
            Refund { order_id } => Ok(match state.payments.get(&order_id) {
                Some(payment) if !payment.refunded => vec![CustomerEvent::PaymentRefunded {
                    customer_id,
                    order_id,
                    amount_cents: payment.amount_cents,
                }],
                _ => vec![],
            }),
        }
    }

    fn evolve(mut state: Customer, event: &CustomerEvent) -> Customer {
        match event {
            CustomerEvent::CustomerRegistered {
                customer_id,
                name,
                email,
            } => {
                state.exists = true;
                state.customer_id = *customer_id;
                state.name = name.clone();
                state.email = email.clone();
            }
            CustomerEvent::FundsDeposited { amount_cents, .. } => {
                state.balance_cents += amount_cents
            }
            CustomerEvent::PaymentCharged {
                order_id,
                amount_cents,
                ..
            } => {
                state.balance_cents -= amount_cents;
                state.payments.insert(
                    *order_id,
                    OrderPayment {
                        amount_cents: *amount_cents,
                        refunded: false,
                    },
                );
            }
            CustomerEvent::PaymentRefunded {
                order_id,
                amount_cents,
                ..
            } => {
                state.balance_cents += amount_cents;
                if let Some(payment) = state.payments.get_mut(order_id) {
                    payment.refunded = true;
                }
            }
        }
        state
    }
}

/// One `@` with something on both sides, and a dot in the domain.
fn plausible_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::CustomerCommand::*;
    use super::CustomerEvent::*;
    use super::*;
    use crate::given::given;

    const ID: Uuid = Uuid::from_u128(1);
    const ORDER: Uuid = Uuid::from_u128(9);

    fn registered() -> CustomerEvent {
        CustomerRegistered {
            customer_id: ID,
            name: "Ada".into(),
            email: "ada@example.com".into(),
        }
    }

    fn deposited(amount_cents: i64) -> CustomerEvent {
        FundsDeposited {
            customer_id: ID,
            amount_cents,
        }
    }

    fn charged(amount_cents: i64) -> CustomerEvent {
        PaymentCharged {
            customer_id: ID,
            order_id: ORDER,
            amount_cents,
        }
    }

    #[test]
    fn a_customer_registers_with_a_name_and_email() {
        given::<Customer>([])
            .when(Register {
                customer_id: ID,
                name: "Ada".into(),
                email: "ada@example.com".into(),
            })
            .then([registered()]);
    }

    #[test]
    fn a_malformed_email_is_invalid() {
        for email in [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
        ] {
            given::<Customer>([])
                .when(Register {
                    customer_id: ID,
                    name: "Ada".into(),
                    email: email.into(),
                })
                .then_error(DomainError::invalid("email", "must look like name@domain"));
        }
    }

    #[test]
    fn deposits_must_be_positive() {
        given::<Customer>([registered()])
            .when(Deposit { amount_cents: 500 })
            .then([deposited(500)]);
        given::<Customer>([registered()])
            .when(Deposit { amount_cents: 0 })
            .then_error(DomainError::invalid(
                "amount_cents",
                "must be greater than 0",
            ));
    }

    #[test]
    fn a_deposit_beyond_the_money_limit_is_invalid() {
        given::<Customer>([registered()])
            .when(Deposit {
                amount_cents: crate::MAX_CENTS + 1,
            })
            .then_error(DomainError::invalid(
                "amount_cents",
                format!("must be at most {}", crate::MAX_CENTS),
            ));
    }

    #[test]
    fn a_charge_within_the_balance_is_taken() {
        given::<Customer>([registered(), deposited(500)])
            .when(Charge {
                order_id: ORDER,
                amount_cents: 500,
            })
            .then([charged(500)]);
    }

    #[test]
    fn payment_is_declined_when_the_balance_is_short() {
        given::<Customer>([registered(), deposited(499)])
            .when(Charge {
                order_id: ORDER,
                amount_cents: 500,
            })
            .then_error(DomainError::PaymentDeclined {
                balance_cents: 499,
                amount_cents: 500,
            });
    }

    #[test]
    fn an_order_is_never_charged_twice() {
        given::<Customer>([registered(), deposited(1000), charged(500)])
            .when(Charge {
                order_id: ORDER,
                amount_cents: 500,
            })
            .then_nothing();
    }

    #[test]
    fn a_refund_returns_the_charge_once() {
        let refunded = PaymentRefunded {
            customer_id: ID,
            order_id: ORDER,
            amount_cents: 500,
        };
        given::<Customer>([registered(), deposited(500), charged(500)])
            .when(Refund { order_id: ORDER })
            .then([refunded.clone()]);
        given::<Customer>([registered(), deposited(500), charged(500), refunded])
            .when(Refund { order_id: ORDER })
            .then_nothing();
        given::<Customer>([registered()])
            .when(Refund { order_id: ORDER })
            .then_nothing();
    }

    #[test]
    fn balance_is_deposits_minus_charges_plus_refunds() {
        let events = [
            registered(),
            deposited(1000),
            charged(300),
            PaymentRefunded {
                customer_id: ID,
                order_id: ORDER,
                amount_cents: 300,
            },
        ];
        let state = events.iter().fold(Customer::default(), Customer::evolve);
        assert_eq!(state.balance_cents, 1000);
    }
}
