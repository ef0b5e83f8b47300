//! Snapshots: an aggregate's state at some version of its stream, so
//! loading a long stream costs at most `snapshot_every` events of replay.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, EventStore, RecordedEvent, Result};

/// State built by folding a stream's events.
pub trait Aggregate: Default + Serialize + DeserializeOwned {
    /// Names the state's shape in the snapshot table.
    const STATE_TYPE: &'static str;
    /// Bump when the state's shape changes: older snapshots are then ignored
    /// and the state is rebuilt from the events.
    const STATE_VERSION: i32;

    fn apply(&mut self, event: &RecordedEvent);
}

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub stream_id: String,
    pub version: u64,
    pub state_type: String,
    pub schema_version: i32,
    pub state: serde_json::Value,
}

/// A stream's snapshot and the events after it (see
/// [`EventStore::read_stream_from_snapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FromSnapshot {
    pub snapshot: Option<Snapshot>,
    /// In version order, starting right after the snapshot.
    pub events: Vec<RecordedEvent>,
}

/// An aggregate loaded from the store, and what it cost.
#[derive(Debug)]
pub struct Loaded<A> {
    pub state: A,
    /// The stream's version the state reflects (0: no events).
    pub version: u64,
    /// The version of the snapshot it started from, if any.
    pub snapshot_version: Option<u64>,
    /// How many events were replayed on top of the snapshot.
    pub replayed: u64,
}

const PAGE: u32 = 1000;

impl EventStore {
    /// Loads an aggregate from its latest usable snapshot plus the events
    /// after it; when more than `snapshot_every` events were replayed, saves
    /// a new snapshot so the next load replays fewer.
    pub async fn load<A: Aggregate>(
        &self,
        stream_id: &str,
        snapshot_every: u64,
    ) -> Result<Loaded<A>> {
        let FromSnapshot {
            snapshot,
            events: mut page,
        } = self
            .read_stream_from_snapshot(stream_id, A::STATE_TYPE, A::STATE_VERSION, PAGE)
            .await?;
        let (mut state, snapshot_version) = match snapshot {
            Some(snapshot) => {
                let state =
                    serde_json::from_value(snapshot.state).map_err(|source| Error::Snapshot {
                        stream_id: stream_id.to_owned(),
                        source,
                    })?;
                (state, Some(snapshot.version))
            }
            None => (A::default(), None),
        };
        let mut version = snapshot_version.unwrap_or(0);
        let mut replayed = 0;
        loop {
            let page_len = page.len();
            for event in &page {
                state.apply(event);
                version = event.version;
            }
            replayed += page_len as u64;
            if page_len < PAGE as usize {
                break;
            }
            page = self.read_stream(stream_id, version + 1, PAGE).await?;
        }
        if snapshot_every > 0 && replayed >= snapshot_every {
            let snapshot = Snapshot {
                stream_id: stream_id.to_owned(),
                version,
                state_type: A::STATE_TYPE.to_owned(),
                schema_version: A::STATE_VERSION,
                state: serde_json::to_value(&state).map_err(|source| Error::Snapshot {
                    stream_id: stream_id.to_owned(),
                    source,
                })?,
            };
            // A failed snapshot only makes the next load slower.
            if let Err(error) = self.save_snapshot(&snapshot).await {
                tracing::warn!(%error, stream_id, "saving a snapshot failed");
            }
        }
        Ok(Loaded {
            state,
            version,
            snapshot_version,
            replayed,
        })
    }

    /// Stores a snapshot unless a newer one of the same shape is there.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        sqlx::query(
            "insert into event_snapshots (stream_id, version, state_type, schema_version, state)
             values ($1, $2, $3, $4, $5)
             on conflict (stream_id) do update
               set version = excluded.version, state_type = excluded.state_type,
                   schema_version = excluded.schema_version, state = excluded.state,
                   taken_at = now()
               where event_snapshots.version < excluded.version
                  or event_snapshots.state_type <> excluded.state_type
                  or event_snapshots.schema_version <> excluded.schema_version",
        )
        .bind(&snapshot.stream_id)
        .bind(snapshot.version as i64)
        .bind(&snapshot.state_type)
        .bind(snapshot.schema_version)
        .bind(&snapshot.state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
