//! Reading and writing a saga's stream (`saga-<order id>`), the only record
//! of what a saga did.

use chrono::{DateTime, Utc};
use domain::Event;
use domain::saga::{SagaEvent, SagaState, stream_id};
use event_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use uuid::Uuid;

/// Events read per query; a saga's stream is usually a few dozen.
const PAGE: u32 = 500;

/// A saga as its stream says it is now.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub state: SagaState,
    pub version: u64,
    /// When each step's first attempt started (since the last operator
    /// retry): its deadline runs from there.
    pub first_started: [Option<DateTime<Utc>>; 3],
}

pub async fn load(store: &EventStore, order_id: Uuid) -> anyhow::Result<Loaded> {
    let stream = stream_id(order_id);
    let mut loaded = Loaded {
        state: SagaState::default(),
        version: 0,
        first_started: [None; 3],
    };
    let mut from = 1;
    loop {
        let events = store.read_stream(&stream, from, PAGE).await?;
        let Some(last) = events.last() else { break };
        from = last.version + 1;
        let more = events.len() == PAGE as usize;
        for recorded in &events {
            let event = SagaEvent::decode(&recorded.event_type, &recorded.data)?;
            match &event {
                SagaEvent::StepStarted { step, .. } => {
                    loaded.first_started[*step as usize].get_or_insert(recorded.recorded_at);
                }
                SagaEvent::SagaRetryRequested {} => loaded.first_started = [None; 3],
                _ => {}
            }
            loaded.state = std::mem::take(&mut loaded.state).evolve(&event);
            loaded.version = recorded.version;
        }
        if !more {
            break;
        }
    }
    Ok(loaded)
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
    let expected = if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    };
    let metadata = Metadata {
        correlation_id: order_id.to_string(),
        causation_id: causation_id.to_owned(),
        ..Metadata::default()
    };
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
