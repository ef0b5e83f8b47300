//! Reading and writing a saga's stream (`saga-<order id>`), the only record
//! of what a saga did.

use chrono::{DateTime, Utc};
use domain::Event;
use domain::saga::{PerStep, SagaEvent, SagaState};
use domain::stream::saga as stream_id;
use event_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
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
}

impl SagaRecord {
    /// A saga whose stream holds just `events`, recorded at `at`.
    pub fn of(events: &[SagaEvent], at: DateTime<Utc>) -> Self {
        let mut loaded = Self {
            state: SagaState::default(),
            version: 0,
            first_started: PerStep::default(),
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
        }
        if !more {
            break;
        }
    }
    Ok(loaded)
}

/// Starts sagas, each with its first events, written together where they
/// can be (see [`EventStore::append_each`]); a saga that already exists
/// (a redelivery) is left as it is. Says, per saga, whether it was started
/// now.
pub async fn start_all(
    store: &EventStore,
    sagas: &[(Uuid, Vec<SagaEvent>, String)],
) -> anyhow::Result<Vec<bool>> {
    let appends: Vec<_> = sagas
        .iter()
        .map(|(order_id, events, causation_id)| {
            let metadata = metadata(*order_id, causation_id);
            let events = events
                .iter()
                .map(|event| NewEvent::new(event.event_type(), event.data(), metadata.clone()))
                .collect();
            vec![StreamAppend::new(
                stream_id(*order_id),
                ExpectedVersion::NoStream,
                events,
            )]
        })
        .collect();
    let mut started = Vec::with_capacity(sagas.len());
    for result in store.append_each(&appends).await {
        match result {
            Ok(_) => started.push(true),
            Err(error) if error.is_concurrency_conflict() => started.push(false),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(started)
}

/// The metadata of the orchestrator's own appends: the saga's order as
/// the correlation, and the orchestrator itself as the `actor` (an
/// operator's retry names the operator instead: [`append_by`]).
fn metadata(order_id: Uuid, causation_id: &str) -> Metadata {
    Metadata {
        correlation_id: order_id.to_string(),
        causation_id: causation_id.to_owned(),
        ..Metadata::default()
    }
    .with_actor(crate::SERVICE)
}

/// Appends events if the saga is still at `version`; false when another
/// writer got there first (reload and decide again).
pub async fn append(
    store: &EventStore,
    order_id: Uuid,
    version: u64,
    events: &[SagaEvent],
    causation_id: &str,
) -> anyhow::Result<bool> {
    append_by(store, order_id, version, events, causation_id, None).await
}

/// [`append`], recording `actor` (who asked: a token's subject) in the
/// events' metadata.
pub async fn append_by(
    store: &EventStore,
    order_id: Uuid,
    version: u64,
    events: &[SagaEvent],
    causation_id: &str,
    actor: Option<&str>,
) -> anyhow::Result<bool> {
    let expected = ExpectedVersion::at(version);
    let mut metadata = metadata(order_id, causation_id);
    if let Some(actor) = actor {
        metadata = metadata.with_actor(actor);
    }
    let events = events
        .iter()
        .map(|event| NewEvent::new(event.event_type(), event.data(), metadata.clone()))
        .collect();
    match store
        .append(&[StreamAppend::new(stream_id(order_id), expected, events)])
        .await
    {
        Ok(_) => Ok(true),
        Err(event_store::Error::ConcurrencyConflict { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}
