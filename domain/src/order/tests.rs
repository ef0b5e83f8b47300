//! Orders' decisions, given their events.

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
