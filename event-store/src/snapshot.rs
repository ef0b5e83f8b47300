//! Snapshots: an aggregate's state at some version of its stream, stored
//! under the name of the state's type, so loading a long stream costs one
//! snapshot and the events after it. The caller folds and decides when to
//! save one; a snapshot under another type name or schema version is never
//! returned (see [`EventStore::read_stream_from_snapshot`]).

use crate::{EventStore, RecordedEvent, Result};

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

impl EventStore {
    /// Stores a snapshot unless a newer one of the same shape is there.
    #[tracing::instrument(
        name = "event_store.save_snapshot",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql", stream_id = %snapshot.stream_id, version = snapshot.version)
    )]
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
