//! The order fulfilment saga's record: every transition the orchestrator
//! makes is an event in stream `saga-<order uuid>`, and [`SagaState`] is
//! what those events say about the saga now. The orchestrator decides what
//! to do next from this state; the projector builds the saga views from the
//! same events (adding the times the event store records).
//!
//! Nothing about a saga lives only in memory: a restarted orchestrator folds
//! the stream and carries on from the state it finds.
//!
//! - `steps`: the steps, declared once, each with its row ([`StepSpec`]);
//! - `state`: [`SagaState`], folded from the events;
//! - `turn`: whose turn it is in a saga's stream ([`SagaState::turn`], with
//!   [`SagaState::next_to_undo`] and [`SagaState::ending`]), which the
//!   orchestrator decides its next call from and command-service checks
//!   before carrying a call out, so both ask the same code;
//! - `api`: the step API's paths, headers and problem types, for its server
//!   (command-service) and its client (the orchestrator).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::wire::event_names;

pub mod api;
mod state;
mod steps;
#[cfg(test)]
mod tests;
mod turn;

pub use state::{SagaState, StepState};
pub use steps::{Blank, PerStep, SagaStep, StepSpec, code, refusal, rejection_of};
pub use turn::{Ending, OutOfTurn, SagaAction};

/// The saga's stream id: `saga-<order uuid>` (see [`crate::stream`]).
pub use crate::stream::saga as stream_id;

/// The reason a cancellation gives its compensation, and records when it
/// ends (`SagaCompensated`).
pub const CANCELLED: &str = "cancelled";

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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
