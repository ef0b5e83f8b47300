//! The step API's wire names, for both of its sides: command-service, which
//! serves it on its internal listener, and the orchestrator, which calls it.
//! A name spelled here cannot disagree between the two.

use uuid::Uuid;

use super::{SagaAction, SagaStep};
use crate::RejectionReason;

/// Where every step API action lives, under one order.
pub const PREFIX: &str = "/internal/v1/orders";

/// The action that confirms the order once every step succeeded.
pub const CONFIRM: &str = "confirm";
/// The action that rejects the order once a failure is compensated.
pub const REJECT: &str = "reject";
/// The action that cancels the order once a cancellation is compensated.
pub const MARK_CANCELLED: &str = "mark-cancelled";

/// The headers of every step call.
pub mod header {
    /// The saga's stream version a call was decided on.
    pub const VERSION: &str = "x-saga-version";
    /// Which attempt at the step (or at undoing it) a call is; default 1.
    pub const ATTEMPT: &str = "x-saga-attempt";
    /// The step whose start a forward step's success records too.
    pub const NEXT_STEP: &str = "x-saga-next-step";
    /// Which attempt at that step is started; default 1.
    pub const NEXT_ATTEMPT: &str = "x-saga-next-attempt";
}

/// The problem types (`/problems/<slug>`) a step call answers with that the
/// orchestrator acts on.
pub mod problem {
    use super::RejectionReason;

    /// 409: the saga's stream is no longer at the call's version; nothing
    /// was written.
    pub const SAGA_MOVED: &str = "saga-moved";

    /// The 422 a business refusal is.
    pub fn refusal(reason: RejectionReason) -> &'static str {
        match reason {
            RejectionReason::InsufficientStock => "insufficient-stock",
            RejectionReason::PaymentDeclined => "payment-declined",
            RejectionReason::ShippingUnavailable => "shipping-unavailable",
        }
    }

    /// The business refusal a problem type (`/problems/<slug>`) is, if any.
    pub fn refusal_of(problem_type: &str) -> Option<RejectionReason> {
        let slug = problem_type.strip_prefix("/problems/")?;
        [
            RejectionReason::InsufficientStock,
            RejectionReason::PaymentDeclined,
            RejectionReason::ShippingUnavailable,
        ]
        .into_iter()
        .find(|reason| refusal(*reason) == slug)
    }
}

/// The action's name in the step API's paths.
pub fn action(action: SagaAction) -> &'static str {
    match action {
        SagaAction::Run(step) => step.spec().run,
        SagaAction::Undo(step) => step
            .spec()
            .undo
            .expect("only a step that can be undone is undone"),
        SagaAction::Confirm => CONFIRM,
        SagaAction::Reject(_) => REJECT,
        SagaAction::MarkCancelled => MARK_CANCELLED,
    }
}

/// The route an action is served at (`/internal/v1/orders/{id}/<action>`).
pub fn route(action: &str) -> String {
    format!("{PREFIX}/{{id}}/{action}")
}

/// The path of an action for one order.
pub fn path(order_id: Uuid, action: &str) -> String {
    format!("{PREFIX}/{order_id}/{action}")
}

/// The step a forward action carries out, if `action` is one.
pub fn run_of(action: &str) -> Option<SagaStep> {
    SagaStep::ALL
        .into_iter()
        .find(|step| step.spec().run == action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_go_to_their_problem_types_and_back() {
        for step in SagaStep::ALL {
            let reason = step.spec().refusal;
            let problem_type = format!("/problems/{}", problem::refusal(reason));
            assert_eq!(problem::refusal_of(&problem_type), Some(reason));
        }
        assert_eq!(problem::refusal_of("/problems/conflict"), None);
    }

    #[test]
    fn every_action_has_its_own_route() {
        assert_eq!(
            route(action(SagaAction::Undo(SagaStep::ChargePayment))),
            "/internal/v1/orders/{id}/refund-payment"
        );
        assert_eq!(run_of("create-shipment"), Some(SagaStep::CreateShipment));
        assert_eq!(run_of(CONFIRM), None);
    }
}
