//! Carrying out a command on one aggregate: load its events, decide, append
//! with the version it was loaded at, and on a lost race start over (a
//! bounded number of times, with jitter), unless the client pinned the
//! version with `If-Match`.
//!
//! This process's commands on one stream take turns ([`crate::warm`]), so
//! they do not race each other; a command on a stream this process appended
//! to last is decided on the state it kept instead of a load, where a stale
//! state cannot do harm.
//!
//! `load` reads an aggregate (from its snapshot when there is one);
//! `races` counts and spaces the attempts of every decide-and-append loop.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::{Aggregate, Event};
use event_store::{Appended, EventStore, ExpectedVersion, NewEvent, StreamAppend};
use serde::Serialize;
use serde::de::DeserializeOwned;
use service_kit::backoff::Backoff;

use crate::AppState;
use crate::http::problem::store_error;
use crate::http::{ApiError, ApiResult, OrProblem, Problem, RequestContext};
use crate::warm::Claim;

mod load;
mod races;

use load::snapshot_if_due;
pub use load::{Loaded, load, load_as_of, load_until};
pub use races::{LostRaces, Races};

/// The result of a command.
pub struct Executed<A: Aggregate> {
    pub state: A::State,
    pub version: u64,
    /// Empty when the command changed nothing.
    pub appended: Vec<Appended>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl<A> Executed<A>
where
    A: Aggregate + 'static,
    A::State: Serialize + DeserializeOwned + Clone + Send,
{
    /// The result once `events`, decided on `loaded`, are `appended`; the
    /// state after them is kept warm for the next command.
    async fn kept_warm(
        app: &AppState,
        claim: &mut Claim,
        loaded: Loaded<A>,
        events: &[A::Event],
        appended: Vec<Appended>,
    ) -> Self {
        let version = appended.last().map_or(loaded.version, |a| a.version);
        let after = loaded.evolved(events, version, Utc::now());
        let executed = Executed {
            state: after.state.clone(),
            version,
            appended,
            created_at: after.created_at,
            updated_at: after.updated_at,
        };
        keep_warm(app, claim, after).await;
        executed
    }
}

impl<A: Aggregate> Executed<A> {
    /// A command that changed nothing: the state as loaded.
    fn unchanged(loaded: Loaded<A>) -> Self {
        Self {
            state: loaded.state,
            version: loaded.version,
            appended: Vec::new(),
            created_at: loaded.created_at,
            updated_at: loaded.updated_at,
        }
    }
}

/// Decides `command` against the current state of `stream_id` and appends
/// what it decides. `command` may look at the state (or refuse).
///
/// `record`, if any, is appended in the same transaction, first, also when
/// the command changes nothing: a saga step's outcome recorded in the
/// saga's stream, at the version the saga expects. If that stream moved,
/// nothing is written and the answer is [`saga_moved`].
pub async fn execute<A, F>(
    app: &AppState,
    stream_id: &str,
    ctx: &RequestContext,
    record: Option<&StreamAppend>,
    command: F,
) -> ApiResult<Executed<A>>
where
    A: Aggregate + 'static,
    A::State: Serialize + DeserializeOwned + Clone + Send,
    F: Fn(&A::State) -> ApiResult<A::Command>,
{
    decide_and_append(app, stream_id, ctx, command, false, record).await
}

/// Carries out a command that creates `stream_id`, a stream named by a new
/// id: the first attempt decides against the empty state and appends
/// expecting no stream, without reading it first. A repeat whose events
/// are already stored gets the original result from the event store; if
/// the stream exists otherwise, the next attempts decide against what is
/// stored, like [`execute`] (and the domain refuses a second creation).
/// `record` as for [`execute`].
pub async fn execute_new<A, F>(
    app: &AppState,
    stream_id: &str,
    ctx: &RequestContext,
    record: Option<&StreamAppend>,
    command: F,
) -> ApiResult<Executed<A>>
where
    A: Aggregate + 'static,
    A::State: Serialize + DeserializeOwned + Clone + Send,
    F: Fn(&A::State) -> ApiResult<A::Command>,
{
    // `If-Match` needs the stored version.
    let assume_new = ctx.if_match.is_none();
    decide_and_append(app, stream_id, ctx, command, assume_new, record).await
}

/// The loop behind [`execute`] and [`execute_new`]: claim the stream (wait
/// for this process's commands on it before), take its state from the claim
/// or load it (unless the first attempt may assume a
/// new stream), decide, append with that version (and `record` before
/// it), keep the state after it warm, and on a lost race start over.
async fn decide_and_append<A, F>(
    app: &AppState,
    stream_id: &str,
    ctx: &RequestContext,
    command: F,
    mut assume_new: bool,
    record: Option<&StreamAppend>,
) -> ApiResult<Executed<A>>
where
    A: Aggregate + 'static,
    A::State: Serialize + DeserializeOwned + Clone + Send,
    F: Fn(&A::State) -> ApiResult<A::Command>,
{
    let store = &app.store;
    // This process's commands on the stream take turns (see `warm`).
    let mut claim = app.warm.claim(stream_id).await;
    let mut races = Races::new(
        Backoff::CONTENTION,
        format!("{stream_id} kept changing"),
        &app.lost_races,
    );
    loop {
        let attempt = races.next().await?;
        let assumed = std::mem::take(&mut assume_new);
        let (loaded, events) = decide_attempt(app, &mut claim, ctx, &command, assumed).await?;
        if events.is_empty() {
            if assumed {
                // Nothing to create: answer from what is stored.
                continue;
            }
            // Nothing to change, but an outcome to record.
            if record.is_some() {
                append_recording(store, record, Vec::new()).await?;
            }
            return Ok(Executed::unchanged(loaded));
        }
        let expected = ExpectedVersion::at(loaded.version);
        let new_events = events
            .iter()
            .enumerate()
            .map(|(i, event)| to_new_event(event, ctx, stream_id, i))
            .collect();
        let appends = vec![StreamAppend::new(stream_id, expected, new_events)];
        let Some(appended) = append_recording(store, record, appends).await? else {
            if let Some(required) = ctx.if_match {
                return Err(stale(required, required + 1));
            }
            // A stream assumed new that exists is not a race: look at it
            // at once.
            if !assumed {
                tracing::debug!(stream_id, attempt, "lost a race; deciding again");
                races.lost();
            }
            continue;
        };
        return Ok(Executed::kept_warm(app, &mut claim, loaded, &events, appended).await);
    }
}

/// One attempt's decision: on a stream assumed new, on its empty state;
/// otherwise on the state kept warm or a fresh load (see
/// [`decide_fresh_unless_appending`]), checked against `If-Match`.
async fn decide_attempt<A, F>(
    app: &AppState,
    claim: &mut Claim,
    ctx: &RequestContext,
    command: &F,
    assume_new: bool,
) -> ApiResult<(Loaded<A>, Vec<A::Event>)>
where
    A: Aggregate + 'static,
    A::State: Serialize + DeserializeOwned + Clone + Send,
    F: Fn(&A::State) -> ApiResult<A::Command>,
{
    if assume_new {
        let loaded = Loaded::<A>::new();
        let events = decide::<A>(&loaded.state, command)?;
        return Ok((loaded, events));
    }
    // `If-Match` is checked against the stored version.
    let kept = match ctx.if_match {
        None => claim.take::<Loaded<A>>(),
        Some(_) => None,
    };
    let (loaded, events) =
        decide_fresh_unless_appending(&app.store, claim.stream_id(), kept, command).await?;
    if let Some(required) = ctx.if_match
        && required != loaded.version
    {
        return Err(stale(required, loaded.version));
    }
    Ok((loaded, events?))
}

/// Keeps `loaded`, the state a command just appended, warm for the next
/// command on the claimed stream, snapshotting it first if that is due (no
/// load will).
pub async fn keep_warm<A>(app: &AppState, claim: &mut Claim, mut loaded: Loaded<A>)
where
    A: Aggregate + 'static,
    A::State: Serialize + Send,
{
    snapshot_if_due(&app.store, claim.stream_id(), &mut loaded).await;
    claim.keep(loaded.version, loaded);
}

/// What `command` decides on `state` (its events, or why it is refused).
fn decide<A: Aggregate>(
    state: &A::State,
    command: &impl Fn(&A::State) -> ApiResult<A::Command>,
) -> ApiResult<Vec<A::Event>> {
    A::decide(state, command(state)?).or_problem()
}

/// Decides `command` on `kept` (a state taken from a [`Claim`]) if there is
/// one and it decides events to append, whose append checks that the
/// stream has not moved; otherwise, on the stream as loaded now: a refusal
/// or a command that changes nothing is never decided on a kept state,
/// which may be stale, alone. The outer error is a failed load, the inner
/// one the decision's.
pub async fn decide_fresh_unless_appending<A, F>(
    store: &EventStore,
    stream_id: &str,
    kept: Option<Loaded<A>>,
    command: &F,
) -> ApiResult<(Loaded<A>, ApiResult<Vec<A::Event>>)>
where
    A: Aggregate,
    A::State: Serialize + DeserializeOwned,
    F: Fn(&A::State) -> ApiResult<A::Command>,
{
    if let Some(kept) = kept {
        let decided = decide::<A>(&kept.state, command);
        if decided.as_ref().is_ok_and(|events| !events.is_empty()) {
            return Ok((kept, decided));
        }
    }
    let loaded = load::<A>(store, stream_id).await?;
    let decided = decide::<A>(&loaded.state, command);
    Ok((loaded, decided))
}

/// Appends `record` (if any) and then `appends`, in one transaction.
/// `None` when a stream of `appends` moved (decide again); a conflict on
/// `record`'s stream is the [`saga_moved`] problem instead, never retried:
/// the recorder decided on a state that is gone.
pub async fn append_recording(
    store: &EventStore,
    record: Option<&StreamAppend>,
    appends: Vec<StreamAppend>,
) -> ApiResult<Option<Vec<Appended>>> {
    let all: Vec<StreamAppend> = record.cloned().into_iter().chain(appends).collect();
    match store.append(&all).await {
        Ok(appended) => Ok(Some(appended)),
        Err(event_store::Error::ConcurrencyConflict { stream_id, .. })
            if record.is_some_and(|r| r.stream_id == stream_id) =>
        {
            Err(saga_moved(&stream_id).into())
        }
        Err(error) if error.is_concurrency_conflict() => Ok(None),
        Err(error) => Err(store_error(error)),
    }
}

/// A step whose outcome was to be recorded at a version of its saga's
/// stream that is gone (a cancellation or another attempt got in): nothing
/// was written. Not `Retry-After`: the same request will never succeed.
pub fn saga_moved(stream_id: &str) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        domain::saga::api::problem::SAGA_MOVED,
        "The saga moved on",
        format!(
            "{stream_id} is no longer at the version this step was decided on; nothing was written"
        ),
    )
}

/// The `index`-th event a command appends to `stream_id`, with its
/// metadata and an id derived from the request (see
/// [`RequestContext::event_id`]).
pub fn to_new_event<E: Event>(
    event: &E,
    ctx: &RequestContext,
    stream_id: &str,
    index: usize,
) -> NewEvent {
    NewEvent::new(event.event_type(), event.data(), ctx.metadata())
        .with_schema_version(event.schema_version())
        .with_id(ctx.event_id(stream_id, index))
}

fn stale(required: u64, actual: u64) -> ApiError {
    Problem::precondition_failed(format!(
        "If-Match requires version {required}, but the aggregate is at version {actual}"
    ))
    .into()
}
