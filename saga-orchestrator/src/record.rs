//! Reading and writing a saga's stream (`saga-<order id>`), the only record
//! of what a saga did.

use chrono::{DateTime, Utc};
use domain::Event;
use domain::saga::{PerStep, SagaEvent, SagaState, SagaStatus};
use domain::stream::saga as stream_id;
use event_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use service_kit::backoff::Backoff;
use uuid::Uuid;

/// Events read per query; a saga's stream is usually a few dozen.
const PAGE: u32 = 500;

/// A saga as its stream says it is now.
#[derive(Debug, Clone)]
pub struct SagaRecord {
    pub state: SagaState,
    pub version: u64,
    /// When each step's first attempt started (since the last operator
    /// retry): its deadline runs from there.
    pub first_started: PerStep<Option<DateTime<Utc>>>,
    /// The correlation id of the saga's first event (its placement's): every
    /// event of the saga carries it.
    pub correlation_id: Option<String>,
    /// The saga's last event, as far as this process knows: what its next
    /// event is caused by.
    pub last_event_id: Option<Uuid>,
    /// The trace context of the span that recorded the saga's last event
    /// as read (its `traceparent`), which the executor's span links to.
    pub traceparent: Option<String>,
}

impl SagaRecord {
    /// A saga whose stream holds just `events`, recorded at `at`.
    pub fn of(events: &[SagaEvent], at: DateTime<Utc>) -> Self {
        let mut loaded = Self {
            state: SagaState::default(),
            version: 0,
            first_started: PerStep::default(),
            correlation_id: None,
            last_event_id: None,
            traceparent: None,
        };
        for event in events {
            loaded.apply(event, at);
        }
        loaded.version = events.len() as u64;
        loaded
    }

    /// Evolves the state by an event recorded at `at` (the version is the
    /// caller's to move).
    pub fn apply(&mut self, event: &SagaEvent, at: DateTime<Utc>) {
        match event {
            SagaEvent::StepStarted { step, .. } => {
                self.first_started[*step].get_or_insert(at);
            }
            SagaEvent::SagaRetryRequested {} => self.first_started = PerStep::default(),
            _ => {}
        }
        self.state = std::mem::take(&mut self.state).evolve(event);
    }
}

pub async fn load(store: &EventStore, order_id: Uuid) -> anyhow::Result<SagaRecord> {
    let stream = stream_id(order_id);
    let mut loaded = SagaRecord::of(&[], Utc::now());
    let mut from = 1;
    loop {
        let events = store.read_stream(&stream, from, PAGE).await?;
        let Some(last) = events.last() else { break };
        from = last.version + 1;
        let more = events.len() == PAGE as usize;
        for recorded in &events {
            let event = SagaEvent::decode(&recorded.event_type, &recorded.data)?;
            loaded.apply(&event, recorded.recorded_at);
            loaded.version = recorded.version;
            if recorded.version == 1 {
                loaded.correlation_id = recorded.metadata["correlation_id"]
                    .as_str()
                    .map(str::to_owned);
            }
            loaded.last_event_id = Some(recorded.event_id);
            loaded.traceparent =
                service_kit::telemetry::traceparent_in(&recorded.metadata).map(str::to_owned);
        }
        if !more {
            break;
        }
    }
    Ok(loaded)
}

/// What caused the events an append writes: the correlation id of the
/// chain they belong to and the event (or command) that caused them.
#[derive(Debug, Clone)]
pub struct Cause {
    pub correlation_id: String,
    pub causation_id: String,
}

impl Cause {
    /// What the saga's next event is caused by, as `loaded` knows it: its
    /// last event, in its placement's chain; `otherwise` names the cause
    /// when no event is known.
    pub fn next_in(loaded: &SagaRecord, order_id: Uuid, otherwise: &str) -> Self {
        Self {
            correlation_id: loaded
                .correlation_id
                .clone()
                .unwrap_or_else(|| order_id.to_string()),
            causation_id: loaded
                .last_event_id
                .map_or_else(|| otherwise.to_owned(), |id| id.to_string()),
        }
    }
}

/// A saga to start: its order, its first events, and what caused them
/// (the order's placement).
pub struct Start {
    pub order_id: Uuid,
    pub events: Vec<SagaEvent>,
    pub cause: Cause,
}

/// Starts sagas, each with its first events, written together where they
/// can be (see [`EventStore::append_each`]); a saga that already exists
/// (a redelivery) is left as it is. Says, per saga, the id of its last
/// event if it was started now.
pub async fn start_all(store: &EventStore, sagas: &[Start]) -> anyhow::Result<Vec<Option<Uuid>>> {
    let appends: Vec<_> = sagas
        .iter()
        .map(|start| {
            let events = new_events(&start.events, &start.cause, None);
            vec![StreamAppend::new(
                stream_id(start.order_id),
                ExpectedVersion::NoStream,
                events,
            )]
        })
        .collect();
    let mut started = Vec::with_capacity(sagas.len());
    for (result, append) in store.append_each(&appends).await.into_iter().zip(&appends) {
        match result {
            Ok(_) => started.push(append[0].events.last().map(|event| event.event_id)),
            Err(error) if error.is_concurrency_conflict() => started.push(None),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(started)
}

/// The events as stored, with their metadata: `cause`, and as `actor` the
/// orchestrator itself, or `actor` (who asked: a token's subject) when
/// given.
fn new_events(events: &[SagaEvent], cause: &Cause, actor: Option<&str>) -> Vec<NewEvent> {
    new_events_with(events, metadata(cause, actor))
}

/// The metadata of the orchestrator's appends (see [`new_events`]), with
/// the trace context of the span appending them.
fn metadata(cause: &Cause, actor: Option<&str>) -> Metadata {
    Metadata {
        correlation_id: cause.correlation_id.clone(),
        causation_id: cause.causation_id.clone(),
        traceparent: service_kit::telemetry::current_traceparent(),
        ..Metadata::default()
    }
    .with_actor(actor.unwrap_or(crate::SERVICE))
}

fn new_events_with(events: &[SagaEvent], metadata: Metadata) -> Vec<NewEvent> {
    events
        .iter()
        .map(|event| NewEvent::new(event.event_type(), event.data(), metadata.clone()))
        .collect()
}

/// Appends events if the saga is still at `version`; the id of the last
/// one, or `None` when another writer got there first (reload and decide
/// again).
pub async fn append(
    store: &EventStore,
    order_id: Uuid,
    version: u64,
    events: &[SagaEvent],
    cause: &Cause,
) -> anyhow::Result<Option<Uuid>> {
    let events = new_events(events, cause, None);
    let last = events.last().map(|event| event.event_id);
    let expected = ExpectedVersion::at(version);
    match store
        .append(&[StreamAppend::new(stream_id(order_id), expected, events)])
        .await
    {
        Ok(_) => Ok(last),
        Err(event_store::Error::ConcurrencyConflict { .. }) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The metadata field naming the bulk retry job an operator's retry was
/// part of.
pub const JOB_ID: &str = "job_id";

/// What became of an operator's retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// `SagaRetryRequested` is recorded; the saga is to be made due.
    Recorded,
    /// No saga for that order.
    NoSaga,
    /// The saga is not failed (it is in this status): nothing recorded.
    NotFailed(SagaStatus),
}

/// Records that `actor` asked the failed saga of `order_id` to resume
/// (within bulk retry `job`, if any, named in the event's metadata), caused
/// by the saga's last event, which the retry acts on. Decided again when
/// another writer gets in first.
pub async fn retry(
    store: &EventStore,
    order_id: Uuid,
    actor: &str,
    job: Option<Uuid>,
) -> anyhow::Result<Retried> {
    for attempt in Backoff::CONTENTION.attempts() {
        let loaded = load(store, order_id).await?;
        if !loaded.state.exists {
            return Ok(Retried::NoSaga);
        }
        if loaded.state.status != SagaStatus::Failed {
            return Ok(Retried::NotFailed(loaded.state.status));
        }
        let cause = Cause::next_in(&loaded, order_id, "operator");
        let mut metadata = metadata(&cause, Some(actor));
        if let Some(job) = job {
            metadata
                .extra
                .insert(JOB_ID.into(), serde_json::Value::String(job.to_string()));
        }
        let events = new_events_with(&[SagaEvent::SagaRetryRequested {}], metadata);
        let append = StreamAppend::new(
            stream_id(order_id),
            ExpectedVersion::at(loaded.version),
            events,
        );
        match store.append(&[append]).await {
            Ok(_) => return Ok(Retried::Recorded),
            Err(event_store::Error::ConcurrencyConflict { .. }) => {
                Backoff::CONTENTION.sleep(attempt).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    anyhow::bail!("the saga of {order_id} kept changing; its retry was not recorded")
}
