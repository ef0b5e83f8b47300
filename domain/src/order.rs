//! An order: placed (pending), then confirmed or rejected by its saga, or
//! cancelled on request. Stream `order-<uuid>`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::wire::event_names;
use crate::{Aggregate, DomainError, MAX_CENTS, MAX_QUANTITY, RejectionReason};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i64,
    /// The catalogue price when the order was placed.
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    OrderPlaced {
        order_id: Uuid,
        customer_id: Uuid,
        lines: Vec<OrderLine>,
        total_cents: i64,
        shipping_address: ShippingAddress,
    },
    OrderConfirmed {
        order_id: Uuid,
        tracking_number: String,
    },
    OrderRejected {
        order_id: Uuid,
        reason: RejectionReason,
    },
    OrderCancellationRequested {
        order_id: Uuid,
        reason: String,
    },
    OrderCancelled {
        order_id: Uuid,
        reason: String,
    },
}
event_names!(OrderEvent {
    OrderPlaced,
    OrderConfirmed,
    OrderRejected,
    OrderCancellationRequested,
    OrderCancelled
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    Place {
        order_id: Uuid,
        customer_id: Uuid,
        lines: Vec<OrderLine>,
        shipping_address: ShippingAddress,
    },
    Confirm {
        tracking_number: String,
    },
    Reject {
        reason: RejectionReason,
    },
    /// Asks for cancellation; the saga compensates, then cancels.
    RequestCancellation {
        reason: String,
    },
    /// Records that every completed step was compensated.
    MarkCancelled,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    #[default]
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub exists: bool,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
    pub shipping_address: Option<ShippingAddress>,
    pub rejection_reason: Option<RejectionReason>,
    pub tracking_number: Option<String>,
    /// Set once cancellation was requested, until the order is cancelled.
    pub cancellation_reason: Option<String>,
}

impl Aggregate for Order {
    const SNAPSHOT_TYPE: &'static str = "order";
    type State = Order;
    type Command = OrderCommand;
    type Event = OrderEvent;

    fn decide(state: &Order, command: OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
        use OrderCommand::*;
        use OrderStatus::*;
        if !state.exists && !matches!(command, Place { .. }) {
            return Err(DomainError::NotFound {
                what: "order".into(),
            });
        }
        let order_id = state.order_id;
        match command {
            Place {
                order_id,
                customer_id,
                lines,
                shipping_address,
            } => {
                if state.exists {
                    return Err(DomainError::AlreadyExists {
                        what: format!("order {order_id}"),
                    });
                }
                validate_lines(&lines)?;
                validate_address(&shipping_address)?;
                let total_cents = lines
                    .iter()
                    .try_fold(0i64, |total, l| {
                        l.quantity
                            .checked_mul(l.unit_price_cents)
                            .and_then(|t| total.checked_add(t))
                    })
                    .filter(|total| *total <= MAX_CENTS)
                    .ok_or_else(|| {
                        DomainError::invalid(
                            "lines",
                            format!("the order total exceeds {MAX_CENTS}"),
                        )
                    })?;
                Ok(vec![OrderEvent::OrderPlaced {
                    order_id,
                    customer_id,
                    lines,
                    total_cents,
                    shipping_address,
                }])
            }
            Confirm { tracking_number } => match state.status {
                Confirmed => Ok(vec![]),
                Pending if state.cancellation_reason.is_none() => {
                    Ok(vec![OrderEvent::OrderConfirmed {
                        order_id,
                        tracking_number,
                    }])
                }
                _ => Err(conflict(state, "confirmed")),
            },
            Reject { reason } => match state.status {
                Rejected if state.rejection_reason == Some(reason) => Ok(vec![]),
                Pending => Ok(vec![OrderEvent::OrderRejected { order_id, reason }]),
                _ => Err(conflict(state, "rejected")),
            },
            RequestCancellation { reason } => match state.status {
                Pending | Confirmed if state.cancellation_reason.is_some() => Ok(vec![]),
                Pending | Confirmed => Ok(vec![OrderEvent::OrderCancellationRequested {
                    order_id,
                    reason,
                }]),
                _ => Err(conflict(state, "cancelled")),
            },
            MarkCancelled => match (&state.status, &state.cancellation_reason) {
                (Cancelled, _) => Ok(vec![]),
                (Pending | Confirmed, Some(reason)) => Ok(vec![OrderEvent::OrderCancelled {
                    order_id,
                    reason: reason.clone(),
                }]),
                _ => Err(DomainError::Conflict(
                    "the order's cancellation was not requested".into(),
                )),
            },
        }
    }

    fn evolve(mut state: Order, event: &OrderEvent) -> Order {
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                total_cents,
                shipping_address,
            } => {
                state.exists = true;
                state.order_id = *order_id;
                state.customer_id = *customer_id;
                state.lines = lines.clone();
                state.total_cents = *total_cents;
                state.shipping_address = Some(shipping_address.clone());
            }
            OrderEvent::OrderConfirmed {
                tracking_number, ..
            } => {
                state.status = OrderStatus::Confirmed;
                state.tracking_number = Some(tracking_number.clone());
            }
            OrderEvent::OrderRejected { reason, .. } => {
                state.status = OrderStatus::Rejected;
                state.rejection_reason = Some(*reason);
            }
            OrderEvent::OrderCancellationRequested { reason, .. } => {
                state.cancellation_reason = Some(reason.clone());
            }
            OrderEvent::OrderCancelled { .. } => state.status = OrderStatus::Cancelled,
        }
        state
    }
}

fn conflict(state: &Order, wanted: &str) -> DomainError {
    let status = match state.status {
        OrderStatus::Pending => "pending",
        OrderStatus::Confirmed => "confirmed",
        OrderStatus::Rejected => "rejected",
        OrderStatus::Cancelled => "cancelled",
    };
    DomainError::Conflict(format!("a {status} order cannot be {wanted}"))
}

fn validate_lines(lines: &[OrderLine]) -> Result<(), DomainError> {
    if lines.is_empty() {
        return Err(DomainError::invalid(
            "lines",
            "an order needs at least one line",
        ));
    }
    let mut skus = HashSet::new();
    for line in lines {
        if line.quantity <= 0 {
            return Err(DomainError::invalid(
                "lines.quantity",
                "must be greater than 0",
            ));
        }
        if line.quantity > MAX_QUANTITY {
            return Err(DomainError::invalid(
                "lines.quantity",
                format!("must be at most {MAX_QUANTITY}"),
            ));
        }
        if !(0..=MAX_CENTS).contains(&line.unit_price_cents) {
            return Err(DomainError::invalid(
                "lines.unit_price_cents",
                "out of range",
            ));
        }
        if !skus.insert(line.sku.as_str()) {
            return Err(DomainError::invalid(
                "lines.sku",
                format!("{} appears in more than one line", line.sku),
            ));
        }
    }
    Ok(())
}

fn validate_address(address: &ShippingAddress) -> Result<(), DomainError> {
    for (field, value) in [
        ("shipping_address.name", &address.name),
        ("shipping_address.line1", &address.line1),
        ("shipping_address.city", &address.city),
        ("shipping_address.postal_code", &address.postal_code),
    ] {
        if value.trim().is_empty() {
            return Err(DomainError::invalid(field, "must not be empty"));
        }
    }
    if !valid_country_code(&address.country) {
        return Err(DomainError::invalid(
            "shipping_address.country",
            "must be an ISO 3166-1 alpha-2 code such as US",
        ));
    }
    Ok(())
}

/// Two upper-case ASCII letters.
pub fn valid_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::OrderCommand::*;
    use super::OrderEvent::*;
    use super::*;
    use crate::given::given;

    const ORDER: Uuid = Uuid::from_u128(5);
    const CUSTOMER: Uuid = Uuid::from_u128(6);

    fn address(country: &str) -> ShippingAddress {
        ShippingAddress {
            name: "Ada".into(),
            line1: "1 Analytical Way".into(),
            city: "London".into(),
            postal_code: "N1".into(),
            country: country.into(),
        }
    }

    fn line(sku: &str, quantity: i64, unit_price_cents: i64) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            quantity,
            unit_price_cents,
        }
    }

    fn place(lines: Vec<OrderLine>, country: &str) -> OrderCommand {
        Place {
            order_id: ORDER,
            customer_id: CUSTOMER,
            lines,
            shipping_address: address(country),
        }
    }

    fn placed() -> OrderEvent {
        OrderPlaced {
            order_id: ORDER,
            customer_id: CUSTOMER,
            lines: vec![line("mug", 2, 1200), line("tea", 1, 550)],
            total_cents: 2950,
            shipping_address: address("GB"),
        }
    }

    fn confirmed() -> OrderEvent {
        OrderConfirmed {
            order_id: ORDER,
            tracking_number: "TRK".into(),
        }
    }

    fn cancellation_requested() -> OrderEvent {
        OrderCancellationRequested {
            order_id: ORDER,
            reason: "changed my mind".into(),
        }
    }

    #[test]
    fn placing_totals_the_lines_at_their_prices() {
        given::<Order>([])
            .when(place(vec![line("mug", 2, 1200), line("tea", 1, 550)], "GB"))
            .then([placed()]);
    }

    #[test]
    fn an_order_needs_lines_with_positive_quantities() {
        given::<Order>([])
            .when(place(vec![], "GB"))
            .then_error(DomainError::invalid(
                "lines",
                "an order needs at least one line",
            ));
        given::<Order>([])
            .when(place(vec![line("mug", 0, 1200)], "GB"))
            .then_error(DomainError::invalid(
                "lines.quantity",
                "must be greater than 0",
            ));
        given::<Order>([])
            .when(place(vec![line("mug", 1, 1), line("mug", 2, 1)], "GB"))
            .then_error(DomainError::invalid(
                "lines.sku",
                "mug appears in more than one line",
            ));
    }

    #[test]
    fn an_order_total_beyond_the_money_limit_is_invalid_not_an_overflow() {
        let lines = (0..20)
            .map(|i| line(&format!("sku{i}"), crate::MAX_QUANTITY, crate::MAX_CENTS))
            .collect();
        given::<Order>([])
            .when(place(lines, "GB"))
            .then_error(DomainError::invalid(
                "lines",
                format!("the order total exceeds {}", crate::MAX_CENTS),
            ));
    }

    #[test]
    fn a_bad_country_code_is_invalid() {
        for country in ["gb", "GBR", "G", "1A"] {
            given::<Order>([])
                .when(place(vec![line("mug", 1, 1)], country))
                .then_error(DomainError::invalid(
                    "shipping_address.country",
                    "must be an ISO 3166-1 alpha-2 code such as US",
                ));
        }
    }

    #[test]
    fn a_pending_order_is_confirmed_once() {
        given::<Order>([placed()])
            .when(Confirm {
                tracking_number: "TRK".into(),
            })
            .then([confirmed()]);
        given::<Order>([placed(), confirmed()])
            .when(Confirm {
                tracking_number: "TRK".into(),
            })
            .then_nothing();
    }

    #[test]
    fn a_pending_order_is_rejected_with_its_reason() {
        let rejected = OrderRejected {
            order_id: ORDER,
            reason: RejectionReason::PaymentDeclined,
        };
        given::<Order>([placed()])
            .when(Reject {
                reason: RejectionReason::PaymentDeclined,
            })
            .then([rejected.clone()]);
        given::<Order>([placed(), rejected])
            .when(Reject {
                reason: RejectionReason::PaymentDeclined,
            })
            .then_nothing();
        given::<Order>([placed(), confirmed()])
            .when(Reject {
                reason: RejectionReason::InsufficientStock,
            })
            .then_error(DomainError::Conflict(
                "a confirmed order cannot be rejected".into(),
            ));
    }

    #[test]
    fn cancellation_is_allowed_while_pending_or_confirmed() {
        let request = || RequestCancellation {
            reason: "changed my mind".into(),
        };
        given::<Order>([placed()])
            .when(request())
            .then([cancellation_requested()]);
        given::<Order>([placed(), confirmed()])
            .when(request())
            .then([cancellation_requested()]);
        given::<Order>([placed(), cancellation_requested()])
            .when(request())
            .then_nothing();
    }

    #[test]
    fn cancelling_a_rejected_or_cancelled_order_is_a_conflict() {
        let rejected = OrderRejected {
            order_id: ORDER,
            reason: RejectionReason::ShippingUnavailable,
        };
        given::<Order>([placed(), rejected])
            .when(RequestCancellation { reason: "x".into() })
            .then_error(DomainError::Conflict(
                "a rejected order cannot be cancelled".into(),
            ));
        let cancelled = OrderCancelled {
            order_id: ORDER,
            reason: "changed my mind".into(),
        };
        given::<Order>([placed(), cancellation_requested(), cancelled])
            .when(RequestCancellation { reason: "x".into() })
            .then_error(DomainError::Conflict(
                "a cancelled order cannot be cancelled".into(),
            ));
    }

    #[test]
    fn an_order_whose_cancellation_was_requested_is_not_confirmed() {
        given::<Order>([placed(), cancellation_requested()])
            .when(Confirm {
                tracking_number: "TRK".into(),
            })
            .then_error(DomainError::Conflict(
                "a pending order cannot be confirmed".into(),
            ));
    }

    #[test]
    fn an_order_is_cancelled_after_its_compensations() {
        let cancelled = OrderCancelled {
            order_id: ORDER,
            reason: "changed my mind".into(),
        };
        given::<Order>([placed(), cancellation_requested()])
            .when(MarkCancelled)
            .then([cancelled.clone()]);
        given::<Order>([placed(), cancellation_requested(), cancelled])
            .when(MarkCancelled)
            .then_nothing();
        given::<Order>([placed()])
            .when(MarkCancelled)
            .then_error(DomainError::Conflict(
                "the order's cancellation was not requested".into(),
            ));
    }

    #[test]
    fn commands_on_an_unknown_order_are_refused() {
        given::<Order>([])
            .when(MarkCancelled)
            .then_error(DomainError::NotFound {
                what: "order".into(),
            });
    }
}
