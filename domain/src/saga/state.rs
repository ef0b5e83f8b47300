//! What a saga's events say about it now.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Blank, PerStep, SagaEvent, SagaStatus, SagaStep, StepStatus, refusal};

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

impl Blank for StepState {
    fn blank(step: SagaStep) -> Self {
        StepState {
            step,
            status: StepStatus::Pending,
            attempts: 0,
            compensation_attempts: 0,
            compensation_failures: 0,
            last_error: None,
        }
    }
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
    pub steps: PerStep<StepState>,
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
            steps: PerStep::default(),
        }
    }
}

impl SagaState {
    pub fn step(&self, step: SagaStep) -> &StepState {
        &self.steps[step]
    }

    fn step_mut(&mut self, step: SagaStep) -> &mut StepState {
        &mut self.steps[step]
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
            SagaEvent::StepStarted { .. }
            | SagaEvent::StepSucceeded { .. }
            | SagaEvent::StepFailed { .. }
            | SagaEvent::StepCompensationStarted { .. }
            | SagaEvent::StepCompensated { .. }
            | SagaEvent::StepCompensationFailed { .. } => self.evolve_step(event),
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
            SagaEvent::CancellationRequested { reason } => {
                self.cancellation_reason = Some(reason.clone());
            }
            SagaEvent::SagaCompleted { tracking_number } => {
                if tracking_number.is_some() {
                    self.tracking_number = tracking_number.clone();
                }
                self.end(SagaStatus::Completed, None);
            }
            SagaEvent::SagaCompensated { reason } => {
                self.end(SagaStatus::Compensated, Some(reason))
            }
            SagaEvent::SagaFailed { reason } => self.end(SagaStatus::Failed, Some(reason)),
            SagaEvent::SagaRetryRequested {} => self.retried(),
        }
        self
    }

    /// Evolves the state of the step an event is about, and which step is
    /// current.
    fn evolve_step(&mut self, event: &SagaEvent) {
        match event {
            SagaEvent::StepStarted { step, attempt } => {
                let state = self.step_mut(*step);
                state.status = StepStatus::Running;
                state.attempts = *attempt;
                self.current_step = Some(*step);
            }
            SagaEvent::StepSucceeded { step, detail, .. } => {
                self.step_mut(*step).status = StepStatus::Succeeded;
                if step.spec().yields_tracking_number {
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
            // Not about one step: `evolve` handles them.
            _ => {}
        }
    }

    /// The saga ends (or fails, until an operator retries it), for
    /// `reason` if given.
    fn end(&mut self, status: SagaStatus, reason: Option<&String>) {
        self.status = status;
        if let Some(reason) = reason {
            self.failure_reason = Some(reason.clone());
        }
        self.current_step = None;
    }

    /// An operator retried the failed saga: it resumes where it stopped.
    fn retried(&mut self) {
        self.status = if self.compensating {
            SagaStatus::Compensating
        } else {
            SagaStatus::Running
        };
        for state in self.steps.values_mut() {
            match state.status {
                // The compensation that failed is tried again, with fresh
                // attempts.
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
