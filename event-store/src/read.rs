//! Reading one stream, events by id, and the whole log in global order.

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::{
    Checkpoint, Error, EventStore, FromSnapshot, RawEvent, RecordedEvent, Result, Snapshot,
};

/// Every column of an event, in the order [`EventStore::decode`] reads them.
const COLUMNS: &str = "event_id, stream_id, version, position, transaction_id, type, \
                       schema_version, data, metadata, recorded_at";

/// [`COLUMNS`] with an empty metadata document in place of the stored one.
const COLUMNS_WITHOUT_METADATA: &str = "event_id, stream_id, version, position, transaction_id, \
                                        type, schema_version, data, 'null'::jsonb, recorded_at";

impl EventStore {
    /// Events of one stream from `from_version` (inclusive), oldest first,
    /// at most `limit`, upcast to their current schema.
    #[tracing::instrument(
        name = "event_store.read_stream",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql", stream_id = stream_id, from_version = from_version, limit = limit)
    )]
    pub async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_stream_with(&self.pool, stream_id, from_version, limit)
            .await
    }

    pub(crate) async fn read_stream_with<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from events
             where stream_id = $1 and version >= $2
             order by version limit $3"
        )))
        .bind(stream_id)
        .bind(from_version as i64)
        .bind(i64::from(limit))
        .fetch_all(executor)
        .await?;
        rows.iter().map(|row| self.decode(row)).collect()
    }

    /// The stream's snapshot of this type and schema version, if there is
    /// one, and up to `limit` events after it (from the start without one),
    /// in one query: a load that starts from a snapshot needs no second
    /// round trip unless more than `limit` events follow.
    #[tracing::instrument(
        name = "event_store.read_stream_from_snapshot",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql", stream_id = stream_id, limit = limit)
    )]
    pub async fn read_stream_from_snapshot(
        &self,
        stream_id: &str,
        state_type: &str,
        schema_version: i32,
        limit: u32,
    ) -> Result<FromSnapshot> {
        // One row per event after the snapshot (or a single row without
        // events); the snapshot's state rides on the first row only.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select e.*, s.version,
                    case when e.version is null or e.version = s.version + 1 then s.state end
             from (select 1) as one
             left join (
                 select version, state from event_snapshots
                 where stream_id = $1 and state_type = $2 and schema_version = $3
             ) s on true
             left join lateral (
                 select {COLUMNS} from events
                 where stream_id = $1 and version > coalesce(s.version, 0)
                 order by version limit $4
             ) e on true"
        )))
        .bind(stream_id)
        .bind(state_type)
        .bind(schema_version)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut loaded = FromSnapshot {
            snapshot: None,
            events: Vec::with_capacity(rows.len()),
        };
        for row in &rows {
            let snapshot_version: Option<i64> = row.get(10);
            let state: Option<serde_json::Value> = row.get(11);
            if let (Some(version), Some(state)) = (snapshot_version, state) {
                loaded.snapshot = Some(Snapshot {
                    stream_id: stream_id.to_owned(),
                    version: version as u64,
                    state_type: state_type.to_owned(),
                    schema_version,
                    state,
                });
            }
            if row.get::<Option<uuid::Uuid>, _>(0).is_some() {
                loaded.events.push(self.decode(row)?);
            }
        }
        Ok(loaded)
    }

    /// Events of one stream recorded at or before `as_of`, oldest first.
    #[tracing::instrument(
        name = "event_store.read_stream_until",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql", stream_id = stream_id)
    )]
    pub async fn read_stream_until(
        &self,
        stream_id: &str,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from events
             where stream_id = $1 and recorded_at <= $2
             order by version"
        )))
        .bind(stream_id)
        .bind(as_of)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| self.decode(row)).collect()
    }

    /// The stored events with these ids, in no particular order; an id the
    /// store does not hold is left out. One statement whatever the number
    /// of ids, each found through the unique index on `event_id`: what a
    /// consumer of the broker pays once per batch to learn what the events
    /// its messages name really are (see [`EventStore::verify`]).
    #[tracing::instrument(
        name = "event_store.read_by_ids",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql", events = ids.len())
    )]
    pub async fn read_by_ids(&self, ids: &[Uuid]) -> Result<Vec<RecordedEvent>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from events where event_id = any($1)"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| self.decode(row)).collect()
    }

    /// The events of `root_stream` and every event they caused, directly or
    /// through other events, in any stream (each event's `causation_id`
    /// names the event that caused it), in global order; at most `limit`.
    /// Only causation is followed, never a correlation id, which a client
    /// chooses: nothing outside the chain can join it, and nothing in it
    /// can leave.
    #[tracing::instrument(
        name = "event_store.trace",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql", stream_id = root_stream, limit = limit)
    )]
    pub async fn trace(&self, root_stream: &str, limit: u32) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "with recursive chain(event_id) as (
               select event_id from events where stream_id = $1
               union
               select e.event_id from events e
               join chain c on e.metadata ->> 'causation_id' = c.event_id::text
             )
             select {COLUMNS} from events
             where event_id in (select event_id from chain)
             order by transaction_id, position
             limit $2"
        )))
        .bind(root_stream)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| self.decode(row)).collect()
    }

    /// The current version of a stream, 0 when it does not exist.
    #[tracing::instrument(
        name = "event_store.stream_version",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql", stream_id = stream_id)
    )]
    pub async fn stream_version(&self, stream_id: &str) -> Result<u64> {
        let version: Option<i64> =
            sqlx::query_scalar("select max(version) from events where stream_id = $1")
                .bind(stream_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(version.unwrap_or(0) as u64)
    }

    /// The next events of the whole log after `after`, in global order, at
    /// most `limit`.
    ///
    /// Global order is (transaction_id, position). Only events written by
    /// transactions older than the oldest transaction still running are
    /// returned: those transactions have all committed or rolled back, so
    /// no event can later appear before the last one returned. The bound
    /// and the rows come from the statement's single snapshot. A
    /// long-running writing transaction therefore holds readers back (never
    /// makes them skip); see [`EventStore::held_back`].
    pub async fn read_all(&self, after: Checkpoint, limit: u32) -> Result<Vec<RecordedEvent>> {
        self.read_all_as(after, limit).await
    }

    /// [`EventStore::read_all`] with the documents left as the stored JSON
    /// text: what a reader that passes them on, or decodes them into types
    /// of its own, takes instead of building a `Value` of each.
    pub async fn read_all_raw(&self, after: Checkpoint, limit: u32) -> Result<Vec<RawEvent>> {
        self.read_all_as(after, limit).await
    }

    /// Every event readable now after `after`, in global order, with its
    /// documents as the stored JSON text, from one query whose rows arrive
    /// as PostgreSQL produces them: a reader of the whole log (a rebuild)
    /// decodes the first rows while the server produces the next, where
    /// pages of [`EventStore::read_all_raw`] take turns with it. The bound
    /// of what is readable is taken once, when the query starts; what is
    /// committed later is for the next read. Without `metadata`, every
    /// event's `metadata` is `null`. The query holds one of the store's
    /// connections until the stream ends or is dropped.
    pub fn stream_all_raw(
        &self,
        after: Checkpoint,
        metadata: bool,
    ) -> BoxStream<'_, Result<RawEvent>> {
        let columns = if metadata {
            COLUMNS
        } else {
            COLUMNS_WITHOUT_METADATA
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {columns} from events
             where (transaction_id, position) > ($1, $2)
               and transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
             order by transaction_id, position"
        )))
        .bind(after.transaction_id)
        .bind(after.position)
        .fetch(&self.pool)
        .map(move |row| Document::event(self, &row?))
        .boxed()
    }

    /// [`EventStore::read_all`] with the documents read as `D`.
    #[tracing::instrument(
        name = "event_store.read_all",
        level = "debug",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql", after = after.position, limit = limit)
    )]
    pub(crate) async fn read_all_as<D: Document>(
        &self,
        after: Checkpoint,
        limit: u32,
    ) -> Result<Vec<RecordedEvent<D>>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "select {COLUMNS} from events
             where (transaction_id, position) > ($1, $2)
               and transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
             order by transaction_id, position
             limit $3"
        )))
        .bind(after.transaction_id)
        .bind(after.position)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| D::event(self, row)).collect()
    }

    /// How far readers of the global order are held back right now: the
    /// number of committed events they cannot read yet because an older
    /// transaction is still running, and that transaction's age in seconds.
    pub async fn held_back(&self) -> Result<HeldBack> {
        let row = sqlx::query(
            "with bound as (select pg_snapshot_xmin(pg_current_snapshot())::text::bigint as xmin)
             select
               (select count(*) from events, bound where transaction_id >= bound.xmin) as events,
               -- The oldest transaction that has written something is the
               -- one holding the bound back.
               coalesce((select extract(epoch from now() - min(xact_start))::float8
                         from pg_stat_activity
                         where backend_xid is not null and pid <> pg_backend_pid()), 0) as seconds",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(HeldBack {
            events: row.get::<i64, _>("events") as u64,
            seconds: row.get("seconds"),
        })
    }

    /// The checkpoint just after the last event readable now.
    pub async fn head(&self) -> Result<Checkpoint> {
        let row = sqlx::query(
            "select transaction_id, position from events
             where transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
             order by transaction_id desc, position desc limit 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or(Checkpoint::START, |row| Checkpoint {
            transaction_id: row.get("transaction_id"),
            position: row.get("position"),
        }))
    }

    /// How many events of the readable log come after `after`.
    pub async fn count_after(&self, after: Checkpoint) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "select count(*) from events
             where (transaction_id, position) > ($1, $2)
               and transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
        )
        .bind(after.transaction_id)
        .bind(after.position)
        .fetch_one(&self.pool)
        .await?;
        Ok(count as u64)
    }

    /// How many events the log holds.
    pub async fn len(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("select count(*) from events")
            .fetch_one(&self.pool)
            .await?;
        Ok(count as u64)
    }

    /// Events of streams whose id starts with `prefix` stored after global
    /// position `position`, and when the oldest of them was recorded: how
    /// far behind a reader of that category is.
    #[tracing::instrument(
        name = "event_store.category_after",
        level = "debug",
        skip_all,
        fields(otel.kind = "client", db.system.name = "postgresql")
    )]
    pub async fn category_after(
        &self,
        prefix: &str,
        position: i64,
    ) -> Result<(u64, Option<DateTime<Utc>>)> {
        let (count, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "select count(*), min(recorded_at) from events
             where position > $1 and stream_id like $2",
        )
        .bind(position)
        .bind(format!(
            "{}%",
            prefix.replace('%', "\\%").replace('_', "\\_")
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok((count as u64, oldest))
    }

    /// Builds an event from a row selected with [`COLUMNS`].
    fn decode(&self, row: &PgRow) -> Result<RecordedEvent> {
        let event = columns(row, |i| row.get(i));
        if self.upcasters.is_empty() {
            return Ok(event);
        }
        self.upcasters.upcast(event)
    }
}

/// An event from a row selected with [`COLUMNS`], by column index (this is
/// the hot loop of every replay), its documents read by `document`.
fn columns<D>(row: &PgRow, document: impl Fn(usize) -> D) -> RecordedEvent<D> {
    RecordedEvent {
        event_id: row.get(0),
        stream_id: row.get(1),
        version: row.get::<i64, _>(2) as u64,
        position: row.get(3),
        transaction_id: row.get(4),
        event_type: row.get(5),
        schema_version: row.get(6),
        data: document(7),
        metadata: document(8),
        recorded_at: row.get(9),
    }
}

/// How an event's documents are read: parsed into `Value`s, or kept as
/// the JSON text the store holds. Implemented for those two only.
pub trait Document: Sized + Send + 'static {
    #[doc(hidden)]
    fn event(store: &EventStore, row: &PgRow) -> Result<RecordedEvent<Self>>;
}

impl Document for Value {
    fn event(store: &EventStore, row: &PgRow) -> Result<RecordedEvent<Self>> {
        store.decode(row)
    }
}

impl Document for Box<RawValue> {
    fn event(store: &EventStore, row: &PgRow) -> Result<RecordedEvent<Self>> {
        let event = columns(row, |i| row.get::<Json<Box<RawValue>>, _>(i).0);
        if !store
            .upcasters
            .applies(&event.event_type, event.schema_version)
        {
            return Ok(event);
        }
        // An old shape is rare: parsed, upcast and written out again.
        let parsed = event.parse().map_err(Error::Document)?;
        store
            .upcasters
            .upcast(parsed)?
            .to_raw()
            .map_err(Error::Document)
    }
}

/// See [`EventStore::held_back`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldBack {
    pub events: u64,
    pub seconds: f64,
}
