use super::*;
use crate::{Event, RejectionReason};

fn fold(events: &[SagaEvent]) -> SagaState {
    events
        .iter()
        .fold(SagaState::default(), |state, event| state.evolve(event))
}

fn started() -> SagaEvent {
    SagaEvent::SagaStarted {
        order_id: Uuid::from_u128(1),
        customer_id: Uuid::from_u128(2),
        total_cents: 500,
    }
}

#[test]
fn a_started_saga_runs_with_every_step_pending() {
    let state = fold(&[started()]);
    assert!(state.exists);
    assert_eq!(state.status, SagaStatus::Running);
    assert!(
        state
            .steps
            .values()
            .all(|s| s.status == StepStatus::Pending)
    );
}

#[test]
fn a_running_step_is_the_current_step_with_its_attempt() {
    let state = fold(&[
        started(),
        SagaEvent::StepStarted {
            step: SagaStep::ReserveInventory,
            attempt: 1,
        },
        SagaEvent::StepFailed {
            step: SagaStep::ReserveInventory,
            attempt: 1,
            error: "timed out".into(),
            retryable: true,
        },
        SagaEvent::StepStarted {
            step: SagaStep::ReserveInventory,
            attempt: 2,
        },
    ]);
    assert_eq!(state.current_step, Some(SagaStep::ReserveInventory));
    let step = state.step(SagaStep::ReserveInventory);
    assert_eq!(step.status, StepStatus::Running);
    assert_eq!(step.attempts, 2);
    assert_eq!(step.last_error.as_deref(), Some("timed out"));
}

#[test]
fn a_business_failure_compensates_and_ends_compensated_with_its_reason() {
    let state = fold(&[
        started(),
        SagaEvent::StepStarted {
            step: SagaStep::ReserveInventory,
            attempt: 1,
        },
        SagaEvent::StepSucceeded {
            step: SagaStep::ReserveInventory,
            attempt: 1,
            detail: None,
        },
        SagaEvent::StepStarted {
            step: SagaStep::ChargePayment,
            attempt: 1,
        },
        SagaEvent::StepFailed {
            step: SagaStep::ChargePayment,
            attempt: 1,
            error: "payment_declined".into(),
            retryable: false,
        },
        SagaEvent::CompensationStarted {
            reason: "payment_declined".into(),
        },
        SagaEvent::StepCompensationStarted {
            step: SagaStep::ReserveInventory,
            attempt: 1,
        },
        SagaEvent::StepCompensated {
            step: SagaStep::ReserveInventory,
            attempt: 1,
        },
        SagaEvent::SagaCompensated {
            reason: "payment_declined".into(),
        },
    ]);
    assert_eq!(state.status, SagaStatus::Compensated);
    assert_eq!(state.failure_reason.as_deref(), Some("payment_declined"));
    assert_eq!(state.current_step, None);
    let statuses: Vec<_> = state.steps.values().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Compensated,
            StepStatus::Failed,
            StepStatus::Pending
        ]
    );
}

#[test]
fn a_retried_failed_saga_resumes_its_compensation() {
    let state = fold(&[
        started(),
        SagaEvent::StepStarted {
            step: SagaStep::ReserveInventory,
            attempt: 1,
        },
        SagaEvent::StepSucceeded {
            step: SagaStep::ReserveInventory,
            attempt: 1,
            detail: None,
        },
        SagaEvent::CancellationRequested {
            reason: "changed my mind".into(),
        },
        SagaEvent::CompensationStarted {
            reason: "cancelled".into(),
        },
        SagaEvent::StepCompensationStarted {
            step: SagaStep::ReserveInventory,
            attempt: 1,
        },
        SagaEvent::StepCompensationFailed {
            step: SagaStep::ReserveInventory,
            attempt: 1,
            error: "unreachable".into(),
            retryable: false,
            busy: false,
        },
        SagaEvent::SagaFailed {
            reason: "release_inventory failed: unreachable".into(),
        },
    ]);
    assert_eq!(state.status, SagaStatus::Failed);
    assert_eq!(
        state.step(SagaStep::ReserveInventory).status,
        StepStatus::CompensationFailed
    );

    let resumed = state.evolve(&SagaEvent::SagaRetryRequested {});
    assert_eq!(resumed.status, SagaStatus::Compensating);
    let step = resumed.step(SagaStep::ReserveInventory);
    assert_eq!(step.status, StepStatus::Succeeded);
    assert_eq!(step.compensation_attempts, 0);
}

use SagaStep::{ChargePayment as Charge, CreateShipment as Ship, ReserveInventory as Reserve};

fn run(step: SagaStep) -> [SagaEvent; 2] {
    [
        SagaEvent::StepStarted { step, attempt: 1 },
        SagaEvent::StepSucceeded {
            step,
            attempt: 1,
            detail: None,
        },
    ]
}

/// A saga whose three steps succeeded.
fn all_succeeded() -> Vec<SagaEvent> {
    let mut events = vec![started()];
    for step in SagaStep::ALL {
        events.extend(run(step));
    }
    events
}

fn with(mut events: Vec<SagaEvent>, more: impl IntoIterator<Item = SagaEvent>) -> SagaState {
    events.extend(more);
    fold(&events)
}

fn allowed(state: &SagaState) -> Vec<SagaAction> {
    let mut every = vec![SagaAction::Confirm, SagaAction::MarkCancelled];
    for step in SagaStep::ALL {
        every.push(SagaAction::Run(step));
        every.push(SagaAction::Undo(step));
        every.push(SagaAction::Reject(rejection_of(step)));
    }
    every
        .into_iter()
        .filter(|action| state.turn(*action).is_ok())
        .collect()
}

#[test]
fn only_the_running_step_may_run() {
    let state = fold(&[
        started(),
        run(Reserve)[0].clone(),
        run(Reserve)[1].clone(),
        SagaEvent::StepStarted {
            step: Charge,
            attempt: 1,
        },
    ]);
    assert_eq!(allowed(&state), [SagaAction::Run(Charge)]);
    assert_eq!(
        state.turn(SagaAction::Run(Ship)),
        Err(OutOfTurn(
            "create_shipment is not the step running now (charge_payment)".into()
        ))
    );
    // Before its start is recorded no step may run.
    assert_eq!(allowed(&fold(&[started()])), []);
    assert_eq!(
        allowed(&SagaState::default()),
        [],
        "no saga, no turn for anything"
    );
}

#[test]
fn a_requested_cancellation_stops_every_forward_action() {
    let running = fold(&[
        started(),
        SagaEvent::StepStarted {
            step: Reserve,
            attempt: 1,
        },
        SagaEvent::CancellationRequested {
            reason: "no".into(),
        },
    ]);
    assert_eq!(allowed(&running), []);
    let done = with(
        all_succeeded(),
        [SagaEvent::CancellationRequested {
            reason: "no".into(),
        }],
    );
    assert_eq!(allowed(&done), []);
}

#[test]
fn confirm_only_once_every_step_succeeded() {
    assert_eq!(allowed(&fold(&all_succeeded())), [SagaAction::Confirm]);
    let completed = with(
        all_succeeded(),
        [SagaEvent::SagaCompleted {
            tracking_number: None,
        }],
    );
    assert_eq!(allowed(&completed), [], "a completed saga undoes nothing");
}

#[test]
fn a_cancelled_confirmed_order_undoes_every_step_last_first_then_is_cancelled() {
    let mut state = with(
        all_succeeded(),
        [
            SagaEvent::SagaCompleted {
                tracking_number: None,
            },
            SagaEvent::CancellationRequested {
                reason: "no".into(),
            },
            SagaEvent::CompensationStarted {
                reason: CANCELLED.into(),
            },
        ],
    );
    for step in [Ship, Charge, Reserve] {
        assert_eq!(state.next_to_undo(), Some(step));
        assert_eq!(allowed(&state), [SagaAction::Undo(step)]);
        state = state.evolve(&SagaEvent::StepCompensated { step, attempt: 1 });
    }
    assert_eq!(state.next_to_undo(), None);
    assert_eq!(state.ending(), Ending::Cancel);
    assert_eq!(allowed(&state), [SagaAction::MarkCancelled]);
}

#[test]
fn a_business_failure_undoes_what_took_effect_then_rejects_with_its_code_only() {
    let mut events = vec![started()];
    events.extend(run(Reserve));
    let state = with(
        events,
        [
            SagaEvent::StepStarted {
                step: Charge,
                attempt: 1,
            },
            SagaEvent::StepFailed {
                step: Charge,
                attempt: 1,
                error: "payment_declined".into(),
                retryable: false,
            },
            SagaEvent::CompensationStarted {
                reason: "payment_declined".into(),
            },
        ],
    );
    // The refused charge wrote nothing: only the reservation is undone.
    assert_eq!(allowed(&state), [SagaAction::Undo(Reserve)]);
    let state = state.evolve(&SagaEvent::StepCompensated {
        step: Reserve,
        attempt: 1,
    });
    assert_eq!(
        allowed(&state),
        [SagaAction::Reject(RejectionReason::PaymentDeclined)]
    );
    assert_eq!(
        state.turn(SagaAction::Reject(RejectionReason::InsufficientStock)),
        Err(OutOfTurn(
            "the saga's failure is payment_declined, not insufficient_stock".into()
        ))
    );
}

#[test]
fn a_step_that_failed_technically_may_have_taken_effect() {
    let state = fold(&[
        started(),
        SagaEvent::StepStarted {
            step: Reserve,
            attempt: 1,
        },
        SagaEvent::StepFailed {
            step: Reserve,
            attempt: 1,
            error: "deadline exceeded".into(),
            retryable: false,
        },
        SagaEvent::CompensationStarted {
            reason: "reserve_inventory: deadline exceeded".into(),
        },
    ]);
    assert_eq!(state.next_to_undo(), Some(Reserve));
    let undone = state.evolve(&SagaEvent::StepCompensated {
        step: Reserve,
        attempt: 1,
    });
    assert_eq!(
        undone.ending(),
        Ending::Reject(RejectionReason::InsufficientStock)
    );
}

#[test]
fn refusal_codes_are_the_three_business_failures() {
    for step in SagaStep::ALL {
        let reason = rejection_of(step);
        assert_eq!(refusal(code(reason)), Some(reason));
    }
    assert_eq!(refusal("503 Service Unavailable"), None);
}

#[test]
fn events_round_trip_through_their_stored_shape() {
    let event = SagaEvent::RetryScheduled {
        step: SagaStep::ChargePayment,
        attempt: 3,
        compensation: false,
        retry_at: "2026-11-23T10:00:00Z".into(),
        delay_ms: 400,
    };
    assert_eq!(event.event_type(), "RetryScheduled");
    assert_eq!(event.data()["step"], "charge_payment");
    let decoded = SagaEvent::decode(event.event_type(), &event.data()).unwrap();
    assert_eq!(decoded, event);
    let empty = SagaEvent::SagaRetryRequested {};
    assert_eq!(
        SagaEvent::decode("SagaRetryRequested", &empty.data()).unwrap(),
        empty
    );
}

/// A saga's stream as the event store held it before the steps were
/// declared in a table (types and data exactly as stored), and the
/// state it folded into, as the read models stored it.
#[test]
fn a_stream_written_before_the_step_table_folds_as_it_did() {
    let stored = serde_json::json!([
        ["SagaStarted", {"order_id": "00000000-0000-0000-0000-000000000001",
            "customer_id": "00000000-0000-0000-0000-000000000002", "total_cents": 500}],
        ["StepStarted", {"step": "reserve_inventory", "attempt": 1}],
        ["StepSucceeded", {"step": "reserve_inventory", "attempt": 1}],
        ["StepStarted", {"step": "charge_payment", "attempt": 1}],
        ["StepFailed", {"step": "charge_payment", "attempt": 1, "error": "503", "retryable": true}],
        ["RetryScheduled", {"step": "charge_payment", "attempt": 2, "compensation": false,
            "retry_at": "2026-12-01T10:00:00.000Z", "delay_ms": 100}],
        ["StepStarted", {"step": "charge_payment", "attempt": 2}],
        ["StepSucceeded", {"step": "charge_payment", "attempt": 2}],
        ["StepStarted", {"step": "create_shipment", "attempt": 1}],
        ["StepSucceeded", {"step": "create_shipment", "attempt": 1, "detail": "TRK-1"}],
        ["SagaCompleted", {"tracking_number": "TRK-1"}]
    ]);
    let state = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|e| SagaEvent::decode(e[0].as_str().unwrap(), &e[1]).unwrap())
        .fold(SagaState::default(), |state, event| state.evolve(&event));
    let step = |name: &str, attempts: u32, last_error: Option<&str>| {
        serde_json::json!({"step": name, "status": "succeeded", "attempts": attempts,
                "compensation_attempts": 0, "compensation_failures": 0, "last_error": last_error})
    };
    assert_eq!(
        serde_json::to_value(&state).unwrap(),
        serde_json::json!({
            "exists": true,
            "order_id": "00000000-0000-0000-0000-000000000001",
            "customer_id": "00000000-0000-0000-0000-000000000002",
            "total_cents": 500,
            "status": "completed",
            "current_step": null,
            "failure_reason": null,
            "failed_step": null,
            "cancellation_reason": null,
            "compensating": false,
            "tracking_number": "TRK-1",
            "steps": [
                step("reserve_inventory", 1, None),
                step("charge_payment", 2, Some("503")),
                step("create_shipment", 1, None),
            ],
        })
    );
    // And the stored state reads back as it was written.
    let stored_state: SagaState =
        serde_json::from_value(serde_json::to_value(&state).unwrap()).unwrap();
    assert_eq!(stored_state, state);
}
