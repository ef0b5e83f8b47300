//! `rm_customers`: a customer and their balance.

use domain::Event;
use domain::EventData;
use domain::customer::CustomerEvent;
use event_store::RecordedEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApplyError, Declaration, View};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRow {
    pub customer_id: Uuid,
    pub name: String,
    pub email: String,
    /// Deposits − charges + refunds.
    pub balance_cents: i64,
    pub version: u64,
}

impl View for CustomerRow {
    const DECLARATION: Declaration = read_models::CUSTOMERS;

    fn version(&self) -> u64 {
        self.version
    }

    fn create<D: EventData>(event: &RecordedEvent<D>) -> Result<Self, ApplyError> {
        match CustomerEvent::decode(&event.event_type, &event.data)? {
            CustomerEvent::CustomerRegistered {
                customer_id,
                name,
                email,
            } => Ok(CustomerRow {
                customer_id,
                name,
                email,
                balance_cents: 0,
                version: event.version,
            }),
            _ => Err(ApplyError::out_of_place(
                event,
                "no CustomerRegistered before",
            )),
        }
    }

    fn update<D: EventData>(&mut self, event: &RecordedEvent<D>) -> Result<(), ApplyError> {
        match CustomerEvent::decode(&event.event_type, &event.data)? {
            CustomerEvent::CustomerRegistered { .. } => {
                return Err(ApplyError::out_of_place(event, "the customer exists"));
            }
            CustomerEvent::FundsDeposited { amount_cents, .. }
            | CustomerEvent::PaymentRefunded { amount_cents, .. } => {
                self.balance_cents += amount_cents;
            }
            CustomerEvent::PaymentCharged { amount_cents, .. } => {
                self.balance_cents -= amount_cents;
            }
        }
        self.version = event.version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::testing::{fold, recorded};

    #[test]
    fn balance_is_deposits_minus_charges_plus_refunds() {
        let (customer_id, order_id) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let events = [
            CustomerEvent::CustomerRegistered {
                customer_id,
                name: "Ada".into(),
                email: "ada@example.com".into(),
            },
            CustomerEvent::FundsDeposited {
                customer_id,
                amount_cents: 10_000,
            },
            CustomerEvent::PaymentCharged {
                customer_id,
                order_id,
                amount_cents: 2_500,
            },
            CustomerEvent::PaymentRefunded {
                customer_id,
                order_id,
                amount_cents: 2_500,
            },
            CustomerEvent::PaymentCharged {
                customer_id,
                order_id,
                amount_cents: 1_000,
            },
        ];
        let stream = format!("customer-{customer_id}");
        let recorded: Vec<_> = (1..)
            .zip(&events)
            .map(|(v, e)| recorded(&stream, v, e))
            .collect();
        let row: CustomerRow = fold(&recorded);
        assert_eq!((row.balance_cents, row.version), (9_000, 5));
    }
}
