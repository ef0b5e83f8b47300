//! The order fulfilment saga's record: every transition the orchestrator
//! makes is an event in stream `saga-<order uuid>`, and [`SagaState`] is
//! what those events say about the saga now. The orchestrator decides what
//! to do next from this state; the projector builds the saga views from the
//! same events (adding the times the event store records).
//!
//! Nothing about a saga lives only in memory: a restarted orchestrator folds
//! the stream and carries on from the state it finds.
//!
//! The turn rules live here too ([`SagaState::turn`], with
//! [`SagaState::next_to_undo`] and [`SagaState::ending`]): whose turn it is
//! in a saga's stream is what the orchestrator decides its next call from
//! and what command-service checks before carrying a call out, so both ask
//! the same code.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::RejectionReason;
use crate::wire::event_names;

/// The saga's steps, in the order they run. Compensation runs them
/// backwards (cancel shipment, refund, release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SagaStep {
    ReserveInventory,
    ChargePayment,
    CreateShipment,
}

impl SagaStep {
    pub const ALL: [SagaStep; 3] = [
        SagaStep::ReserveInventory,
        SagaStep::ChargePayment,
        SagaStep::CreateShipment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReserveInventory => "reserve_inventory",
            Self::ChargePayment => "charge_payment",
            Self::CreateShipment => "create_shipment",
        }
    }

    pub fn parse(name: &str) -> Option<SagaStep> {
        Self::ALL.into_iter().find(|step| step.as_str() == name)
    }

    /// The step after this one, if any.
    pub fn next(self) -> Option<SagaStep> {
        match self {
            Self::ReserveInventory => Some(Self::ChargePayment),
            Self::ChargePayment => Some(Self::CreateShipment),
            Self::CreateShipment => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The reason a cancellation gives its compensation, and records when it
/// ends (`SagaCompensated`).
pub const CANCELLED: &str = "cancelled";

/// The rejection a step that failed for good stands for. A business refusal
/// names it exactly; a step that could not be completed in time is
/// rejected with its own step's code.
pub fn rejection_of(step: SagaStep) -> RejectionReason {
    match step {
        SagaStep::ReserveInventory => RejectionReason::InsufficientStock,
        SagaStep::ChargePayment => RejectionReason::PaymentDeclined,
        SagaStep::CreateShipment => RejectionReason::ShippingUnavailable,
    }
}

/// The code of a rejection, as a business refusal stores it in
/// `StepFailed.error` and the order's `rejection_reason` shows it.
pub fn code(reason: RejectionReason) -> &'static str {
    match reason {
        RejectionReason::InsufficientStock => "insufficient_stock",
        RejectionReason::PaymentDeclined => "payment_declined",
        RejectionReason::ShippingUnavailable => "shipping_unavailable",
    }
}

/// The business refusal a step's error is, if it is one (its code, as
/// [`code`] writes it); any other error is technical.
pub fn refusal(error: &str) -> Option<RejectionReason> {
    [
        RejectionReason::InsufficientStock,
        RejectionReason::PaymentDeclined,
        RejectionReason::ShippingUnavailable,
    ]
    .into_iter()
    .find(|reason| code(*reason) == error)
}

/// The saga type name of the contract's saga detail.
pub const SAGA_TYPE: &str = "order_fulfilment";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SagaEvent {
    /// The orchestrator took on the order (from its `OrderPlaced`).
    SagaStarted {
        order_id: Uuid,
        customer_id: Uuid,
        total_cents: i64,
    },
    /// An attempt at a step began (`attempt` counts from 1).
    StepStarted { step: SagaStep, attempt: u32 },
    /// The step's command succeeded; `detail` carries what it produced (the
    /// tracking number of a shipment, say).
    StepSucceeded {
        step: SagaStep,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// An attempt failed. `retryable` failures (unreachable, timeout, 5xx)
    /// are followed by a [`SagaEvent::RetryScheduled`]; a business refusal
    /// or a step past its deadline is not retried.
    StepFailed {
        step: SagaStep,
        attempt: u32,
        error: String,
        retryable: bool,
    },
    /// The next attempt of a step (or of its compensation) will start at
    /// `retry_at` (RFC 3339 UTC), `delay_ms` after this event.
    RetryScheduled {
        step: SagaStep,
        attempt: u32,
        compensation: bool,
        retry_at: String,
        delay_ms: u64,
    },
    /// The saga stops going forward and undoes its completed steps in
    /// reverse order; `reason` is a rejection code (`insufficient_stock`,
    /// `payment_declined`, `shipping_unavailable`), `cancelled`, or the
    /// error of a step that could not be completed.
    CompensationStarted { reason: String },
    /// An attempt at undoing a completed step began.
    StepCompensationStarted { step: SagaStep, attempt: u32 },
    /// The step is undone.
    StepCompensated { step: SagaStep, attempt: u32 },
    /// An attempt at undoing a step failed; when not `retryable` (retries
    /// exhausted) the saga fails. A `busy` failure (the step's streams kept
    /// changing, or the same call was still being handled) uses up no
    /// attempt: the same attempt runs again later.
    StepCompensationFailed {
        step: SagaStep,
        attempt: u32,
        error: String,
        retryable: bool,
        #[serde(default)]
        busy: bool,
    },
    /// The customer asked to cancel the order; the saga compensates at the
    /// next opportunity (also while a step is running).
    CancellationRequested { reason: String },
    /// Every step succeeded and the order is confirmed.
    SagaCompleted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tracking_number: Option<String>,
    },
    /// Every completed step was undone and the order rejected or cancelled.
    SagaCompensated { reason: String },
    /// A compensation could not be completed; an operator must act.
    SagaFailed { reason: String },
    /// An operator asked a failed saga to resume from where it stopped.
    SagaRetryRequested {},
}
event_names!(SagaEvent {
    SagaStarted,
    StepStarted,
    StepSucceeded,
    StepFailed,
    RetryScheduled,
    CompensationStarted,
    StepCompensationStarted,
    StepCompensated,
    StepCompensationFailed,
    CancellationRequested,
    SagaCompleted,
    SagaCompensated,
    SagaFailed,
    SagaRetryRequested
});

/// The saga's status (the contract's `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    #[default]
    Running,
    Compensating,
    Completed,
    Compensated,
    Failed,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }

    /// `completed`, `compensated` and `failed` end the saga (a failed one
    /// until an operator retries it).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }
}

/// A step's status (the contract's `steps[].status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Compensating,
    Compensated,
    CompensationFailed,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
            Self::CompensationFailed => "compensation_failed",
        }
    }
}

/// One step as the events describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    pub step: SagaStep,
    pub status: StepStatus,
    /// Attempts at the step, then at its compensation (each counts from 1).
    pub attempts: u32,
    pub compensation_attempts: u32,
    /// Compensation attempts whose failure was recorded. The next attempt
    /// is numbered from these, not from the starts: a start whose outcome
    /// could not be recorded (the stream moved meanwhile) does not use up
    /// an attempt.
    #[serde(default)]
    pub compensation_failures: u32,
    pub last_error: Option<String>,
}

impl StepState {
    /// Whether the step took effect or may have, and so must be undone
    /// when the saga compensates: it succeeded, was interrupted while
    /// running, is being undone, or failed for a technical reason (a
    /// timeout, say, after which its effect may still have landed). A
    /// business refusal wrote nothing.
    pub fn may_have_taken_effect(&self) -> bool {
        match self.status {
            StepStatus::Succeeded
            | StepStatus::Running
            | StepStatus::Compensating
            | StepStatus::CompensationFailed => true,
            StepStatus::Failed => self.last_error.as_deref().and_then(refusal).is_none(),
            StepStatus::Pending | StepStatus::Compensated => false,
        }
    }
}

/// How a compensation ends once nothing is left to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The order is cancelled (`mark-cancelled`).
    Cancel,
    /// The order is rejected with this reason (`reject`).
    Reject(RejectionReason),
}

/// What a call of the saga's step API asks to do for a saga; each may
/// take effect only in its turn ([`SagaState::turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaAction {
    /// Carry a step out (reserve, charge, ship).
    Run(SagaStep),
    /// Undo a step (release, refund, cancel the shipment).
    Undo(SagaStep),
    /// Confirm the order.
    Confirm,
    /// Reject the order with this reason.
    Reject(RejectionReason),
    /// Cancel the order, as its customer asked.
    MarkCancelled,
}

/// Why an action may not take effect now: what the saga's stream says
/// instead, for the caller to read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OutOfTurn(pub String);

/// What a saga's events say about it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaState {
    pub exists: bool,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub total_cents: i64,
    pub status: SagaStatus,
    /// The step being run or undone; `None` between steps and at the end.
    pub current_step: Option<SagaStep>,
    pub failure_reason: Option<String>,
    /// The step that failed for good going forward (a business refusal or
    /// a step past its deadline): the one the order's rejection names.
    /// (Defaults when absent, so read models stored before it still load.)
    #[serde(default)]
    pub failed_step: Option<SagaStep>,
    /// Set by a cancellation request, kept after it is handled.
    pub cancellation_reason: Option<String>,
    /// Set once compensation began; a retried failed saga resumes it.
    pub compensating: bool,
    pub tracking_number: Option<String>,
    pub steps: [StepState; 3],
}

impl Default for SagaState {
    fn default() -> Self {
        Self {
            exists: false,
            order_id: Uuid::nil(),
            customer_id: Uuid::nil(),
            total_cents: 0,
            status: SagaStatus::Running,
            current_step: None,
            failure_reason: None,
            failed_step: None,
            cancellation_reason: None,
            compensating: false,
            tracking_number: None,
            steps: SagaStep::ALL.map(|step| StepState {
                step,
                status: StepStatus::Pending,
                attempts: 0,
                compensation_attempts: 0,
                compensation_failures: 0,
                last_error: None,
            }),
        }
    }
}

impl SagaState {
    pub fn step(&self, step: SagaStep) -> &StepState {
        &self.steps[step.index()]
    }

    fn step_mut(&mut self, step: SagaStep) -> &mut StepState {
        &mut self.steps[step.index()]
    }

    /// The step a compensation undoes next: the last one that took effect
    /// or may have (compensation runs the steps backwards); `None` when
    /// nothing is left to undo.
    pub fn next_to_undo(&self) -> Option<SagaStep> {
        SagaStep::ALL
            .into_iter()
            .rev()
            .find(|step| self.step(*step).may_have_taken_effect())
    }

    /// How the compensation ends: the order is cancelled if the customer
    /// asked, and otherwise rejected for the step that failed for good.
    ///
    /// A compensation started for a failure ends in the rejection even if a
    /// cancellation came in meanwhile: the business failure decided the
    /// order's fate first.
    pub fn ending(&self) -> Ending {
        let started_for_failure =
            self.failed_step.is_some() && self.failure_reason.as_deref() != Some(CANCELLED);
        if self.cancellation_reason.is_some() && !started_for_failure {
            Ending::Cancel
        } else {
            // The failed step may have been compensated since (one past its
            // deadline may have taken effect), so its status no longer says.
            let failed = self.failed_step.unwrap_or(SagaStep::ReserveInventory);
            Ending::Reject(rejection_of(failed))
        }
    }

    /// Whether the saga, as its stream says now, lets `action` take effect:
    ///
    /// - a step runs while the saga runs, no cancellation is requested, and
    ///   that step is the current one, started and not yet succeeded;
    /// - a step is undone while the saga compensates and it is the
    ///   [next to undo](Self::next_to_undo);
    /// - the order is confirmed while the saga runs, every step succeeded
    ///   and no cancellation is requested;
    /// - the order is rejected, or cancelled, while the saga compensates,
    ///   nothing is left to undo, and the [ending](Self::ending) is that
    ///   rejection (with that reason), or the cancellation.
    pub fn turn(&self, action: SagaAction) -> Result<(), OutOfTurn> {
        let refuse = |why: String| Err(OutOfTurn(why));
        if !self.exists {
            return refuse("no saga has started for this order".into());
        }
        let compensating = || -> Result<(), OutOfTurn> {
            if self.status != SagaStatus::Compensating {
                return refuse(format!(
                    "the saga is {}, not compensating",
                    self.status.as_str()
                ));
            }
            Ok(())
        };
        let running = || -> Result<(), OutOfTurn> {
            if self.status != SagaStatus::Running {
                return refuse(format!("the saga is {}, not running", self.status.as_str()));
            }
            if self.cancellation_reason.is_some() {
                return refuse("a cancellation of the order is requested".into());
            }
            Ok(())
        };
        let nothing_left_to_undo = || -> Result<(), OutOfTurn> {
            compensating()?;
            match self.next_to_undo() {
                Some(step) => refuse(format!("{} is still to be undone", step.as_str())),
                None => Ok(()),
            }
        };
        match action {
            SagaAction::Run(step) => {
                running()?;
                if self.current_step != Some(step) || self.step(step).status != StepStatus::Running
                {
                    return refuse(format!(
                        "{} is not the step running now ({})",
                        step.as_str(),
                        self.current_step
                            .map_or("none is", |current| current.as_str())
                    ));
                }
                Ok(())
            }
            SagaAction::Undo(step) => {
                compensating()?;
                match self.next_to_undo() {
                    Some(next) if next == step => Ok(()),
                    Some(next) => refuse(format!(
                        "{} is the step to undo next, not {}",
                        next.as_str(),
                        step.as_str()
                    )),
                    None => refuse("nothing is left to undo".into()),
                }
            }
            SagaAction::Confirm => {
                running()?;
                match self
                    .steps
                    .iter()
                    .find(|state| state.status != StepStatus::Succeeded)
                {
                    Some(state) => refuse(format!(
                        "{} has not succeeded ({})",
                        state.step.as_str(),
                        state.status.as_str()
                    )),
                    None => Ok(()),
                }
            }
            SagaAction::Reject(reason) => {
                nothing_left_to_undo()?;
                match self.ending() {
                    Ending::Reject(ending) if ending == reason => Ok(()),
                    Ending::Reject(ending) => refuse(format!(
                        "the saga's failure is {}, not {}",
                        code(ending),
                        code(reason)
                    )),
                    Ending::Cancel => refuse("the saga compensates a cancellation".into()),
                }
            }
            SagaAction::MarkCancelled => {
                nothing_left_to_undo()?;
                match self.ending() {
                    Ending::Cancel => Ok(()),
                    Ending::Reject(reason) => refuse(format!(
                        "the saga compensates a failure ({}), not a cancellation",
                        code(reason)
                    )),
                }
            }
        }
    }

    /// The saga's state after `event`.
    pub fn evolve(mut self, event: &SagaEvent) -> SagaState {
        match event {
            SagaEvent::SagaStarted {
                order_id,
                customer_id,
                total_cents,
            } => {
                self.exists = true;
                self.order_id = *order_id;
                self.customer_id = *customer_id;
                self.total_cents = *total_cents;
                self.status = SagaStatus::Running;
            }
            SagaEvent::StepStarted { step, attempt } => {
                let state = self.step_mut(*step);
                state.status = StepStatus::Running;
                state.attempts = *attempt;
                self.current_step = Some(*step);
            }
            SagaEvent::StepSucceeded { step, detail, .. } => {
                let state = self.step_mut(*step);
                state.status = StepStatus::Succeeded;
                if *step == SagaStep::CreateShipment {
                    self.tracking_number = detail.clone();
                }
                self.current_step = None;
            }
            SagaEvent::StepFailed {
                step,
                error,
                retryable,
                ..
            } => {
                let state = self.step_mut(*step);
                state.last_error = Some(error.clone());
                if !retryable {
                    state.status = StepStatus::Failed;
                    self.current_step = None;
                    self.failed_step = Some(*step);
                }
            }
            SagaEvent::RetryScheduled { .. } => {}
            SagaEvent::CompensationStarted { reason } => {
                self.status = SagaStatus::Compensating;
                self.compensating = true;
                self.failure_reason = Some(reason.clone());
                self.current_step = None;
                // A step interrupted while running (by a cancellation) may
                // or may not have taken effect; compensating it is safe
                // because every compensation is idempotent.
            }
            SagaEvent::StepCompensationStarted { step, attempt } => {
                let state = self.step_mut(*step);
                state.status = StepStatus::Compensating;
                state.compensation_attempts = *attempt;
                self.current_step = Some(*step);
            }
            SagaEvent::StepCompensated { step, .. } => {
                self.step_mut(*step).status = StepStatus::Compensated;
                self.current_step = None;
            }
            SagaEvent::StepCompensationFailed {
                step,
                attempt,
                error,
                retryable,
                busy,
            } => {
                let state = self.step_mut(*step);
                if !busy {
                    state.compensation_failures = *attempt;
                }
                state.last_error = Some(error.clone());
                if !retryable {
                    state.status = StepStatus::CompensationFailed;
                }
            }
            SagaEvent::CancellationRequested { reason } => {
                self.cancellation_reason = Some(reason.clone());
            }
            SagaEvent::SagaCompleted { tracking_number } => {
                self.status = SagaStatus::Completed;
                if tracking_number.is_some() {
                    self.tracking_number = tracking_number.clone();
                }
                self.current_step = None;
            }
            SagaEvent::SagaCompensated { reason } => {
                self.status = SagaStatus::Compensated;
                self.failure_reason = Some(reason.clone());
                self.current_step = None;
            }
            SagaEvent::SagaFailed { reason } => {
                self.status = SagaStatus::Failed;
                self.failure_reason = Some(reason.clone());
                self.current_step = None;
            }
            SagaEvent::SagaRetryRequested {} => {
                self.status = if self.compensating {
                    SagaStatus::Compensating
                } else {
                    SagaStatus::Running
                };
                for state in &mut self.steps {
                    match state.status {
                        // Resume where it stopped: the compensation that
                        // failed is tried again, with fresh attempts.
                        StepStatus::CompensationFailed => {
                            state.status = StepStatus::Succeeded;
                            state.compensation_attempts = 0;
                            state.compensation_failures = 0;
                        }
                        StepStatus::Failed if !self.compensating => {
                            state.status = StepStatus::Pending;
                            state.attempts = 0;
                            self.failed_step = None;
                        }
                        _ => {}
                    }
                }
            }
        }
        self
    }
}

/// The saga's stream id: `saga-<order uuid>` (see [`crate::stream`]).
pub use crate::stream::saga as stream_id;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

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
        assert!(state.steps.iter().all(|s| s.status == StepStatus::Pending));
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
        let statuses: Vec<_> = state.steps.iter().map(|s| s.status).collect();
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
}
