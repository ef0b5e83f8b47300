//! The step API's wire names, for both of its sides: command-service, which
//! serves it on its internal listener, and the orchestrator, which calls it.
//! A name spelled here cannot disagree between the two.

use uuid::Uuid;

use super::SagaAction;
#[cfg(test)]
use super::SagaStep;
use crate::RejectionReason;

/// Where every step API action lives, under one order.
pub const PREFIX: &str = "/internal/v1/orders";

/// One action of the step API: `POST /internal/v1/orders/{id}/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// The last segment of its path.
    pub name: &'static str,
    /// Its route, as the server declares it.
    pub route: &'static str,
}

/// The [`Action`] named `$name` (a literal), with its route.
#[macro_export]
macro_rules! step_api_action {
    ($name:literal) => {
        $crate::saga::api::Action {
            name: $name,
            route: concat!("/internal/v1/orders/{id}/", $name),
        }
    };
}
pub use step_api_action as action;

/// Confirms the order once every step succeeded.
pub const CONFIRM: Action = action!("confirm");
/// Rejects the order once a failure is compensated.
pub const REJECT: Action = action!("reject");
/// Cancels the order once a cancellation is compensated.
pub const MARK_CANCELLED: Action = action!("mark-cancelled");

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

/// The step API action that carries `action` out.
pub fn of(action: SagaAction) -> Action {
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

impl Action {
    /// Its path for one order.
    pub fn path(self, order_id: Uuid) -> String {
        format!("{PREFIX}/{order_id}/{}", self.name)
    }
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
    fn every_action_has_its_own_route_under_the_prefix() {
        let refund = of(SagaAction::Undo(SagaStep::ChargePayment));
        assert_eq!(refund.route, "/internal/v1/orders/{id}/refund-payment");
        assert_eq!(
            refund.path(uuid::Uuid::nil()),
            format!("{PREFIX}/00000000-0000-0000-0000-000000000000/refund-payment")
        );
        let mut routes: Vec<&str> = SagaStep::ALL
            .iter()
            .flat_map(|step| [Some(step.spec().run), step.spec().undo])
            .flatten()
            .chain([CONFIRM, REJECT, MARK_CANCELLED])
            .map(|action| {
                assert!(action.route.starts_with(PREFIX));
                action.route
            })
            .collect();
        let count = routes.len();
        routes.sort_unstable();
        routes.dedup();
        assert_eq!(routes.len(), count, "two actions share a route");
    }
}
