//! `rm_sagas`: each order fulfilment saga, as a summary (columns, for the
//! lists) and as the contract's saga detail (a document served as is),
//! both folded from the saga's own stream.

use chrono::{DateTime, Utc};
use domain::Event;
use domain::EventData;
use domain::saga::{PerStep, SAGA_TYPE, SagaEvent, SagaState, SagaStatus, SagaStep};
use event_store::RecordedEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApplyError, Declaration, View};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRow {
    pub order_id: Uuid,
    pub status: SagaStatus,
    pub current_step: Option<SagaStep>,
    pub failure_reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The most attempts any step has had, at it or at undoing it (the
    /// list's `min_attempts` filter).
    pub attempts: i32,
    /// The failure reason and each step's last error, a line each (what the
    /// list's `failure` filter searches).
    pub errors: String,
    pub state: SagaDoc,
    pub detail: Value,
    pub version: u64,
}

/// What the next event is folded into: the domain's saga state plus what
/// only the views need (when each step started and finished, the history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaDoc {
    pub saga: SagaState,
    pub times: PerStep<StepTimes>,
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimes {
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub event: String,
    pub step: Option<SagaStep>,
    pub detail: Option<String>,
}

impl View for SagaRow {
    const DECLARATION: Declaration = read_models::SAGAS;

    fn version(&self) -> u64 {
        self.version
    }

    fn create<D: EventData>(event: &RecordedEvent<D>) -> Result<Self, ApplyError> {
        let decoded = SagaEvent::decode(&event.event_type, &event.data)?;
        let SagaEvent::SagaStarted { order_id, .. } = &decoded else {
            return Err(ApplyError::out_of_place(event, "no SagaStarted before"));
        };
        let mut row = SagaRow {
            order_id: *order_id,
            status: SagaStatus::Running,
            current_step: None,
            failure_reason: None,
            started_at: event.recorded_at,
            updated_at: event.recorded_at,
            finished_at: None,
            attempts: 0,
            errors: String::new(),
            state: SagaDoc {
                saga: SagaState::default(),
                times: Default::default(),
                history: Vec::new(),
            },
            detail: Value::Null,
            version: 0,
        };
        row.fold(&decoded, event);
        Ok(row)
    }

    fn update<D: EventData>(&mut self, event: &RecordedEvent<D>) -> Result<(), ApplyError> {
        let decoded = SagaEvent::decode(&event.event_type, &event.data)?;
        if matches!(decoded, SagaEvent::SagaStarted { .. }) {
            return Err(ApplyError::out_of_place(event, "the saga exists"));
        }
        self.fold(&decoded, event);
        Ok(())
    }
}

impl SagaRow {
    fn fold<D>(&mut self, decoded: &SagaEvent, event: &RecordedEvent<D>) {
        let at = event.recorded_at;
        let doc = &mut self.state;
        doc.saga = std::mem::take(&mut doc.saga).evolve(decoded);
        if let Some((step, started, finished)) = step_timing(decoded) {
            let times = &mut doc.times[step];
            if started {
                times.started_at.get_or_insert(at);
                times.finished_at = None;
            }
            if finished {
                times.finished_at = Some(at);
            }
        }
        let (step, detail) = describe(decoded);
        doc.history.push(HistoryEntry {
            at,
            event: snake_case(decoded.event_type()),
            step,
            detail,
        });

        let saga = &doc.saga;
        self.status = saga.status;
        self.current_step = saga.current_step;
        self.failure_reason = saga.failure_reason.clone();
        self.attempts = saga
            .steps
            .values()
            .map(|step| step.attempts.max(step.compensation_attempts))
            .max()
            .unwrap_or(0)
            .try_into()
            .unwrap_or(i32::MAX);
        self.errors = saga
            .failure_reason
            .iter()
            .chain(
                saga.steps
                    .values()
                    .filter_map(|step| step.last_error.as_ref()),
            )
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        self.updated_at = at;
        self.finished_at = saga.status.is_terminal().then_some(at);
        self.version = event.version;
        self.detail = render(self);
    }
}

/// Which step an event starts or finishes, if any: (step, starts, finishes).
fn step_timing(event: &SagaEvent) -> Option<(SagaStep, bool, bool)> {
    match event {
        SagaEvent::StepStarted { step, .. } | SagaEvent::StepCompensationStarted { step, .. } => {
            Some((*step, true, false))
        }
        SagaEvent::StepSucceeded { step, .. } | SagaEvent::StepCompensated { step, .. } => {
            Some((*step, false, true))
        }
        SagaEvent::StepFailed {
            step,
            retryable: false,
            ..
        }
        | SagaEvent::StepCompensationFailed {
            step,
            retryable: false,
            ..
        } => Some((*step, false, true)),
        _ => None,
    }
}

/// The step an event is about and a line saying what happened.
fn describe(event: &SagaEvent) -> (Option<SagaStep>, Option<String>) {
    match event {
        SagaEvent::SagaStarted { total_cents, .. } => {
            (None, Some(format!("order total {total_cents} cents")))
        }
        SagaEvent::StepStarted { step, attempt }
        | SagaEvent::StepCompensationStarted { step, attempt }
        | SagaEvent::StepCompensated { step, attempt } => {
            (Some(*step), Some(format!("attempt {attempt}")))
        }
        SagaEvent::StepSucceeded {
            step,
            attempt,
            detail,
        } => (Some(*step), Some(succeeded(*attempt, detail.as_deref()))),
        SagaEvent::StepFailed {
            step,
            attempt,
            error,
            retryable,
        }
        | SagaEvent::StepCompensationFailed {
            step,
            attempt,
            error,
            retryable,
            ..
        } => (Some(*step), Some(failed(*attempt, error, *retryable))),
        SagaEvent::RetryScheduled {
            step,
            attempt,
            compensation,
            retry_at,
            ..
        } => (
            Some(*step),
            Some(retry_scheduled(*attempt, *compensation, retry_at)),
        ),
        SagaEvent::CompensationStarted { reason }
        | SagaEvent::CancellationRequested { reason }
        | SagaEvent::SagaCompensated { reason }
        | SagaEvent::SagaFailed { reason } => (None, Some(reason.clone())),
        SagaEvent::SagaCompleted { tracking_number } => (None, tracking_number.clone()),
        SagaEvent::SagaRetryRequested {} => (None, None),
    }
}

/// A succeeded attempt, with what it produced if anything.
fn succeeded(attempt: u32, detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("attempt {attempt}: {detail}"),
        None => format!("attempt {attempt}"),
    }
}

/// A failed attempt (of a step or of its compensation), saying whether
/// another will follow.
fn failed(attempt: u32, error: &str, retryable: bool) -> String {
    let retry = if retryable { " (will retry)" } else { "" };
    format!("attempt {attempt}: {error}{retry}")
}

/// When the next attempt at a step, or at undoing it, will start.
fn retry_scheduled(attempt: u32, compensation: bool, retry_at: &str) -> String {
    let what = if compensation { "compensation" } else { "step" };
    format!("{what} attempt {attempt} at {retry_at}")
}

/// `StepCompensationStarted` → `step_compensation_started`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The contract's saga detail.
fn render(row: &SagaRow) -> Value {
    let doc = &row.state;
    let steps: Vec<Value> = doc
        .saga
        .steps
        .iter()
        .map(|(name, step)| {
            let times = &doc.times[name];
            json!({
                "name": name.as_str(),
                "status": step.status.as_str(),
                "attempts": step.attempts,
                "compensation_attempts": step.compensation_attempts,
                "started_at": times.started_at,
                "finished_at": times.finished_at,
                "last_error": step.last_error,
            })
        })
        .collect();
    let history: Vec<Value> = doc
        .history
        .iter()
        .map(|entry| {
            json!({
                "at": entry.at,
                "event": entry.event,
                "step": entry.step.map(SagaStep::as_str),
                "detail": entry.detail,
            })
        })
        .collect();
    json!({
        "saga_id": domain::saga::stream_id(row.order_id),
        "order_id": row.order_id,
        "type": SAGA_TYPE,
        "status": row.status.as_str(),
        "current_step": row.current_step.map(SagaStep::as_str),
        "failure_reason": row.failure_reason,
        "steps": steps,
        "history": history,
        "started_at": row.started_at,
        "updated_at": row.updated_at,
        "finished_at": row.finished_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::testing::{at, fold, recorded};

    #[test]
    fn a_rejected_saga_shows_each_step_its_attempts_errors_and_history() {
        let order_id = Uuid::from_u128(5);
        let stream = domain::saga::stream_id(order_id);
        let events = [
            SagaEvent::SagaStarted {
                order_id,
                customer_id: Uuid::from_u128(6),
                total_cents: 1_800,
            },
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
        ];
        let recorded: Vec<_> = (1..)
            .zip(&events)
            .map(|(v, e)| recorded(&stream, v, e))
            .collect();
        let row: SagaRow = fold(&recorded);

        assert_eq!(row.status, SagaStatus::Compensated);
        assert_eq!(row.finished_at, Some(at(9)));
        let detail = &row.detail;
        assert_eq!(detail["saga_id"], stream);
        assert_eq!(detail["type"], "order_fulfilment");
        assert_eq!(detail["status"], "compensated");
        assert_eq!(detail["failure_reason"], "payment_declined");
        assert_eq!(detail["current_step"], Value::Null);
        let steps = detail["steps"].as_array().unwrap();
        assert_eq!(steps[0]["name"], "reserve_inventory");
        assert_eq!(steps[0]["status"], "compensated");
        assert_eq!(steps[0]["started_at"], json!(at(2)));
        assert_eq!(steps[0]["finished_at"], json!(at(8)));
        assert_eq!(steps[1]["status"], "failed");
        assert_eq!(steps[1]["attempts"], 1);
        assert_eq!(steps[1]["last_error"], "payment_declined");
        assert_eq!(steps[2]["status"], "pending");
        assert_eq!(steps[2]["started_at"], Value::Null);
        let history = detail["history"].as_array().unwrap();
        assert_eq!(history.len(), 9);
        assert_eq!(history[4]["event"], "step_failed");
        assert_eq!(history[4]["step"], "charge_payment");
        assert_eq!(history[8]["event"], "saga_compensated");
    }

    #[test]
    fn a_running_saga_names_its_current_step_and_has_not_finished() {
        let order_id = Uuid::from_u128(5);
        let stream = domain::saga::stream_id(order_id);
        let row: SagaRow = fold(&[
            recorded(
                &stream,
                1,
                &SagaEvent::SagaStarted {
                    order_id,
                    customer_id: Uuid::from_u128(6),
                    total_cents: 100,
                },
            ),
            recorded(
                &stream,
                2,
                &SagaEvent::StepStarted {
                    step: SagaStep::ReserveInventory,
                    attempt: 1,
                },
            ),
        ]);
        assert_eq!(row.detail["status"], "running");
        assert_eq!(row.detail["current_step"], "reserve_inventory");
        assert_eq!(row.detail["finished_at"], Value::Null);
    }
}
