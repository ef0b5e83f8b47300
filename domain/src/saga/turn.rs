//! Whose turn it is in a saga's stream: what may take effect now.

use super::{CANCELLED, SagaState, SagaStatus, SagaStep, StepStatus, code, rejection_of};
use crate::RejectionReason;

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

impl SagaState {
    /// The step a compensation undoes next: the last one that took effect
    /// or may have (compensation runs the steps backwards); `None` when
    /// nothing is left to undo.
    pub fn next_to_undo(&self) -> Option<SagaStep> {
        SagaStep::ALL
            .into_iter()
            .rev()
            .find(|step| step.can_be_undone() && self.step(*step).may_have_taken_effect())
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
            let failed = self.failed_step.unwrap_or(SagaStep::FIRST);
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
                    .values()
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
}
