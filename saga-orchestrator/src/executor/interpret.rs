//! What each piece of a saga's execution leads to, given what a step call
//! answered: the events to record and what happens next. Pure (no I/O, no
//! clock), so each piece is tested alone; `drive` makes the calls and the
//! appends these describe.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use domain::saga::{self, Ending, SagaAction, SagaEvent, SagaStatus, SagaStep, api};

use crate::client::Reply;
use crate::instances::Standing;

/// What happens after a piece of a saga's execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Decide again from the saga's state now.
    Continue,
    /// Nothing can be done before this time (a retry, an open breaker).
    WaitUntil(DateTime<Utc>),
    /// Ended, or failed and waiting for an operator.
    Settled(Standing),
}

/// What a piece leads to in the saga's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The step call recorded these events itself, with its effect, at the
    /// version it was made for: take them in.
    Recorded(Vec<SagaEvent>),
    /// Append these at the version decided on, then `then`; if the stream
    /// moved meanwhile, nothing is appended, and the saga is read again
    /// and decided on again.
    Append(Vec<SagaEvent>, Flow),
    /// The stream moved under the call (409 `saga-moved`): read it again.
    Reload,
    /// Nothing to record.
    Then(Flow),
}

/// When a failed attempt is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub at: DateTime<Utc>,
    pub delay: Duration,
}

/// How a settled saga's row stands: failed ones wait for an operator.
pub fn settled(status: SagaStatus) -> Flow {
    Flow::Settled(match status {
        SagaStatus::Failed => Standing::Failed,
        _ => Standing::Done,
    })
}

/// Records `failed` and the retry of `step`'s attempt `next_attempt` (of
/// its compensation, if `compensation`), then waits for it: the one way
/// every retried failure is recorded.
pub fn fail_and_retry(
    failed: SagaEvent,
    step: SagaStep,
    next_attempt: u32,
    compensation: bool,
    retry: Retry,
) -> Outcome {
    let scheduled = SagaEvent::RetryScheduled {
        step,
        attempt: next_attempt,
        compensation,
        retry_at: retry.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        delay_ms: retry.delay.as_millis() as u64,
    };
    Outcome::Append(vec![failed, scheduled], Flow::WaitUntil(retry.at))
}

/// The failure a step past its deadline is recorded with: not retried, so
/// the saga compensates. `attempts` were made; `last_error` is the last
/// one's.
pub fn past_deadline(
    step: SagaStep,
    attempts: u32,
    deadline: Duration,
    last_error: Option<&str>,
) -> SagaEvent {
    let error = format!(
        "deadline of {} s exceeded after {attempts} attempts{}",
        deadline.as_secs(),
        last_error.map_or(String::new(), |e| format!("; last error: {e}"))
    );
    SagaEvent::StepFailed {
        step,
        attempt: attempts,
        error,
        retryable: false,
    }
}

/// What running `step`'s attempt `attempt` led to. `then`: the next step's
/// attempt whose start the call records with this one's success.
pub fn after_run(
    step: SagaStep,
    attempt: u32,
    then: Option<(SagaStep, u32)>,
    reply: Reply,
    retry: Retry,
) -> Outcome {
    let failed = |error: String, retryable: bool| SagaEvent::StepFailed {
        step,
        attempt,
        error,
        retryable,
    };
    match reply {
        Reply::Succeeded {
            tracking_number, ..
        } => {
            let mut events = vec![SagaEvent::StepSucceeded {
                step,
                attempt,
                detail: tracking_number,
            }];
            if let Some((next, attempt)) = then {
                events.push(SagaEvent::StepStarted {
                    step: next,
                    attempt,
                });
            }
            Outcome::Recorded(events)
        }
        Reply::Moved => Outcome::Reload,
        Reply::Refused(reason) => Outcome::Append(
            vec![failed(saga::code(reason).to_owned(), false)],
            Flow::Continue,
        ),
        Reply::Rejected { status, detail } => Outcome::Append(
            vec![failed(format!("{status}: {detail}"), false)],
            Flow::Continue,
        ),
        Reply::Transient(error) | Reply::Busy(error) => {
            fail_and_retry(failed(error, true), step, attempt + 1, false, retry)
        }
    }
}

/// The saga's failure once `step`'s compensation has used up its attempts.
pub fn compensation_given_up(step: SagaStep) -> SagaEvent {
    SagaEvent::SagaFailed {
        reason: format!("{} could not be completed", undo_action(step)),
    }
}

/// What undoing `step`'s attempt `attempt` (of `most`) led to. A busy
/// answer uses up no attempt: the same one is tried again.
pub fn after_undo(step: SagaStep, attempt: u32, most: u32, reply: Reply, retry: Retry) -> Outcome {
    let (error, busy) = match reply {
        Reply::Succeeded { .. } => {
            return Outcome::Recorded(vec![SagaEvent::StepCompensated { step, attempt }]);
        }
        Reply::Moved => return Outcome::Reload,
        Reply::Refused(reason) => (saga::code(reason).to_owned(), false),
        Reply::Rejected { status, detail } => (format!("{status}: {detail}"), false),
        Reply::Transient(error) => (error, false),
        Reply::Busy(error) => (error, true),
    };
    let failed = |retryable: bool, error: String| SagaEvent::StepCompensationFailed {
        step,
        attempt,
        error,
        retryable,
        busy,
    };
    if attempt >= most && !busy {
        let reason = format!(
            "{} failed after {attempt} attempts: {error}",
            undo_action(step)
        );
        return Outcome::Append(
            vec![failed(false, error), SagaEvent::SagaFailed { reason }],
            Flow::Continue,
        );
    }
    let next_attempt = if busy { attempt } else { attempt + 1 };
    fail_and_retry(failed(true, error), step, next_attempt, true, retry)
}

/// What confirming the order led to; `look_again`: when to try again if it
/// could not be done now (a cancellation on its way, the service away).
pub fn after_confirm(reply: Reply, look_again: DateTime<Utc>) -> Outcome {
    match reply {
        Reply::Succeeded {
            tracking_number, ..
        } => Outcome::Recorded(vec![SagaEvent::SagaCompleted { tracking_number }]),
        Reply::Moved => Outcome::Reload,
        _ => Outcome::Then(Flow::WaitUntil(look_again)),
    }
}

/// The call that ends a compensation with `ending`, and the reason the
/// saga's end records: the failure it compensated (`failure_reason`), or
/// the cancellation.
pub fn finishing(ending: Ending, failure_reason: Option<&str>) -> (SagaAction, String) {
    match ending {
        Ending::Cancel => (SagaAction::MarkCancelled, saga::CANCELLED.to_owned()),
        Ending::Reject(reason) => (
            SagaAction::Reject(reason),
            failure_reason.map_or_else(|| saga::code(reason).to_owned(), str::to_owned),
        ),
    }
}

/// What ending the compensation led to (see [`after_confirm`]).
pub fn after_finish(reason: String, reply: Reply, look_again: DateTime<Utc>) -> Outcome {
    match reply {
        Reply::Succeeded { .. } => Outcome::Recorded(vec![SagaEvent::SagaCompensated { reason }]),
        Reply::Moved => Outcome::Reload,
        _ => Outcome::Then(Flow::WaitUntil(look_again)),
    }
}

fn undo_action(step: SagaStep) -> &'static str {
    api::of(SagaAction::Undo(step)).name
}

#[cfg(test)]
mod tests {
    use domain::RejectionReason;

    use super::*;

    use SagaStep::{ChargePayment as Charge, CreateShipment as Ship, ReserveInventory as Reserve};

    fn retry() -> Retry {
        Retry {
            at: DateTime::parse_from_rfc3339("2026-12-06T10:00:00.250Z")
                .unwrap()
                .to_utc(),
            delay: Duration::from_millis(250),
        }
    }

    fn scheduled(step: SagaStep, attempt: u32, compensation: bool) -> SagaEvent {
        SagaEvent::RetryScheduled {
            step,
            attempt,
            compensation,
            retry_at: "2026-12-06T10:00:00.250Z".into(),
            delay_ms: 250,
        }
    }

    #[test]
    fn a_success_is_taken_in_as_the_call_recorded_it_with_the_next_steps_start() {
        let reply = Reply::Succeeded {
            tracking_number: None,
            recorded: None,
        };
        assert_eq!(
            after_run(Reserve, 2, Some((Charge, 1)), reply, retry()),
            Outcome::Recorded(vec![
                SagaEvent::StepSucceeded {
                    step: Reserve,
                    attempt: 2,
                    detail: None
                },
                SagaEvent::StepStarted {
                    step: Charge,
                    attempt: 1
                },
            ])
        );
        let shipped = Reply::Succeeded {
            tracking_number: Some("TRK-1".into()),
            recorded: None,
        };
        assert_eq!(
            after_run(Ship, 1, None, shipped, retry()),
            Outcome::Recorded(vec![SagaEvent::StepSucceeded {
                step: Ship,
                attempt: 1,
                detail: Some("TRK-1".into())
            }])
        );
    }

    #[test]
    fn a_refusal_fails_the_step_for_good_with_its_code() {
        assert_eq!(
            after_run(
                Charge,
                1,
                Some((Ship, 1)),
                Reply::Refused(RejectionReason::PaymentDeclined),
                retry()
            ),
            Outcome::Append(
                vec![SagaEvent::StepFailed {
                    step: Charge,
                    attempt: 1,
                    error: "payment_declined".into(),
                    retryable: false
                }],
                Flow::Continue
            )
        );
    }

    #[test]
    fn a_transient_or_busy_failure_schedules_the_next_attempt_and_waits_for_it() {
        for reply in [Reply::Transient("503".into()), Reply::Busy("503".into())] {
            assert_eq!(
                after_run(Charge, 3, None, reply, retry()),
                Outcome::Append(
                    vec![
                        SagaEvent::StepFailed {
                            step: Charge,
                            attempt: 3,
                            error: "503".into(),
                            retryable: true
                        },
                        scheduled(Charge, 4, false),
                    ],
                    Flow::WaitUntil(retry().at)
                )
            );
        }
    }

    #[test]
    fn a_moved_stream_is_read_again_whatever_was_called() {
        assert_eq!(
            after_run(Reserve, 1, None, Reply::Moved, retry()),
            Outcome::Reload
        );
        assert_eq!(
            after_undo(Reserve, 1, 3, Reply::Moved, retry()),
            Outcome::Reload
        );
        assert_eq!(after_confirm(Reply::Moved, retry().at), Outcome::Reload);
        assert_eq!(
            after_finish("cancelled".into(), Reply::Moved, retry().at),
            Outcome::Reload
        );
    }

    #[test]
    fn a_step_past_its_deadline_fails_for_good_naming_its_last_error() {
        let failed = past_deadline(Reserve, 4, Duration::from_secs(30), Some("503"));
        assert_eq!(
            failed,
            SagaEvent::StepFailed {
                step: Reserve,
                attempt: 4,
                error: "deadline of 30 s exceeded after 4 attempts; last error: 503".into(),
                retryable: false
            }
        );
    }

    #[test]
    fn an_undo_that_fails_is_retried_until_its_last_attempt_then_the_saga_fails() {
        let failing =
            |attempt| after_undo(Charge, attempt, 3, Reply::Transient("503".into()), retry());
        assert_eq!(
            failing(2),
            Outcome::Append(
                vec![
                    SagaEvent::StepCompensationFailed {
                        step: Charge,
                        attempt: 2,
                        error: "503".into(),
                        retryable: true,
                        busy: false
                    },
                    scheduled(Charge, 3, true),
                ],
                Flow::WaitUntil(retry().at)
            )
        );
        assert_eq!(
            failing(3),
            Outcome::Append(
                vec![
                    SagaEvent::StepCompensationFailed {
                        step: Charge,
                        attempt: 3,
                        error: "503".into(),
                        retryable: false,
                        busy: false
                    },
                    SagaEvent::SagaFailed {
                        reason: "refund-payment failed after 3 attempts: 503".into()
                    },
                ],
                Flow::Continue
            )
        );
        assert_eq!(
            compensation_given_up(Charge),
            SagaEvent::SagaFailed {
                reason: "refund-payment could not be completed".into()
            }
        );
    }

    #[test]
    fn a_busy_undo_uses_up_no_attempt_even_the_last() {
        assert_eq!(
            after_undo(Reserve, 3, 3, Reply::Busy("409".into()), retry()),
            Outcome::Append(
                vec![
                    SagaEvent::StepCompensationFailed {
                        step: Reserve,
                        attempt: 3,
                        error: "409".into(),
                        retryable: true,
                        busy: true
                    },
                    scheduled(Reserve, 3, true),
                ],
                Flow::WaitUntil(retry().at)
            )
        );
    }

    #[test]
    fn confirming_and_finishing_look_again_later_when_refused_or_away() {
        let later = retry().at;
        assert_eq!(
            after_confirm(
                Reply::Succeeded {
                    tracking_number: Some("TRK-1".into()),
                    recorded: None,
                },
                later
            ),
            Outcome::Recorded(vec![SagaEvent::SagaCompleted {
                tracking_number: Some("TRK-1".into())
            }])
        );
        let refused = Reply::Rejected {
            status: 409,
            detail: "cancellation requested".into(),
        };
        assert_eq!(
            after_confirm(refused.clone(), later),
            Outcome::Then(Flow::WaitUntil(later))
        );
        assert_eq!(
            after_finish("payment_declined".into(), refused, later),
            Outcome::Then(Flow::WaitUntil(later))
        );
    }

    #[test]
    fn a_compensation_ends_in_the_cancellation_or_the_rejection_it_compensated() {
        assert_eq!(
            finishing(Ending::Cancel, Some("payment_declined")),
            (SagaAction::MarkCancelled, "cancelled".to_owned())
        );
        let declined = Ending::Reject(RejectionReason::PaymentDeclined);
        assert_eq!(
            finishing(declined, None),
            (
                SagaAction::Reject(RejectionReason::PaymentDeclined),
                "payment_declined".to_owned()
            )
        );
        assert_eq!(
            finishing(declined, Some("charge_payment: deadline exceeded")).1,
            "charge_payment: deadline exceeded"
        );
    }

    #[test]
    fn only_failed_sagas_wait_for_an_operator() {
        assert_eq!(settled(SagaStatus::Failed), Flow::Settled(Standing::Failed));
        assert_eq!(
            settled(SagaStatus::Completed),
            Flow::Settled(Standing::Done)
        );
        assert_eq!(
            settled(SagaStatus::Compensated),
            Flow::Settled(Standing::Done)
        );
    }
}
