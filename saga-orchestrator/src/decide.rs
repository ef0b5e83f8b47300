//! What a saga does next, decided from its state alone (pure, no I/O).
//!
//! Forward: the first step that has not succeeded runs next; when all have,
//! the order is confirmed. A business failure, a step past its deadline or
//! a cancellation starts compensation, which undoes, last first, every step
//! that took effect or may have (a step interrupted while running, or one
//! that failed for a technical reason); then the order is rejected or
//! cancelled.

use domain::saga::{self, CANCELLED, Ending, SagaState, SagaStatus, SagaStep, StepStatus};

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
    FinishCompensation { ending: Ending },
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
                    Some(code) if saga::refusal(code).is_some() => code.to_owned(),
                    Some(error) => format!("{}: {error}", step.as_str()),
                    None => format!("{} failed", step.as_str()),
                };
                return Action::StartCompensation { reason };
            }
        }
    }
    Action::Confirm
}

/// Undoes the next step that took effect, then ends the compensation;
/// command-service's step API allows exactly these calls in this state
/// (`SagaState::turn`), because both come from the same rules.
fn backward(state: &SagaState) -> Action {
    match state.next_to_undo() {
        Some(step) => Action::Compensate {
            step,
            attempt: state.step(step).compensation_failures + 1,
        },
        None => Action::FinishCompensation {
            ending: state.ending(),
        },
    }
}

#[cfg(test)]
mod tests {
    use domain::RejectionReason;
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
                ending: Ending::Reject(RejectionReason::PaymentDeclined)
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
                ending: Ending::Reject(RejectionReason::PaymentDeclined)
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
                ending: Ending::Cancel
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
                ending: Ending::Reject(RejectionReason::InsufficientStock)
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

    /// The call each decision leads to, made at the version after the
    /// attempt's start is recorded, is the one command-service lets take
    /// effect (`SagaState::turn`): the two never disagree.
    #[test]
    fn every_call_decided_is_the_step_apis_turn() {
        use domain::saga::SagaAction;
        let mut events = vec![];
        let mut state = given(&events);
        let mut calls = 0;
        let mut cancelled = false;
        loop {
            let (action, call) = match next(&state) {
                Action::Done => break,
                Action::Run { step, attempt } => (
                    SagaEvent::StepStarted { step, attempt },
                    SagaAction::Run(step),
                ),
                Action::Compensate { step, attempt } => (
                    SagaEvent::StepCompensationStarted { step, attempt },
                    SagaAction::Undo(step),
                ),
                Action::StartCompensation { reason } => {
                    events.push(SagaEvent::CompensationStarted { reason });
                    state = given(&events);
                    continue;
                }
                Action::Confirm => {
                    assert_eq!(state.turn(SagaAction::Confirm), Ok(()));
                    events.push(SagaEvent::SagaCompleted {
                        tracking_number: None,
                    });
                    // Then the customer cancels the confirmed order.
                    assert!(!cancelled);
                    cancelled = true;
                    events.push(SagaEvent::CancellationRequested {
                        reason: "no".into(),
                    });
                    state = given(&events);
                    continue;
                }
                Action::FinishCompensation { ending } => {
                    assert_eq!(ending, Ending::Cancel);
                    assert_eq!(state.turn(SagaAction::MarkCancelled), Ok(()));
                    break;
                }
            };
            events.push(action);
            state = given(&events);
            assert_eq!(state.turn(call), Ok(()), "{call:?} after {events:?}");
            calls += 1;
            events.push(match call {
                SagaAction::Run(step) => succeeded(step),
                SagaAction::Undo(step) => SagaEvent::StepCompensated { step, attempt: 1 },
                _ => unreachable!(),
            });
            state = given(&events);
        }
        assert_eq!(calls, 6, "three steps, then three undone");
    }
}
