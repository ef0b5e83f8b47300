//! Appending events to one or more streams, all or nothing.

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, PgPool, Row};
use tracing::Instrument;
use uuid::Uuid;

use crate::notify::Notifier;
use crate::{Appended, Error, EventStore, ExpectedVersion, Result, StreamAppend};

/// How many times an append whose streams all expect `Any` is retried after
/// losing a race for the next version.
const ANY_RETRIES: usize = 5;

/// The result of [`EventStore::append_in`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Version and position of each event, in the order given.
    pub events: Vec<Appended>,
    /// True when every event id was already stored with the same content, so
    /// nothing was written and `events` is the original result.
    pub already_stored: bool,
}

impl EventStore {
    /// Appends on a connection the caller owns, typically inside its own
    /// transaction so other writes (an idempotency record, say) commit or
    /// roll back with the events. After committing, call
    /// [`EventStore::notify_appended`] to wake subscribers at once (they
    /// poll otherwise).
    ///
    /// Writes nothing unless every event is written. A lost race for a
    /// version or event id surfaces as [`AppendError::Lost`]: a surrounding
    /// transaction is then aborted, and a new one may succeed (or report the
    /// conflict precisely).
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        appends: &[StreamAppend],
    ) -> Result<AppendOutcome, AppendError> {
        append_in(conn, appends).instrument(span(appends)).await
    }

    /// Wakes subscribers after a commit made through
    /// [`EventStore::append_in`].
    pub fn notify_appended(&self) {
        self.notifier.appended();
    }
}

/// The span of one append, grouped or not: [`EventStore::append`] and
/// [`EventStore::append_in`] alike.
pub(crate) fn span(appends: &[StreamAppend]) -> tracing::Span {
    tracing::info_span!(
        "event_store.append",
        otel.kind = "client",
        db.system.name = "postgresql",
        streams = appends.len(),
        stream_id = appends.first().map(|a| a.stream_id.as_str()),
        expected = appends.first().map(|a| tracing::field::display(a.expected)),
        events = appends.iter().map(|a| a.events.len()).sum::<usize>(),
    )
}

/// Appends on its own, not grouped with others: the plain insert when every
/// stream must be new, else the general statement, retried a few times
/// when a race for a version is lost.
pub(crate) async fn append_alone(
    pool: &PgPool,
    notifier: &Notifier,
    appends: &[StreamAppend],
) -> Result<Vec<Appended>> {
    // The append is one statement, atomic on its own, so it needs no
    // explicit transaction: one round trip when nothing conflicts.
    let mut conn = pool.acquire().await?;
    if appends
        .iter()
        .all(|a| a.expected == ExpectedVersion::NoStream)
    {
        match insert_new_streams(&mut conn, &Columns::of(appends)).await {
            Ok(events) => {
                notifier.appended();
                return Ok(events);
            }
            // A stream exists or an event id is stored: the general
            // statement below tells a repeat from a conflict.
            Err(AppendError::Lost) => {}
            Err(AppendError::Failed(error)) => return Err(error),
        }
    }
    for _ in 0..ANY_RETRIES {
        match append_in(&mut conn, appends).await {
            Ok(outcome) => {
                if !outcome.already_stored {
                    notifier.appended();
                }
                return Ok(outcome.events);
            }
            Err(AppendError::Lost) => continue,
            Err(AppendError::Failed(error)) => return Err(error),
        }
    }
    Err(conflict_after_race(&mut conn, appends).await)
}

async fn append_in(
    conn: &mut PgConnection,
    appends: &[StreamAppend],
) -> Result<AppendOutcome, AppendError> {
    validate(appends)?;
    // One statement (for one stream, its own simpler one; for several, the
    // grouped statement with one append in its group): it checks every
    // expected version, refuses event ids that are already stored, numbers
    // each stream's events after its current version and inserts them
    // all, or inserts nothing. Two concurrent appends that computed the
    // same version (or carry the same event id) collide on a unique
    // constraint: one of them fails as a whole and is retried.
    let inserted = match appends {
        [one] => insert_one_stream(conn, one).await?,
        _ => insert_grouped(conn, &[appends]).await?,
    };
    if inserted.is_empty() {
        return explain_refusal(conn, appends).await;
    }
    Ok(AppendOutcome {
        events: appends
            .iter()
            .flat_map(|a| &a.events)
            .map(|event| inserted[&event.event_id])
            .collect(),
        already_stored: false,
    })
}

/// The conflict to report once retries are exhausted: the first stream
/// whose version moved.
async fn conflict_after_race(conn: &mut PgConnection, appends: &[StreamAppend]) -> Error {
    let stream_ids: Vec<&str> = appends.iter().map(|a| a.stream_id.as_str()).collect();
    let current = match current_versions(conn, &stream_ids).await {
        Ok(current) => current,
        Err(error) => return error,
    };
    let first = &appends[0];
    Error::ConcurrencyConflict {
        stream_id: first.stream_id.clone(),
        expected: first.expected,
        actual: current.get(first.stream_id.as_str()).copied().unwrap_or(0),
    }
}

/// The events of one or more appends as one array per column, in the order
/// given.
pub(crate) struct Columns<'a> {
    event_ids: Vec<Uuid>,
    streams: Vec<&'a str>,
    /// Each event's place in its stream's part of the append, from 1.
    nths: Vec<i64>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    data: Vec<serde_json::Value>,
    metadata: Vec<serde_json::Value>,
    /// Which of several grouped appends each event belongs to (see
    /// [`Columns::of_each`]); 0 for a single append.
    requests: Vec<i32>,
}

impl<'a> Columns<'a> {
    /// Binds the seven event columns as the query's next parameters, in
    /// the order of the `events` table's insert.
    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.event_ids)
            .bind(&self.streams)
            .bind(&self.nths)
            .bind(&self.types)
            .bind(&self.schema_versions)
            .bind(&self.data)
            .bind(&self.metadata)
    }

    fn of(appends: &'a [StreamAppend]) -> Self {
        Self::of_each([appends])
    }

    /// The events of several appends, each numbered by its place in
    /// `appends`.
    pub(crate) fn of_each(appends: impl IntoIterator<Item = &'a [StreamAppend]> + Clone) -> Self {
        let total: usize = appends
            .clone()
            .into_iter()
            .flatten()
            .map(|a| a.events.len())
            .sum();
        let mut columns = Self {
            event_ids: Vec::with_capacity(total),
            streams: Vec::with_capacity(total),
            nths: Vec::with_capacity(total),
            types: Vec::with_capacity(total),
            schema_versions: Vec::with_capacity(total),
            data: Vec::with_capacity(total),
            metadata: Vec::with_capacity(total),
            requests: Vec::with_capacity(total),
        };
        for (request, appends) in appends.into_iter().enumerate() {
            for append in appends {
                for (i, event) in append.events.iter().enumerate() {
                    columns.event_ids.push(event.event_id);
                    columns.streams.push(append.stream_id.as_str());
                    columns.nths.push(i as i64 + 1);
                    columns.types.push(event.event_type.as_str());
                    columns.schema_versions.push(event.schema_version);
                    columns.data.push(event.data.clone());
                    columns
                        .metadata
                        .push(serde_json::to_value(&event.metadata).expect("metadata is JSON"));
                    columns.requests.push(request as i32);
                }
            }
        }
        columns
    }
}

/// Appends to streams that must not exist yet: their events take versions
/// 1, 2, ... and a plain insert does, with no look-ups first. If a stream
/// exists its version 1 does too, and if an event id is stored it is
/// unique: either way the insert fails as a whole with a unique violation
/// ([`AppendError::Lost`]), and nothing was written. Not for use inside a
/// transaction, which that failure would abort. Returns the stored events
/// in the order of `columns`.
pub(crate) async fn insert_new_streams(
    conn: &mut PgConnection,
    columns: &Columns<'_>,
) -> Result<Vec<Appended>, AppendError> {
    let statement = sqlx::query(
        "insert into events (event_id, stream_id, version, type, schema_version, data, metadata)
         select event_id, stream_id, version, type, schema_version, data, metadata
         from unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[])
              with ordinality as i(event_id, stream_id, version, type, schema_version, data, metadata, n)
         order by stream_id, n
         returning event_id, version, position",
    );
    let inserted = columns
        .bind(statement)
        .fetch_all(&mut *conn)
        .await
        .map_err(classify_insert_error)?;
    Ok(in_given_order(&inserted, &columns.event_ids))
}

/// The general append statement, for one append or a group of independent
/// ones (group commit): each
/// is written whole if its streams are at their expected versions and none
/// of its event ids is stored, and left out whole otherwise; the others
/// are written regardless. No two of them may share a stream or an event
/// id (they would collide on a unique constraint and fail the statement).
/// Returns what was written; an append with nothing in it was left out.
pub(crate) async fn insert_grouped(
    conn: &mut PgConnection,
    appends: &[&[StreamAppend]],
) -> Result<HashMap<Uuid, Appended>, AppendError> {
    let columns = Columns::of_each(appends.iter().copied());
    let mut expected_requests = Vec::new();
    let mut expected_streams = Vec::new();
    let mut expected_versions = Vec::new();
    for (request, appends) in appends.iter().enumerate() {
        for append in appends.iter() {
            expected_requests.push(request as i32);
            expected_streams.push(append.stream_id.as_str());
            expected_versions.push(expected_as_number(append.expected));
        }
    }
    let statement = sqlx::query(
        "with input as (
             select * from unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::jsonb[], $7::jsonb[], $8::int[])
                    with ordinality as i(event_id, stream_id, nth, type, schema_version, data, metadata, request, n)
         ), expectation as (
             select * from unnest($9::int[], $10::text[], $11::bigint[]) as x(request, stream_id, expected)
         ), current_version as (
             select x.request, x.stream_id, x.expected,
                    coalesce((select max(e.version) from events e where e.stream_id = x.stream_id), 0) as version
             from expectation x
         ), blocked as (
             select request from current_version where expected >= 0 and version <> expected
             union
             select i.request from input i where exists (select 1 from events e where e.event_id = i.event_id)
         )
         insert into events (event_id, stream_id, version, type, schema_version, data, metadata)
         select i.event_id, i.stream_id, c.version + i.nth,
                i.type, i.schema_version, i.data, i.metadata
         from input i join current_version c using (stream_id)
         where i.request not in (select request from blocked)
         order by i.stream_id, i.n
         returning event_id, version, position",
    );
    let inserted = columns
        .bind(statement)
        .bind(&columns.requests)
        .bind(&expected_requests)
        .bind(&expected_streams)
        .bind(&expected_versions)
        .fetch_all(&mut *conn)
        .await
        .map_err(classify_insert_error)?;
    Ok(by_event_id(&inserted))
}

/// [`insert_grouped`] for one append to one stream, the usual case: the
/// same checks and numbering in a statement simple enough for PostgreSQL
/// to settle on a generic plan after a few executions, where the grouped
/// one is planned again at every execution, which cost more than running
/// it (BENCHMARKS.md, issue 26). Inserts every event or none: none when
/// the stream is not at the expected version or an event id is already
/// stored.
async fn insert_one_stream(
    conn: &mut PgConnection,
    append: &StreamAppend,
) -> Result<HashMap<Uuid, Appended>, AppendError> {
    let columns = Columns::of(std::slice::from_ref(append));
    let inserted = sqlx::query(
        "insert into events (event_id, stream_id, version, type, schema_version, data, metadata)
         select i.event_id, $2, stream_head.version + i.n, i.type, i.schema_version, i.data, i.metadata
         from (select coalesce(max(version), 0) as version from events where stream_id = $2) stream_head,
              unnest($1::uuid[], $3::text[], $4::int[], $5::jsonb[], $6::jsonb[])
                with ordinality as i(event_id, type, schema_version, data, metadata, n)
         where ($7 < 0 or stream_head.version = $7)
           and not exists (select 1 from events e where e.event_id = any($1))
         order by i.n
         returning event_id, version, position",
    )
    .bind(&columns.event_ids)
    .bind(append.stream_id.as_str())
    .bind(&columns.types)
    .bind(&columns.schema_versions)
    .bind(&columns.data)
    .bind(&columns.metadata)
    .bind(expected_as_number(append.expected))
    .fetch_all(&mut *conn)
    .await
    .map_err(classify_insert_error)?;
    Ok(by_event_id(&inserted))
}

fn expected_as_number(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => 0,
        ExpectedVersion::Exact(v) => v as i64,
    }
}

/// The inserted rows (`event_id`, `version`, `position`) by event id.
fn by_event_id(inserted: &[sqlx::postgres::PgRow]) -> HashMap<Uuid, Appended> {
    inserted
        .iter()
        .map(|row| {
            let appended = Appended {
                event_id: row.get("event_id"),
                version: row.get::<i64, _>("version") as u64,
                position: row.get("position"),
            };
            (appended.event_id, appended)
        })
        .collect()
}

/// The inserted rows (`event_id`, `version`, `position`) in the order of
/// `event_ids`.
fn in_given_order(inserted: &[sqlx::postgres::PgRow], event_ids: &[Uuid]) -> Vec<Appended> {
    let by_id = by_event_id(inserted);
    event_ids.iter().map(|id| by_id[id]).collect()
}

/// Why [`EventStore::append_in`] did not append.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// A concurrent append took a version or event id first. The
    /// transaction is aborted; starting over may succeed.
    #[error("a concurrent append won the race for a version or event id")]
    Lost,
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<sqlx::Error> for AppendError {
    fn from(error: sqlx::Error) -> Self {
        Self::Failed(error.into())
    }
}

/// The insert wrote nothing: either the events are already stored (a
/// repeat, or a reuse of their ids), or a stream is not at its expected
/// version. If neither holds any more, a concurrent append changed things
/// in between and the caller should try again.
async fn explain_refusal(
    conn: &mut PgConnection,
    appends: &[StreamAppend],
) -> Result<AppendOutcome, AppendError> {
    if let Some(existing) = already_stored(conn, appends).await? {
        return Ok(AppendOutcome {
            events: existing,
            already_stored: true,
        });
    }
    let stream_ids: Vec<&str> = appends.iter().map(|a| a.stream_id.as_str()).collect();
    let current = current_versions(conn, &stream_ids).await?;
    for append in appends {
        let at = current.get(append.stream_id.as_str()).copied().unwrap_or(0);
        check_expected(&append.stream_id, append.expected, at)?;
    }
    Err(AppendError::Lost)
}

pub(crate) fn validate(appends: &[StreamAppend]) -> Result<()> {
    if appends.iter().all(|a| a.events.is_empty()) {
        return Err(Error::EmptyAppend);
    }
    let mut seen = HashSet::new();
    for append in appends {
        if !seen.insert(append.stream_id.as_str()) {
            return Err(Error::DuplicateStream(append.stream_id.clone()));
        }
    }
    Ok(())
}

fn check_expected(stream_id: &str, expected: ExpectedVersion, actual: u64) -> Result<()> {
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual == 0,
        ExpectedVersion::Exact(v) => actual == v,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::ConcurrencyConflict {
            stream_id: stream_id.to_owned(),
            expected,
            actual,
        })
    }
}

/// PostgreSQL's SQLSTATE for a transaction chosen to break a deadlock.
const DEADLOCK_DETECTED: &str = "40P01";

/// A unique violation means another append got there first: on
/// `(stream_id, version)` it took the version we computed, on `event_id` it
/// stored the same event (the retry then returns that result).
///
/// Both insert statements write their rows in (stream, version) order, not
/// in the order given: two appends that want the same versions of several
/// streams then meet on the first of them, and one waits for the other
/// instead of each holding a row the other needs. In the given order (a
/// reservation of products a and b beside one of b and a, say) they
/// deadlocked, and PostgreSQL broke the tie only after its
/// `deadlock_timeout` (1 s), with every append grouped with them waiting.
/// Should a deadlock still happen (two statements of one transaction), it
/// is a lost race like a unique violation: the transaction is aborted and
/// may be started over.
fn classify_insert_error(error: sqlx::Error) -> AppendError {
    if let sqlx::Error::Database(db) = &error
        && (db.is_unique_violation() || db.code().as_deref() == Some(DEADLOCK_DETECTED))
    {
        return AppendError::Lost;
    }
    AppendError::Failed(error.into())
}

async fn current_versions(
    conn: &mut PgConnection,
    stream_ids: &[&str],
) -> Result<HashMap<String, u64>> {
    let rows = sqlx::query(
        "select stream_id, max(version) as version from events
         where stream_id = any($1) group by stream_id",
    )
    .bind(stream_ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get("stream_id"), row.get::<i64, _>("version") as u64))
        .collect())
}

/// When every event id of the append is stored with the same stream, type,
/// schema version and data, returns where they were stored. Metadata is not
/// compared: a retried request may carry a new trace.
async fn already_stored(
    conn: &mut PgConnection,
    appends: &[StreamAppend],
) -> Result<Option<Vec<Appended>>> {
    let ids: Vec<Uuid> = appends
        .iter()
        .flat_map(|a| a.events.iter().map(|e| e.event_id))
        .collect();
    let rows = sqlx::query(
        "select event_id, stream_id, version, position, type, schema_version, data
         from events where event_id = any($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let stored: HashMap<Uuid, &sqlx::postgres::PgRow> =
        rows.iter().map(|row| (row.get("event_id"), row)).collect();
    let mut result = Vec::with_capacity(ids.len());
    for append in appends {
        for event in &append.events {
            let Some(row) = stored.get(&event.event_id) else {
                // Part of this append is stored and part is not: it is not
                // a repeat of an earlier one.
                let first_stored = *stored.keys().next().expect("not empty");
                return Err(Error::EventIdReused {
                    event_id: first_stored,
                });
            };
            let same = row.get::<String, _>("stream_id") == append.stream_id
                && row.get::<String, _>("type") == event.event_type
                && row.get::<i32, _>("schema_version") == event.schema_version
                && row.get::<serde_json::Value, _>("data") == event.data;
            if !same {
                return Err(Error::EventIdReused {
                    event_id: event.event_id,
                });
            }
            result.push(Appended {
                event_id: event.event_id,
                version: row.get::<i64, _>("version") as u64,
                position: row.get("position"),
            });
        }
    }
    Ok(Some(result))
}
