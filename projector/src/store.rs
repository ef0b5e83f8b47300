//! Reading and writing read-model rows, and applying events to them.
//!
//! Rows travel as JSON: loaded with `to_jsonb(row)` and written with
//! `jsonb_to_recordset` (or `COPY` into a rebuild's empty shadow table), so
//! one generic function serves every table. A row
//! is only ever replaced by one built from a later version of its stream
//! (`where version < excluded.version`), so two writers racing on a row
//! (two instances during a rebalance, or a redelivery) cannot move it back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use anyhow::Context;
use event_store::{EventStore, RecordedEvent};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::views::{Declaration, Projection, View, WithView};

/// The table key a stream id maps to under a read model's declaration, or
/// why it cannot be one.
pub fn key_of(declaration: &Declaration, stream_id: &str) -> Result<String, String> {
    let key = stream_id
        .strip_prefix(declaration.stream_prefix)
        .ok_or_else(|| format!("{stream_id} is not a {} stream", declaration.name))?;
    match declaration.key.1 {
        "uuid" => Uuid::parse_str(key)
            .map(|id| id.to_string())
            .map_err(|_| format!("{stream_id}: expected {}<uuid>", declaration.stream_prefix)),
        _ => Ok(key.to_owned()),
    }
}

/// The rows of `table` with these keys, by key.
pub async fn load<V: View>(
    conn: &mut PgConnection,
    table: &str,
    keys: &[String],
) -> anyhow::Result<HashMap<String, V>> {
    let (key, key_type) = V::DECLARATION.key;
    // Table and column names come from the declaration, never from input.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "select t.{key}::text, to_jsonb(t) from {table} t
         where t.{key} = any($1::text[]::{key_type}[])"
    )))
    .bind(keys)
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("loading rows of {table}"))?;
    rows.into_iter()
        .map(|row| {
            let key: String = row.get(0);
            let value: serde_json::Value = row.get(1);
            let view = serde_json::from_value(value)
                .with_context(|| format!("decoding row {key} of {table}"))?;
            Ok((key, view))
        })
        .collect()
}

/// Writes rows, each only over an older version of itself; returns the
/// keys actually written.
pub async fn write<V: View>(
    conn: &mut PgConnection,
    table: &str,
    rows: &[V],
) -> anyhow::Result<HashSet<String>> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let declaration = V::DECLARATION;
    let (key, _) = declaration.key;
    let names: Vec<&str> = declaration.column_names().collect();
    let columns = names.join(", ");
    let updates = names
        .iter()
        .filter(|name| **name != key)
        .map(|name| format!("{name} = excluded.{name}"))
        .collect::<Vec<_>>()
        .join(", ");
    let definitions = declaration.columns;
    let sql = format!(
        "insert into {table} as t ({columns})
         select {columns} from jsonb_to_recordset($1::jsonb) as r({definitions})
         on conflict ({key}) do update set {updates} where t.version < excluded.version
         returning {key}::text"
    );
    let payload = serde_json::to_value(rows).context("encoding rows")?;
    let written = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
        .bind(payload)
        .fetch_all(&mut *conn)
        .await
        .with_context(|| format!("writing rows of {table}"))?;
    Ok(written.into_iter().collect())
}

/// Writes rows into a table that has none of them yet (a rebuild's
/// shadow, before its indexes exist) with one `COPY`: PostgreSQL reads its
/// text format without parsing a JSON document per statement, which is
/// what the insert through `jsonb_to_recordset` spends its time on. The
/// rows are encoded and sent [`COPY_CHUNK`] bytes at a time, so the server
/// reads the first while the next are encoded.
pub async fn copy_new<V: View, R: std::borrow::Borrow<V>>(
    conn: &mut PgConnection,
    table: &str,
    rows: impl IntoIterator<Item = R>,
) -> anyhow::Result<()> {
    let columns = column_types(&V::DECLARATION);
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let mut copy = conn
        .copy_in_raw(&format!("copy {table} ({}) from stdin", names.join(", ")))
        .await
        .with_context(|| format!("starting to copy rows into {table}"))?;
    let mut text = Vec::with_capacity(COPY_CHUNK + COPY_CHUNK / 4);
    let mut scratch = Vec::new();
    for row in rows {
        // On an error the copy is dropped, which fails it: nothing stays.
        copy_line(&mut text, &mut scratch, &columns, row.borrow())?;
        if text.len() >= COPY_CHUNK {
            copy.send(text.as_slice())
                .await
                .with_context(|| format!("copying rows into {table}"))?;
            text.clear();
        }
    }
    copy.send(text.as_slice())
        .await
        .with_context(|| format!("copying rows into {table}"))?;
    copy.finish()
        .await
        .with_context(|| format!("copying rows into {table}"))?;
    Ok(())
}

/// How much `COPY` text [`copy_new`] encodes before sending it.
const COPY_CHUNK: usize = 256 * 1024;

/// Each column of a declaration with its SQL type.
fn column_types(declaration: &Declaration) -> Vec<(&'static str, &'static str)> {
    declaration
        .columns
        .split(',')
        .map(|definition| {
            let mut words = definition.split_whitespace();
            let name = words.next().expect("a column name");
            (name, words.next().expect("a column type"))
        })
        .collect()
}

/// One row in `COPY`'s text format: the row's JSON fields in column order,
/// turned into column values as `jsonb_to_recordset` turns them (what
/// [`write`] goes through, so both paths store the same row): JSON null or
/// a missing field is SQL NULL, a string its text, anything else its JSON
/// text, and a `jsonb` column always takes the JSON text. The row is
/// encoded once into `scratch` and its fields are read back as slices of
/// that text, without building a `Value` of it.
fn copy_line(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    columns: &[(&str, &str)],
    row: &impl serde::Serialize,
) -> anyhow::Result<()> {
    use serde_json::value::RawValue;
    scratch.clear();
    serde_json::to_writer(&mut *scratch, row).context("encoding a row")?;
    let fields: HashMap<&str, &RawValue> =
        serde_json::from_slice(scratch).context("a read-model row is not a JSON object")?;
    for (i, (name, sql_type)) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        let text = fields.get(*name).map_or("null", |field| field.get());
        if text == "null" {
            out.extend_from_slice(b"\\N");
        } else if *sql_type != "jsonb" && text.starts_with('"') {
            // A JSON string: its text, unescaped (borrowed when it has no
            // escapes).
            match serde_json::from_str::<&str>(text) {
                Ok(unescaped) => copy_escape(out, unescaped.as_bytes()),
                Err(_) => {
                    let unescaped: String =
                        serde_json::from_str(text).context("decoding a row's string")?;
                    copy_escape(out, unescaped.as_bytes());
                }
            }
        } else {
            copy_escape(out, text.as_bytes());
        }
    }
    out.push(b'\n');
    Ok(())
}

/// Appends `text` escaped for `COPY`'s text format.
fn copy_escape(out: &mut Vec<u8>, text: &[u8]) {
    for &byte in text {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            other => out.push(other),
        }
    }
}

/// What applying a set of events did.
#[derive(Debug)]
pub struct Applied<O> {
    /// Events that changed a row (duplicates and refused ones not counted).
    pub events: u64,
    /// The highest global position among them.
    pub position: i64,
    /// Events that could not be applied, with why.
    pub refused: Vec<(O, String)>,
}

impl<O> Default for Applied<O> {
    fn default() -> Self {
        Self {
            events: 0,
            position: 0,
            refused: Vec::new(),
        }
    }
}

/// Applies events of V's projection to `table`, in `conn`'s transaction.
///
/// Events may come in any order, repeated, or with holes: per stream they
/// are sorted by version, versions the row already has are skipped, and a
/// hole between the row's version and the next event is filled from the
/// event store, never skipped. `O` says where each event came from (a Kafka
/// message, say), to report the ones that were refused.
pub async fn apply_events<V: View, O>(
    conn: &mut PgConnection,
    store: &EventStore,
    table: &str,
    events: Vec<(RecordedEvent, O)>,
) -> anyhow::Result<Applied<O>> {
    let mut applied = Applied::default();
    let by_stream = group_by_stream(&V::DECLARATION, events, &mut applied.refused);
    let keys: Vec<String> = by_stream.values().map(|(key, _)| key.clone()).collect();
    let mut rows = load::<V>(conn, table, &keys).await?;

    let mut changed = Vec::new();
    let mut tallies: HashMap<String, Tally> = HashMap::new();
    for (stream_id, (key, events)) in by_stream {
        let mut row = rows.remove(&key);
        let before = row.as_ref().map_or(0, V::version);
        let tally = apply_to_row(store, &stream_id, &mut row, events, &mut applied.refused).await?;
        if let Some(row) = row
            && row.version() > before
        {
            tallies.insert(key, tally);
            changed.push(row);
        }
    }
    // Only rows the guarded write took count: a row another writer had
    // already moved past adds nothing.
    for key in write(conn, table, &changed).await? {
        if let Some(tally) = tallies.get(&key) {
            applied.events += tally.count;
            applied.position = applied.position.max(tally.position);
        }
    }
    Ok(applied)
}

/// One stream's events, with the table key of its row.
type StreamEvents<O> = (String, Vec<(RecordedEvent, O)>);

/// Groups events by stream, so each row is loaded, folded and written once
/// per call; an event whose stream id is no key of this read model is
/// refused here.
fn group_by_stream<O>(
    declaration: &Declaration,
    events: Vec<(RecordedEvent, O)>,
    refused: &mut Vec<(O, String)>,
) -> BTreeMap<String, StreamEvents<O>> {
    let mut by_stream: BTreeMap<String, StreamEvents<O>> = BTreeMap::new();
    for (event, origin) in events {
        match key_of(declaration, &event.stream_id) {
            Ok(key) => {
                by_stream
                    .entry(event.stream_id.clone())
                    .or_insert_with(|| (key, Vec::new()))
                    .1
                    .push((event, origin));
            }
            Err(reason) => refused.push((origin, reason)),
        }
    }
    by_stream
}

/// Events folded into one row: how many, and the highest global position
/// among them, counted only if the row is then written.
#[derive(Default)]
struct Tally {
    count: u64,
    position: i64,
}

impl Tally {
    fn add(&mut self, event: &RecordedEvent) {
        self.count += 1;
        self.position = self.position.max(event.position);
    }
}

/// Folds one stream's events into its row in version order, skipping the
/// versions it already has; an event that cannot be applied is refused and
/// the next one is tried.
async fn apply_to_row<V: View, O>(
    store: &EventStore,
    stream_id: &str,
    row: &mut Option<V>,
    mut events: Vec<(RecordedEvent, O)>,
    refused: &mut Vec<(O, String)>,
) -> anyhow::Result<Tally> {
    events.sort_by_key(|(event, _)| event.version);
    let mut tally = Tally::default();
    for (event, origin) in events {
        let current = row.as_ref().map_or(0, V::version);
        if event.version <= current {
            continue;
        }
        if event.version > current + 1
            && let Err(reason) = fill_hole(store, stream_id, row, event.version, &mut tally).await?
        {
            refused.push((origin, reason));
            continue;
        }
        match V::apply(row, &event) {
            Ok(()) => tally.add(&event),
            Err(error) => refused.push((origin, error.to_string())),
        }
    }
    Ok(tally)
}

/// Applies the stored events between the row's version and `next`, which
/// were not among those given, so the event at `next` lands on the row as
/// of the version before it. The inner error says why the hole stays open:
/// the store lacks some of those events, or one does not apply (those
/// before it stay applied and counted).
async fn fill_hole<V: View>(
    store: &EventStore,
    stream_id: &str,
    row: &mut Option<V>,
    next: u64,
    tally: &mut Tally,
) -> anyhow::Result<Result<(), String>> {
    let current = row.as_ref().map_or(0, V::version);
    let missing = (next - current - 1) as u32;
    let stored = store
        .read_stream(stream_id, current + 1, missing)
        .await
        .context("reading missing events from the event store")?;
    if stored.len() != missing as usize {
        return Ok(Err(format!(
            "versions {}..{} of {stream_id} are not in the event store",
            current + 1,
            next - 1
        )));
    }
    for earlier in &stored {
        if let Err(error) = V::apply(row, earlier) {
            return Ok(Err(format!(
                "cannot apply stored {}: {error}",
                earlier.event_type
            )));
        }
        tally.add(earlier);
    }
    Ok(Ok(()))
}

/// [`apply_events`] for the read model `projection` names, its view type
/// chosen by the registry (`Projection::with_view`).
pub async fn apply_projection<O: Send>(
    conn: &mut PgConnection,
    store: &EventStore,
    projection: Projection,
    table: &str,
    events: Vec<(RecordedEvent, O)>,
) -> anyhow::Result<Applied<O>> {
    struct Apply<'a, O> {
        conn: &'a mut PgConnection,
        store: &'a EventStore,
        table: &'a str,
        events: Vec<(RecordedEvent, O)>,
    }
    impl<'a, O: Send + 'a> WithView for Apply<'a, O> {
        type Output = Pin<Box<dyn Future<Output = anyhow::Result<Applied<O>>> + Send + 'a>>;
        fn with<V: View>(self) -> Self::Output {
            Box::pin(apply_events::<V, O>(
                self.conn,
                self.store,
                self.table,
                self.events,
            ))
        }
    }
    projection
        .with_view(Apply {
            conn,
            store,
            table,
            events,
        })
        .await
}

/// Gives every read model of the registry its row in `projections` (what
/// `GET /v1/projections` and the progress counters read); a read model
/// added later gets its row here, not from a migration.
pub async fn register(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let names: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
    sqlx::query(
        "insert into projections (name) select unnest($1::text[]) on conflict (name) do nothing",
    )
    .bind(&names)
    .execute(pool)
    .await
    .context("registering the projections")?;
    Ok(())
}

/// Records messages that could not be applied; a message already recorded
/// (a redelivery) is not recorded twice.
pub async fn dead_letter(conn: &mut PgConnection, letters: &[DeadLetter]) -> anyhow::Result<u64> {
    if letters.is_empty() {
        return Ok(0);
    }
    let payload = serde_json::to_value(letters).context("encoding dead letters")?;
    let inserted = sqlx::query(
        "insert into projector_dead_letters (topic, partition, \"offset\", key, payload, reason)
         select topic, partition, \"offset\", key, payload, reason
         from jsonb_to_recordset($1::jsonb)
           as r(topic text, partition integer, \"offset\" bigint, key text, payload text, reason text)
         on conflict (topic, partition, \"offset\") do nothing",
    )
    .bind(payload)
    .execute(&mut *conn)
    .await
    .context("recording dead letters")?;
    Ok(inserted.rows_affected())
}

/// A message the projector could not apply.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Option<String>,
    pub reason: String,
}

/// Adds applied events to a projection's counters.
pub async fn record_progress(
    conn: &mut PgConnection,
    projection: Projection,
    events: u64,
    position: i64,
) -> anyhow::Result<()> {
    if events == 0 {
        return Ok(());
    }
    sqlx::query(
        "update projections
         set events_applied = events_applied + $2, position = greatest(position, $3),
             updated_at = now()
         where name = $1",
    )
    .bind(projection.name())
    .bind(events as i64)
    .bind(position)
    .execute(&mut *conn)
    .await
    .context("recording projection progress")?;
    Ok(())
}

/// Advisory lock class of the projector: (class, projection) pairs name
/// one lock per projection.
pub const LOCK_CLASS: i32 = 0x7072_6f6a; // "proj"

/// Held (shared) by every transaction that applies events to a
/// projection's table, and exclusively by the rebuild while it swaps the
/// table: so the swap never interleaves with a live write.
pub async fn lock_shared(conn: &mut PgConnection, projection: Projection) -> anyhow::Result<()> {
    sqlx::query("select pg_advisory_xact_lock_shared($1, $2)")
        .bind(LOCK_CLASS)
        .bind(projection.lock_id())
        .execute(&mut *conn)
        .await
        .context("taking the projection's shared lock")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_copy_line_holds_each_column_as_jsonb_to_recordset_would_read_it() {
        let columns = [
            ("id", "uuid"),
            ("name", "text"),
            ("count", "bigint"),
            ("missing", "text"),
            ("empty", "text"),
            ("shape", "jsonb"),
            ("label", "jsonb"),
            ("reason", "text"),
        ];
        let row = json!({
            "id": "4f0c1a52-6a47-4b2e-9a68-0d3c2b8f5e11",
            "name": "tab\there\nnewline \\ back\rreturn",
            "count": -42,
            "empty": null,
            "shape": { "note": "a\tb", "n": [1, 2] },
            "label": "plain",
            "reason": { "kind": "OutOfStock" },
            "ignored": "not a column",
        });
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        copy_line(&mut out, &mut scratch, &columns, &row).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            [
                "4f0c1a52-6a47-4b2e-9a68-0d3c2b8f5e11",
                "tab\\there\\nnewline \\\\ back\\rreturn",
                "-42",
                "\\N",
                "\\N",
                r#"{"n":[1,2],"note":"a\\tb"}"#,
                r#""plain""#,
                r#"{"kind":"OutOfStock"}"#,
            ]
            .join("\t")
                + "\n"
        );
    }

    #[test]
    fn column_types_pair_each_declared_column_with_its_type() {
        assert_eq!(
            column_types(&read_models::CUSTOMERS),
            [
                ("customer_id", "uuid"),
                ("name", "text"),
                ("email", "text"),
                ("balance_cents", "bigint"),
                ("version", "bigint"),
            ]
        );
    }
}
