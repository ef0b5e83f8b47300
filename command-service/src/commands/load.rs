//! Loading an aggregate from its stream. Loading starts from the stream's
//! snapshot when there is one, so a long stream (a popular product gets an
//! event per reservation) costs one snapshot and fewer than
//! [`SNAPSHOT_EVERY`] events, however long it grows.

use chrono::{DateTime, Utc};
use domain::{Aggregate, Event};
use event_store::{EventStore, FromSnapshot, RecordedEvent, Snapshot};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::http::{ApiError, ApiResult, OrProblem};

const PAGE: u32 = 1000;

/// A load that replayed this many events after the stream's snapshot saves
/// a new one.
pub const SNAPSHOT_EVERY: u64 = 100;

/// Bump when the meaning of any aggregate's state changes: snapshots of the
/// older shape are then ignored and states are folded from the events again.
const SNAPSHOT_SCHEMA: i32 = 1;

/// What a snapshot holds: the state and the times the responses show.
#[derive(Serialize, Deserialize)]
struct Snapshotted<S> {
    state: S,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

/// An aggregate as loaded from its stream.
pub struct Loaded<A: Aggregate> {
    pub state: A::State,
    /// The stream's version (0: no events).
    pub version: u64,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The version of the stream's latest snapshot known here (0: none).
    pub snapshot_version: u64,
}

impl<A: Aggregate> Loaded<A> {
    pub(super) fn new() -> Self {
        Self {
            state: A::State::default(),
            version: 0,
            created_at: None,
            updated_at: None,
            snapshot_version: 0,
        }
    }

    /// The state after `events` were appended, which took the stream to
    /// `version` at `now`.
    pub fn evolved(self, events: &[A::Event], version: u64, now: DateTime<Utc>) -> Self {
        Self {
            state: events.iter().fold(self.state, A::evolve),
            version,
            created_at: self.created_at.or(Some(now)),
            updated_at: Some(now),
            snapshot_version: self.snapshot_version,
        }
    }

    fn apply(mut self, recorded: &RecordedEvent) -> ApiResult<Self> {
        let event = A::Event::decode(&recorded.event_type, &recorded.data).map_err(|error| {
            ApiError::Internal(anyhow::Error::new(error).context(format!(
                "stream {} version {}",
                recorded.stream_id, recorded.version
            )))
        })?;
        self.state = A::evolve(self.state, &event);
        self.version = recorded.version;
        self.created_at.get_or_insert(recorded.recorded_at);
        self.updated_at = Some(recorded.recorded_at);
        Ok(self)
    }
}

/// The aggregate as it is now: its snapshot, if any, plus the events after
/// it. Saves a new snapshot when the events after the old one have piled
/// up.
pub async fn load<A>(store: &EventStore, stream_id: &str) -> ApiResult<Loaded<A>>
where
    A: Aggregate,
    A::State: Serialize + DeserializeOwned,
{
    // The snapshot and the first page of events after it, in one query.
    let FromSnapshot { snapshot, events } = store
        .read_stream_from_snapshot(stream_id, A::SNAPSHOT_TYPE, SNAPSHOT_SCHEMA, PAGE)
        .await
        .or_problem()?;
    let start = match snapshot {
        None => Some(Loaded::new()),
        Some(snapshot) => match serde_json::from_value::<Snapshotted<A::State>>(snapshot.state) {
            Ok(saved) => Some(Loaded {
                state: saved.state,
                version: snapshot.version,
                created_at: saved.created_at,
                updated_at: saved.updated_at,
                snapshot_version: snapshot.version,
            }),
            Err(error) => {
                tracing::warn!(%error, stream_id, "a snapshot does not fit the state; folding the whole stream");
                None
            }
        },
    };
    let mut loaded = match start {
        Some(mut loaded) => {
            for recorded in &events {
                loaded = loaded.apply(recorded)?;
            }
            // A full first page leaves more to read.
            if events.len() == PAGE as usize {
                loaded = fold_until(store, stream_id, loaded, u64::MAX).await?;
            }
            loaded
        }
        None => fold_until(store, stream_id, Loaded::new(), u64::MAX).await?,
    };
    snapshot_if_due(store, stream_id, &mut loaded).await;
    Ok(loaded)
}

/// Saves a snapshot of `loaded` if [`SNAPSHOT_EVERY`] events or more came
/// after the latest one, so that a load never folds many more than that:
/// after a load, and after an append on a state kept warm (which no load
/// sees).
pub(super) async fn snapshot_if_due<A>(store: &EventStore, stream_id: &str, loaded: &mut Loaded<A>)
where
    A: Aggregate,
    A::State: Serialize,
{
    if loaded.version - loaded.snapshot_version < SNAPSHOT_EVERY {
        return;
    }
    let saved = Snapshotted {
        state: &loaded.state,
        created_at: loaded.created_at,
        updated_at: loaded.updated_at,
    };
    match serde_json::to_value(&saved) {
        Ok(state) => {
            let snapshot = Snapshot {
                stream_id: stream_id.to_owned(),
                version: loaded.version,
                state_type: A::SNAPSHOT_TYPE.to_owned(),
                schema_version: SNAPSHOT_SCHEMA,
                state,
            };
            // A snapshot not saved only makes the next load longer.
            match store.save_snapshot(&snapshot).await {
                Ok(()) => loaded.snapshot_version = loaded.version,
                Err(error) => tracing::warn!(%error, stream_id, "saving a snapshot failed"),
            }
        }
        Err(error) => tracing::warn!(%error, stream_id, "a state could not be snapshotted"),
    }
}

/// Folds the stream from its start up to and including `version` (time
/// travel: no snapshot, which could be later than `version`).
pub async fn load_until<A: Aggregate>(
    store: &EventStore,
    stream_id: &str,
    version: u64,
) -> ApiResult<Loaded<A>> {
    fold_until(store, stream_id, Loaded::new(), version).await
}

/// Applies the events after `loaded.version`, up to and including
/// `version`.
async fn fold_until<A: Aggregate>(
    store: &EventStore,
    stream_id: &str,
    mut loaded: Loaded<A>,
    version: u64,
) -> ApiResult<Loaded<A>> {
    loop {
        let page = store
            .read_stream(stream_id, loaded.version + 1, PAGE)
            .await
            .or_problem()?;
        let full = page.len() == PAGE as usize;
        for recorded in page.iter().take_while(|e| e.version <= version) {
            loaded = loaded.apply(recorded)?;
        }
        if !full || loaded.version >= version {
            return Ok(loaded);
        }
    }
}

/// Folds the events recorded at or before `as_of`.
pub async fn load_as_of<A: Aggregate>(
    store: &EventStore,
    stream_id: &str,
    as_of: DateTime<Utc>,
) -> ApiResult<Loaded<A>> {
    let mut loaded = Loaded::<A>::new();
    for recorded in store
        .read_stream_until(stream_id, as_of)
        .await
        .or_problem()?
    {
        loaded = loaded.apply(&recorded)?;
    }
    Ok(loaded)
}
