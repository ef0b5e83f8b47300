//! What a saga does next, decided from its state alone (pure, no I/O).
//!
//! Forward: the first step that has not succeeded runs next; when all have,
//! the order is confirmed. A business failure, a step past its deadline or
//! a cancellation starts compensation, which undoes, last first, every step
//! that took effect or may have (a step interrupted while running, or one
//! that failed for a technical reason); then the order is rejected or
//! cancelled.

use domain::RejectionReason;
use domain::saga::{SagaState, SagaStatus, SagaStep, StepStatus};

/// The reason a cancellation gives its compensation.
pub const CANCELLED: &str = "cancelled";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do: the saga ended, or failed and waits for an operator.
    Done,
    /// Run (or run again) a step.
    Run { step: SagaStep, attempt: u32 },
    /// Stop going forward and compensate, for this reason.
    StartCompensation { reason: String },
    /// Undo a step that took effect (or may have).
    Compensate { step: SagaStep, attempt: u32 },
    /// Every step succeeded: confirm the order.
    Confirm,
    /// Everything is undone: cancel the order, or reject it with a reason.
    FinishCompensation { outcome: Outcome },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Cancel,
    Reject(RejectionReason),
}

/// The rejection a failed step stands for. A business refusal names it
/// exactly; a step that could not be completed in time is rejected with
/// its own step's code.
pub fn rejection_of(step: SagaStep) -> RejectionReason {
    match step {
        SagaStep::ReserveInventory => RejectionReason::InsufficientStock,
        SagaStep::ChargePayment => RejectionReason::PaymentDeclined,
        SagaStep::CreateShipment => RejectionReason::ShippingUnavailable,
    }
}

/// The code of a rejection, as stored in `StepFailed.error` for business
/// refusals.
pub fn code(reason: RejectionReason) -> &'static str {
    match reason {
        RejectionReason::InsufficientStock => "insufficient_stock",
        RejectionReason::PaymentDeclined => "payment_declined",
        RejectionReason::ShippingUnavailable => "shipping_unavailable",
    }
}

fn is_business_refusal(error: Option<&str>) -> bool {
    matches!(
        error,
        Some("insufficient_stock" | "payment_declined" | "shipping_unavailable")
    )
}

pub fn next(state: &SagaState) -> Action {
    if !state.exists {
        return Action::Done;
    }
    match state.status {
        SagaStatus::Compensated | SagaStatus::Failed => Action::Done,
        SagaStatus::Completed if state.cancellation_reason.is_some() => Action::StartCompensation {
            reason: CANCELLED.into(),
        },
        SagaStatus::Completed => Action::Done,
        SagaStatus::Running => forward(state),
        SagaStatus::Compensating => backward(state),
    }
}

fn forward(state: &SagaState) -> Action {
    if state.cancellation_reason.is_some() {
        return Action::StartCompensation {
            reason: CANCELLED.into(),
        };
    }
    for step in SagaStep::ALL {
        let current = state.step(step);
        match current.status {
            StepStatus::Succeeded => {}
            StepStatus::Pending | StepStatus::Running => {
                return Action::Run {
                    step,
                    attempt: current.attempts + 1,
                };
            }
            _ => {
                let reason = match current.last_error.as_deref() {
                    Some(code) if is_business_refusal(Some(code)) => code.to_owned(),
                    Some(error) => format!("{}: {error}", step.as_str()),
                    None => format!("{} failed", step.as_str()),
                };
                return Action::StartCompensation { reason };
            }
        }
    }
    Action::Confirm
}

fn backward(state: &SagaState) -> Action {
    for step in SagaStep::ALL.into_iter().rev() {
        let current = state.step(step);
        let took_effect = match current.status {
            StepStatus::Succeeded
            | StepStatus::Running
            | StepStatus::Compensating
            | StepStatus::CompensationFailed => true,
            StepStatus::Failed => !is_business_refusal(current.last_error.as_deref()),
            StepStatus::Pending | StepStatus::Compensated => false,
        };
        if took_effect {
            return Action::Compensate {
                step,
                attempt: current.compensation_failures + 1,
            };
        }
    }
    // A compensation started for a failure ends in the rejection even if a
    // cancellation came in meanwhile: the order may already be rejected
    // (the reject call took effect, and recording the end lost the race
    // with the cancellation), and then only the rejection can finish.
    let started_for_failure =
        state.failed_step.is_some() && state.failure_reason.as_deref() != Some(CANCELLED);
    let outcome = if state.cancellation_reason.is_some() && !started_for_failure {
        Outcome::Cancel
    } else {
        // The failed step may have been compensated since (one past its
        // deadline may have taken effect), so its status no longer says.
        let failed = state.failed_step.unwrap_or(SagaStep::ReserveInventory);
        Outcome::Reject(rejection_of(failed))
    };
    Action::FinishCompensation { outcome }
}

#[cfg(test)]
mod tests {
    use domain::saga::SagaEvent;
    use uuid::Uuid;

    use super::*;

    fn given(events: &[SagaEvent]) -> SagaState {
        let started = SagaEvent::SagaStarted {
            order_id: Uuid::from_u128(1),
            customer_id: Uuid::from_u128(2),
            total_cents: 500,
        };
        std::iter::once(&started)
            .chain(events)
            .fold(SagaState::default(), |state, event| state.evolve(event))
    }

    fn started(step: SagaStep, attempt: u32) -> SagaEvent {
        SagaEvent::StepStarted { step, attempt }
    }

    fn succeeded(step: SagaStep) -> SagaEvent {
        SagaEvent::StepSucceeded {
            step,
            attempt: 1,
            detail: None,
        }
    }

    fn failed(step: SagaStep, error: &str, retryable: bool) -> SagaEvent {
        SagaEvent::StepFailed {
            step,
            attempt: 1,
            error: error.into(),
            retryable,
        }
    }

    use SagaStep::{ChargePayment as Charge, CreateShipment as Ship, ReserveInventory as Reserve};

    #[test]
    fn a_new_saga_reserves_inventory_first() {
        assert_eq!(
            next(&given(&[])),
            Action::Run {
                step: Reserve,
                attempt: 1
            }
        );
    }

    #[test]
    fn steps_run_in_order_and_all_succeeded_confirms() {
        assert_eq!(
            next(&given(&[started(Reserve, 1), succeeded(Reserve)])),
            Action::Run {
                step: Charge,
                attempt: 1
            }
        );
        let all = given(&[
            started(Reserve, 1),
            succeeded(Reserve),
            started(Charge, 1),
            succeeded(Charge),
            started(Ship, 1),
            succeeded(Ship),
        ]);
        assert_eq!(next(&all), Action::Confirm);
    }

    #[test]
    fn a_step_interrupted_or_failing_transiently_runs_again_with_the_next_attempt() {
        assert_eq!(
            next(&given(&[started(Reserve, 1)])),
            Action::Run {
                step: Reserve,
                attempt: 2
            }
        );
        assert_eq!(
            next(&given(&[
                started(Reserve, 1),
                failed(Reserve, "timeout", true)
            ])),
            Action::Run {
                step: Reserve,
                attempt: 2
            }
        );
    }

    #[test]
    fn a_business_failure_compensates_with_its_code_and_skips_the_failed_step() {
        let state = given(&[
            started(Reserve, 1),
            succeeded(Reserve),
            started(Charge, 1),
            failed(Charge, "payment_declined", false),
        ]);
        assert_eq!(
            next(&state),
            Action::StartCompensation {
                reason: "payment_declined".into()
            }
        );
        let compensating = state.evolve(&SagaEvent::CompensationStarted {
            reason: "payment_declined".into(),
        });
        assert_eq!(
            next(&compensating),
            Action::Compensate {
                step: Reserve,
                attempt: 1
            }
        );
        let undone = compensating.evolve(&SagaEvent::StepCompensated {
            step: Reserve,
            attempt: 1,
        });
        assert_eq!(
            next(&undone),
            Action::FinishCompensation {
                outcome: Outcome::Reject(RejectionReason::PaymentDeclined)
            }
        );
    }

    #[test]
    fn only_a_recorded_compensation_failure_that_is_not_busy_uses_up_an_attempt() {
        let compensating = given(&[
            started(Reserve, 1),
            succeeded(Reserve),
            SagaEvent::CompensationStarted {
                reason: "cancelled".into(),
            },
            // Its outcome was never recorded (the stream moved meanwhile).
            SagaEvent::StepCompensationStarted {
                step: Reserve,
                attempt: 1,
            },
        ]);
        assert_eq!(
            next(&compensating),
            Action::Compensate {
                step: Reserve,
                attempt: 1
            }
        );
        // The products kept changing: busy, not failed.
        let busy = compensating.evolve(&SagaEvent::StepCompensationFailed {
            step: Reserve,
            attempt: 1,
            error: "409: the products kept changing".into(),
            retryable: true,
            busy: true,
        });
        assert_eq!(
            next(&busy),
            Action::Compensate {
                step: Reserve,
                attempt: 1
            }
        );
        let failed_once = busy.evolve(&SagaEvent::StepCompensationFailed {
            step: Reserve,
            attempt: 1,
            error: "503: unavailable".into(),
            retryable: true,
            busy: false,
        });
        assert_eq!(
            next(&failed_once),
            Action::Compensate {
                step: Reserve,
                attempt: 2
            }
        );
    }

    #[test]
    fn a_step_past_its_deadline_is_compensated_too_since_it_may_have_taken_effect() {
        let state = given(&[
            started(Reserve, 1),
            succeeded(Reserve),
            started(Charge, 3),
            failed(Charge, "deadline exceeded", false),
            SagaEvent::CompensationStarted {
                reason: "charge_payment: deadline exceeded".into(),
            },
        ]);
        assert_eq!(
            next(&state),
            Action::Compensate {
                step: Charge,
                attempt: 1
            }
        );
        // Once both are undone, the order is rejected for the step that
        // ran out of time, not for the first one.
        let undone = [Charge, Reserve].into_iter().fold(state, |state, step| {
            state.evolve(&SagaEvent::StepCompensated { step, attempt: 1 })
        });
        assert_eq!(
            next(&undone),
            Action::FinishCompensation {
                outcome: Outcome::Reject(RejectionReason::PaymentDeclined)
            }
        );
    }

    #[test]
    fn compensation_runs_in_reverse_order_and_a_cancellation_cancels() {
        let state = given(&[
            started(Reserve, 1),
            succeeded(Reserve),
            started(Charge, 1),
            succeeded(Charge),
            started(Ship, 1),
            succeeded(Ship),
            SagaEvent::SagaCompleted {
                tracking_number: Some("TRK".into()),
            },
            SagaEvent::CancellationRequested {
                reason: "changed my mind".into(),
            },
        ]);
        assert_eq!(
            next(&state),
            Action::StartCompensation {
                reason: CANCELLED.into()
            }
        );
        let mut state = state.evolve(&SagaEvent::CompensationStarted {
            reason: CANCELLED.into(),
        });
        for step in [Ship, Charge, Reserve] {
            assert_eq!(next(&state), Action::Compensate { step, attempt: 1 });
            state = state.evolve(&SagaEvent::StepCompensated { step, attempt: 1 });
        }
        assert_eq!(
            next(&state),
            Action::FinishCompensation {
                outcome: Outcome::Cancel
            }
        );
    }

    #[test]
    fn a_cancellation_after_a_business_failure_still_ends_in_the_rejection() {
        let state = given(&[
            started(Reserve, 1),
            SagaEvent::StepFailed {
                step: Reserve,
                attempt: 1,
                error: "insufficient_stock".into(),
                retryable: false,
            },
            SagaEvent::CompensationStarted {
                reason: "insufficient_stock".into(),
            },
            SagaEvent::CancellationRequested {
                reason: "too slow".into(),
            },
        ]);
        assert_eq!(
            next(&state),
            Action::FinishCompensation {
                outcome: Outcome::Reject(RejectionReason::InsufficientStock)
            }
        );
    }

    #[test]
    fn a_cancellation_while_a_step_runs_compensates_that_step() {
        let state = given(&[
            started(Reserve, 1),
            SagaEvent::CancellationRequested {
                reason: "no".into(),
            },
        ]);
        assert_eq!(
            next(&state),
            Action::StartCompensation {
                reason: CANCELLED.into()
            }
        );
        let state = state.evolve(&SagaEvent::CompensationStarted {
            reason: CANCELLED.into(),
        });
        assert_eq!(
            next(&state),
            Action::Compensate {
                step: Reserve,
                attempt: 1
            }
        );
    }

    #[test]
    fn a_failed_saga_waits_for_an_operator_then_resumes_its_compensation() {
        let state = given(&[
            started(Reserve, 1),
            succeeded(Reserve),
            started(Charge, 1),
            failed(Charge, "payment_declined", false),
            SagaEvent::CompensationStarted {
                reason: "payment_declined".into(),
            },
            SagaEvent::StepCompensationStarted {
                step: Reserve,
                attempt: 5,
            },
            SagaEvent::StepCompensationFailed {
                step: Reserve,
                attempt: 5,
                error: "503".into(),
                retryable: false,
                busy: false,
            },
            SagaEvent::SagaFailed {
                reason: "release_inventory failed".into(),
            },
        ]);
        assert_eq!(next(&state), Action::Done);
        let resumed = state.evolve(&SagaEvent::SagaRetryRequested {});
        assert_eq!(
            next(&resumed),
            Action::Compensate {
                step: Reserve,
                attempt: 1
            }
        );
    }
}
