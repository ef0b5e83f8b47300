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
    /// Not blank (the pattern: a character that is not white space).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
        )
    )]
    pub name: String,
    /// Not blank.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
        )
    )]
    pub line1: String,
    /// Not blank.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
        )
    )]
    pub city: String,
    /// Not blank.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
        )
    )]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Z]{2}$"))]
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
mod tests;
