//! What every step call carries and checks: the `X-Saga-*` headers, and
//! whether the saga's stream, at the call's version, says it is the call's
//! turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use domain::Event;
use domain::saga::api::header;
use domain::saga::{SagaAction, SagaEvent, SagaState, SagaStep};
use domain::stream;
use event_store::{EventStore, ExpectedVersion, StreamAppend};
use uuid::Uuid;

use crate::AppState;
use crate::commands::{saga_moved, to_new_event};
use crate::http::{ApiError, ApiResult, OrProblem, Problem, RequestContext};

/// The headers of every step call (see the module's documentation).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct SagaHeaders {
    /// The version of `saga-<order id>` the call was decided on: the call
    /// takes effect only if the stream is at it and says it is this
    /// action's turn, and its outcome is recorded there expecting it.
    #[param(rename = "X-Saga-Version", required = true)]
    x_saga_version: u64,
    /// The attempt at the step (or at undoing it), from 1; default 1.
    #[param(rename = "X-Saga-Attempt", minimum = 1)]
    x_saga_attempt: Option<u32>,
    /// Forward steps only: the step (`charge_payment`, `create_shipment`)
    /// whose start is recorded together with this one's success.
    #[param(rename = "X-Saga-Next-Step")]
    x_saga_next_step: Option<String>,
    /// The attempt at that step, from 1; default 1.
    #[param(rename = "X-Saga-Next-Attempt", minimum = 1)]
    x_saga_next_attempt: Option<u32>,
}

/// What a step call says about the saga it acts for: the version of the
/// saga's stream it was decided on and the attempt (`X-Saga-Version`,
/// `X-Saga-Attempt`), and the next step's start that goes with a forward
/// step's success (`X-Saga-Next-Step`, `X-Saga-Next-Attempt`).
#[derive(Debug, Clone, Copy)]
pub struct SagaCall {
    version: u64,
    attempt: u32,
    then: Option<(SagaStep, u32)>,
}

impl<S: Send + Sync> FromRequestParts<S> for SagaCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let headers = Headers(&parts.headers);
        let Some(version) = headers.text(header::VERSION)? else {
            return Err(bad(
                header::VERSION,
                "is required: the version of the saga's stream the call was decided on",
            ));
        };
        let version = version
            .parse()
            .map_err(|_| bad(header::VERSION, "must be a whole number"))?;
        let then = match headers.text(header::NEXT_STEP)? {
            None => None,
            Some(name) => {
                let step = SagaStep::parse(name).ok_or_else(|| {
                    let steps = SagaStep::ALL.map(SagaStep::as_str).join(", ");
                    bad(header::NEXT_STEP, format!("must be one of {steps}"))
                })?;
                Some((step, headers.attempt(header::NEXT_ATTEMPT)?))
            }
        };
        Ok(Self {
            version,
            attempt: headers.attempt(header::ATTEMPT)?,
            then,
        })
    }
}

/// A 400 naming the header that is missing or malformed.
fn bad(name: &'static str, message: impl Into<String>) -> ApiError {
    Problem::validation(StatusCode::BAD_REQUEST, name, message).into()
}

/// A step call's headers, read as text.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl Headers<'_> {
    /// The header's value, trimmed, if present.
    fn text(&self, name: &'static str) -> ApiResult<Option<&str>> {
        self.0
            .get(name)
            .map(|value| {
                value
                    .to_str()
                    .map(str::trim)
                    .map_err(|_| bad(name, "must be text"))
            })
            .transpose()
    }

    /// An attempt number (from 1); 1 when absent.
    fn attempt(&self, name: &'static str) -> ApiResult<u32> {
        let Some(value) = self.text(name)? else {
            return Ok(1);
        };
        value
            .parse()
            .ok()
            .filter(|a| *a >= 1)
            .ok_or_else(|| bad(name, "must be a whole number from 1"))
    }
}

/// Events read per query of a saga's stream; one is usually a dozen.
const SAGA_PAGE: u32 = 500;

/// The saga of `order_id` as its stream says now, and the stream's version
/// (0: no saga).
async fn load_saga(store: &EventStore, order_id: Uuid) -> ApiResult<(SagaState, u64, Cause)> {
    let stream = stream::saga(order_id);
    let mut state = SagaState::default();
    let mut version = 0;
    let mut cause = Cause::default();
    loop {
        let page = store
            .read_stream(&stream, version + 1, SAGA_PAGE)
            .await
            .or_problem()?;
        for recorded in &page {
            let event =
                SagaEvent::decode(&recorded.event_type, &recorded.data).map_err(|error| {
                    ApiError::Internal(
                        anyhow::Error::new(error)
                            .context(format!("stream {stream} version {}", recorded.version)),
                    )
                })?;
            state = state.evolve(&event);
            version = recorded.version;
            if version == 1 {
                cause.correlation_id = recorded.metadata["correlation_id"]
                    .as_str()
                    .map(str::to_owned);
            }
            cause.event_id = Some(recorded.event_id);
        }
        if page.len() < SAGA_PAGE as usize {
            return Ok((state, version, cause));
        }
    }
}

/// What a step call's effects were caused by: the saga's correlation id
/// (its placement's) and its last event at the call's version (the one
/// that started the step, or decided to confirm or end).
#[derive(Debug, Clone, Default)]
struct Cause {
    correlation_id: Option<String>,
    event_id: Option<Uuid>,
}

/// A call whose turn it is: the saga's state at the call's version, and
/// what to record there with the action's effect.
pub struct Turn {
    call: SagaCall,
    order_id: Uuid,
    stream: String,
    pub state: SagaState,
    cause: Cause,
}

impl SagaCall {
    /// Checks that the saga's stream is at this call's version and says it
    /// is `action`'s turn (409 `saga-moved`, or 409 `conflict`, otherwise).
    pub async fn turn(self, app: &AppState, order_id: Uuid, action: SagaAction) -> ApiResult<Turn> {
        // Only a forward step's success may start the step after it.
        if let Some((next, _)) = self.then {
            let follows = match action {
                SagaAction::Run(step) => step.next(),
                _ => None,
            };
            if follows != Some(next) {
                let message = match follows {
                    Some(follows) => format!("only {} follows this step", follows.as_str()),
                    None => "no step follows this one".to_owned(),
                };
                return Err(Problem::validation(
                    StatusCode::BAD_REQUEST,
                    header::NEXT_STEP,
                    message,
                )
                .into());
            }
        }
        let stream = stream::saga(order_id);
        // The saga as this process recorded it at the call's version, if it
        // did: that is what the stream holds at that version, and the
        // outcome's append expects it, so a stream that moved on since is
        // caught there (409 `saga-moved`) rather than here.
        let kept = app
            .sagas
            .at(order_id, self.version)
            .filter(|(state, _)| state.turn(action).is_ok());
        let (state, cause) = match kept {
            Some(kept) => kept,
            None => {
                let (state, version, cause) = load_saga(&app.store, order_id).await?;
                if version != self.version {
                    return Err(saga_moved(&stream).into());
                }
                // Checked on the state at the very version the outcome is
                // appended at, so the check holds when the effect is
                // written.
                if let Err(out_of_turn) = state.turn(action) {
                    return Err(Problem::conflict(format!(
                        "not this call's turn in {stream} at version {version}: {out_of_turn}; \
                         nothing was written"
                    ))
                    .into());
                }
                (state, cause)
            }
        };
        Ok(Turn {
            call: self,
            order_id,
            stream,
            state,
            cause,
        })
    }
}

impl Turn {
    /// The order whose saga it is.
    pub fn order_id(&self) -> Uuid {
        self.order_id
    }

    /// Keeps the saga as `record`, now appended, left it, so that the next
    /// call at its new version (the saga's next step, usually) need not
    /// read the stream.
    pub fn recorded(&self, sagas: &KeptSagas, record: &StreamAppend) {
        let mut state = self.state.clone();
        for event in &record.events {
            match SagaEvent::decode(&event.event_type, &event.data) {
                Ok(event) => state = state.evolve(&event),
                // Not one of the saga's events: keep nothing.
                Err(_) => return,
            }
        }
        let cause = Cause {
            correlation_id: self.cause.correlation_id.clone(),
            event_id: record.events.last().map(|event| event.event_id),
        };
        let version = self.call.version + record.events.len() as u64;
        sagas.keep(self.order_id, version, state, cause);
    }

    /// The request's context for what the call appends: its events belong
    /// to the saga's causal chain (the placement's correlation id, caused
    /// by the saga's event at the call's version), whoever asked.
    pub fn context(&self, ctx: RequestContext) -> RequestContext {
        let Cause {
            correlation_id,
            event_id,
        } = self.cause.clone();
        ctx.caused_by(correlation_id, event_id.map(|id| id.to_string()))
    }

    /// The append that records `outcome` (made with the call's attempt) at
    /// the call's version, followed, after a forward step's success, by the
    /// next step's start when asked for; it goes first in the transaction
    /// of the action's effect.
    pub fn record(
        &self,
        ctx: &RequestContext,
        outcome: impl FnOnce(u32) -> SagaEvent,
    ) -> StreamAppend {
        let mut events = vec![outcome(self.call.attempt)];
        if let Some((step, attempt)) = self.call.then {
            events.push(SagaEvent::StepStarted { step, attempt });
        }
        let events = events
            .iter()
            .enumerate()
            .map(|(i, event)| to_new_event(event, ctx, &self.stream, i))
            .collect();
        StreamAppend::new(
            self.stream.clone(),
            ExpectedVersion::at(self.call.version),
            events,
        )
    }
}

/// Sagas as this process last recorded them: the state and cause at the
/// version its last recorded outcome left each one at. A saga's stream at a
/// given version never changes, so a kept saga is exactly what reading the
/// stream up to that version gives; it cannot say whether the stream has
/// moved on since, which the outcome's append, expecting that version,
/// finds out. A call whose turn the kept state denies reads the stream,
/// so that every refusal is one the stream gives now.
#[derive(Clone, Default)]
pub struct KeptSagas {
    kept: Arc<Mutex<HashMap<Uuid, KeptSaga>>>,
}

struct KeptSaga {
    version: u64,
    state: SagaState,
    cause: Cause,
}

/// Sagas kept; when full, all are forgotten (each costs one read).
const KEPT_SAGAS: usize = 20_000;

impl KeptSagas {
    /// The kept saga of `order_id`, if it is kept at `version`.
    fn at(&self, order_id: Uuid, version: u64) -> Option<(SagaState, Cause)> {
        let kept = self.lock();
        let saga = kept.get(&order_id).filter(|saga| saga.version == version)?;
        Some((saga.state.clone(), saga.cause.clone()))
    }

    /// Keeps the saga of `order_id` at `version`, unless a later version
    /// is kept already.
    fn keep(&self, order_id: Uuid, version: u64, state: SagaState, cause: Cause) {
        let mut kept = self.lock();
        if kept
            .get(&order_id)
            .is_some_and(|saga| saga.version >= version)
        {
            return;
        }
        if kept.len() >= KEPT_SAGAS {
            kept.clear();
        }
        kept.insert(
            order_id,
            KeptSaga {
                version,
                state,
                cause,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, KeptSaga>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
