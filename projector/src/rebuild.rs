//! Rebuilding read models from the event store while the current ones keep
//! serving.
//!
//! 1. Take the projection's rebuild lock (one rebuild at a time, across
//!    processes) and create an empty `<table>_shadow`.
//! 2. Read the whole log in global order and fold it in memory, then write
//!    the rows into the shadow in bulk.
//! 3. Catch the shadow up with what was appended meanwhile, row by row.
//! 4. In one transaction: take the projection's exclusive lock (live writes
//!    to the table hold it shared, so none is in flight), catch up the last
//!    events, rename the shadow into place and drop the old table.
//!
//! Everything readable when the swap commits is in the new table; anything
//! later reaches the live consumer from Kafka and is applied to the new
//! table, whose rows carry their stream versions, so nothing that arrived
//! during the rebuild is lost or applied twice.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Context;
use event_store::{Checkpoint, EventStore, RecordedEvent};
use sqlx::{Connection, PgConnection, PgPool};

use crate::store::{self, DeadLetter};
use crate::views::{Declaration, Projection, View, WithView};

/// Advisory lock class of rebuilds: (class, projection) is held for the
/// whole rebuild, on a connection of its own.
pub const REBUILD_LOCK_CLASS: i32 = 0x7265_6275; // "rebu"

/// Events read per query.
const PAGE: u32 = 5_000;
/// Rows written per statement.
const WRITE_CHUNK: usize = 2_000;
/// Statements writing the shadow tables at once.
const WRITERS: usize = 4;

/// Why a rebuild did not run.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(&'static str),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Told how a rebuild advances (a progress bar, or nothing).
pub trait Progress: Send + Sync {
    fn started(&self, _total: u64) {}
    fn advanced(&self, _read: u64) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Events of the log read.
    pub events_read: u64,
    /// Events applied, per projection.
    pub applied: Vec<(Projection, u64)>,
    /// Events that could not be applied (recorded as dead letters).
    pub refused: u64,
    pub elapsed: Duration,
    /// Time spent reading and folding the log, writing the shadow tables,
    /// and catching up and swapping.
    pub phases: [Duration; 3],
}

/// A rebuild that holds its lock: no other rebuild of these projections
/// runs, in any process, until it is dropped.
pub struct Rebuild {
    lock: PgConnection,
    projections: Vec<Projection>,
}

impl Rebuild {
    /// Takes the rebuild lock of every projection (deduplicated), or says
    /// which one is already being rebuilt.
    pub async fn acquire(pool: &PgPool, projections: &[Projection]) -> Result<Self, RebuildError> {
        let mut projections = projections.to_vec();
        projections.sort();
        projections.dedup();
        // The session locks live as long as this connection.
        let mut lock = PgConnection::connect_with(&pool.connect_options())
            .await
            .context("connecting for the rebuild lock")?;
        for projection in &projections {
            let acquired: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, $2)")
                .bind(REBUILD_LOCK_CLASS)
                .bind(projection.lock_id())
                .fetch_one(&mut lock)
                .await
                .context("taking the rebuild lock")?;
            if !acquired {
                return Err(RebuildError::AlreadyRunning(projection.name()));
            }
        }
        Ok(Self { lock, projections })
    }

    pub fn projections(&self) -> &[Projection] {
        &self.projections
    }

    /// Rebuilds from the event store and swaps the new tables in.
    pub async fn run(
        self,
        pool: &PgPool,
        store: &EventStore,
        progress: &dyn Progress,
    ) -> anyhow::Result<Report> {
        let started = Instant::now();
        let result = run(pool, store, &self.projections, progress, started).await;
        if result.is_err() {
            let _ = clear_progress(pool, &self.projections).await;
        }
        let _ = self.lock.close().await;
        result
    }
}

async fn run(
    pool: &PgPool,
    store: &EventStore,
    projections: &[Projection],
    progress: &dyn Progress,
    started: Instant,
) -> anyhow::Result<Report> {
    let total = store.len().await.context("counting the log")?;
    progress.started(total);
    for projection in projections {
        let table = projection.table();
        for statement in [
            format!("drop table if exists {table}_shadow"),
            // Without indexes: they are built once the rows are in, which
            // is faster than maintaining them row by row.
            format!(
                "create table {table}_shadow (like {table} including defaults including constraints)"
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(pool)
                .await
                .with_context(|| format!("creating {table}_shadow"))?;
        }
        sqlx::query("update projections set rebuild_read = 0, rebuild_total = $2 where name = $1")
            .bind(projection.name())
            .bind(total as i64)
            .execute(pool)
            .await
            .context("recording rebuild progress")?;
    }

    let mut folds = Folds::new(projections);
    let mut after = Checkpoint::START;
    let mut read = 0u64;
    let mut last_saved = Instant::now();
    // Reading (PostgreSQL and JSON decoding) and folding overlap: a task
    // reads the next pages while this one folds.
    let (pages, mut reading) = tokio::sync::mpsc::channel(2);
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut after = Checkpoint::START;
            loop {
                let page = store.read_all_without_metadata(after, PAGE).await?;
                let Some(last) = page.last() else {
                    return anyhow::Ok(());
                };
                after = last.checkpoint();
                if pages.send(page).await.is_err() {
                    return Ok(());
                }
            }
        })
    };
    while let Some(page) = reading.recv().await {
        let Some(last) = page.last() else { break };
        after = last.checkpoint();
        read += page.len() as u64;
        for event in &page {
            folds.apply(event);
        }
        progress.advanced(read);
        if last_saved.elapsed() > Duration::from_secs(1) {
            save_progress(pool, projections, read).await?;
            last_saved = Instant::now();
        }
    }
    reader
        .await
        .context("the log reader panicked")?
        .context("reading the log")?;
    let folded = started.elapsed();
    let mut report = folds.write(pool).await?;
    let mut indexes = Vec::new();
    for projection in projections {
        indexes.push(index_shadow(pool, projection.table()).await?);
    }
    let written = started.elapsed();
    report.report.phases = [folded, written - folded, Duration::ZERO];

    // Catch up with what was appended while folding, without blocking the
    // live consumer; then the last few events under the lock, and swap.
    loop {
        let mut tx = pool.begin().await.context("starting a catch-up")?;
        let (count, next) = catch_up(&mut tx, store, projections, after, &mut report).await?;
        tx.commit().await.context("committing a catch-up")?;
        read += count;
        after = next;
        progress.advanced(read);
        if count < u64::from(PAGE) {
            break;
        }
    }
    let mut tx = pool.begin().await.context("starting the swap")?;
    for projection in projections {
        sqlx::query("select pg_advisory_xact_lock($1, $2)")
            .bind(store::LOCK_CLASS)
            .bind(projection.lock_id())
            .execute(&mut *tx)
            .await
            .context("taking the projection's exclusive lock")?;
    }
    loop {
        let (count, next) = catch_up(&mut tx, store, projections, after, &mut report).await?;
        read += count;
        after = next;
        if count < u64::from(PAGE) {
            break;
        }
    }
    for (projection, indexes) in projections.iter().zip(&indexes) {
        let table = projection.table();
        let renames = indexes
            .iter()
            .map(|name| format!("alter index {name}_shadow rename to {name}"));
        for statement in [
            format!("alter table {table} rename to {table}_old"),
            format!("alter table {table}_shadow rename to {table}"),
            format!("drop table {table}_old"),
        ]
        .into_iter()
        .chain(renames)
        {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("swapping {table}"))?;
        }
        let (events, position) = report.totals(*projection);
        sqlx::query(
            "update projections
             set events_applied = $2, position = $3, rebuild_read = null, rebuild_total = null,
                 updated_at = now()
             where name = $1",
        )
        .bind(projection.name())
        .bind(events as i64)
        .bind(position)
        .execute(&mut *tx)
        .await
        .context("recording the rebuilt projection")?;
    }
    tx.commit().await.context("committing the swap")?;
    progress.advanced(read);
    report.report.events_read = read;
    report.report.elapsed = started.elapsed();
    report.report.phases[2] = report.report.elapsed - written;
    Ok(report.report)
}

/// Builds on `<table>_shadow` the indexes `table` has (named
/// `<index>_shadow` until the swap renames them), primary key included;
/// returns the indexes' names.
async fn index_shadow(pool: &PgPool, table: &str) -> anyhow::Result<Vec<String>> {
    let indexes: Vec<(String, String, bool)> = sqlx::query_as(
        "select i.relname::text, pg_get_indexdef(i.oid), x.indisprimary
         from pg_index x join pg_class i on i.oid = x.indexrelid
         where x.indrelid = $1::regclass",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .with_context(|| format!("reading the indexes of {table}"))?;
    let mut names = Vec::with_capacity(indexes.len());
    for (name, definition, primary) in indexes {
        // `CREATE [UNIQUE] INDEX <name> ON <schema>.<table> USING ...`
        let shadow_definition = definition
            .replacen(
                &format!(" INDEX {name} ON "),
                &format!(" INDEX {name}_shadow ON "),
                1,
            )
            .replacen(
                &format!(".{table} USING "),
                &format!(".{table}_shadow USING "),
                1,
            );
        anyhow::ensure!(
            shadow_definition.contains(&format!("{name}_shadow ON "))
                && shadow_definition.contains(&format!("{table}_shadow USING ")),
            "unexpected index definition: {definition}"
        );
        sqlx::query(sqlx::AssertSqlSafe(shadow_definition))
            .execute(pool)
            .await
            .with_context(|| format!("building index {name} on {table}_shadow"))?;
        if primary {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "alter table {table}_shadow add primary key using index {name}_shadow"
            )))
            .execute(pool)
            .await
            .with_context(|| format!("making {name}_shadow the primary key"))?;
        }
        names.push(name);
    }
    Ok(names)
}

async fn save_progress(pool: &PgPool, projections: &[Projection], read: u64) -> anyhow::Result<()> {
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    sqlx::query("update projections set rebuild_read = $2 where name = any($1)")
        .bind(&names)
        .bind(read as i64)
        .execute(pool)
        .await
        .context("recording rebuild progress")?;
    Ok(())
}

async fn clear_progress(pool: &PgPool, projections: &[Projection]) -> anyhow::Result<()> {
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    sqlx::query(
        "update projections set rebuild_read = null, rebuild_total = null where name = any($1)",
    )
    .bind(&names)
    .execute(pool)
    .await?;
    Ok(())
}

/// Applies one page of events after `after` to the shadow tables, in
/// `conn`'s transaction; returns how many events it read and the new
/// checkpoint.
async fn catch_up(
    conn: &mut PgConnection,
    store: &EventStore,
    projections: &[Projection],
    after: Checkpoint,
    report: &mut Progressing,
) -> anyhow::Result<(u64, Checkpoint)> {
    let page = store
        .read_all(after, PAGE)
        .await
        .context("reading the log")?;
    let Some(last) = page.last() else {
        return Ok((0, after));
    };
    let next = last.checkpoint();
    let count = page.len() as u64;
    let mut by_projection: HashMap<Projection, Vec<(RecordedEvent, i64)>> = HashMap::new();
    for event in page {
        for projection in Projection::taking(&event.stream_id) {
            if projections.contains(&projection) {
                let position = event.position;
                by_projection
                    .entry(projection)
                    .or_default()
                    .push((event.clone(), position));
            }
        }
    }
    let mut dead = Vec::new();
    for (projection, events) in by_projection {
        let shadow = format!("{}_shadow", projection.table());
        let applied = store::apply_projection(conn, store, projection, &shadow, events).await?;
        report.add(projection, applied.events, applied.position);
        dead.extend(
            applied
                .refused
                .into_iter()
                .map(|(position, reason)| stored_dead_letter(position, reason)),
        );
    }
    report.report.refused += dead.len() as u64;
    store::dead_letter(conn, &dead).await?;
    Ok((count, next))
}

/// A stored event that could not be applied, as a dead letter (its
/// "offset" is its global position).
fn stored_dead_letter(position: i64, reason: String) -> DeadLetter {
    DeadLetter {
        topic: "event-store".into(),
        partition: 0,
        offset: position,
        key: None,
        payload: None,
        reason,
    }
}

/// Counts per projection while a rebuild runs.
#[derive(Default)]
struct Progressing {
    report: Report,
    totals: HashMap<Projection, (u64, i64)>,
}

impl Progressing {
    fn add(&mut self, projection: Projection, events: u64, position: i64) {
        let entry = self.totals.entry(projection).or_default();
        entry.0 += events;
        entry.1 = entry.1.max(position);
    }

    fn totals(&mut self, projection: Projection) -> (u64, i64) {
        let totals = self.totals.get(&projection).copied().unwrap_or_default();
        if !self.report.applied.iter().any(|(p, _)| *p == projection) {
            self.report.applied.push((projection, totals.0));
        }
        totals
    }
}

/// One projection folded in memory: its rows by stream id.
struct Fold<V> {
    projection: Projection,
    rows: HashMap<String, Option<V>>,
    events: u64,
    position: i64,
    refused: Vec<DeadLetter>,
}

impl<V: View> Fold<V> {
    fn new(projection: Projection) -> Self {
        Self {
            projection,
            rows: HashMap::new(),
            events: 0,
            position: 0,
            refused: Vec::new(),
        }
    }

    fn apply(&mut self, event: &RecordedEvent) {
        // Keyed by stream id; a stream's id is checked once, when first
        // seen (this is the hot loop of a rebuild).
        if !self.rows.contains_key(event.stream_id.as_str()) {
            if let Err(reason) = store::key_of(&V::DECLARATION, &event.stream_id) {
                self.refused
                    .push(stored_dead_letter(event.position, reason));
                return;
            }
            self.rows.insert(event.stream_id.clone(), None);
        }
        let row = self
            .rows
            .get_mut(event.stream_id.as_str())
            .expect("inserted above");
        let current = row.as_ref().map_or(0, V::version);
        // The global order keeps each stream's versions in order (a
        // stream's next version is appended by a later transaction), so
        // anything else is refused rather than guessed at.
        if event.version != current + 1 {
            self.refused.push(stored_dead_letter(
                event.position,
                format!(
                    "{} version {} follows version {current}",
                    event.stream_id, event.version
                ),
            ));
            return;
        }
        match V::apply(row, event) {
            Ok(()) => {
                self.events += 1;
                self.position = self.position.max(event.position);
            }
            Err(error) => self
                .refused
                .push(stored_dead_letter(event.position, error.to_string())),
        }
    }

    /// Writes the folded rows into the projection's shadow table.
    async fn write(self, pool: &PgPool, report: &mut Progressing) -> anyhow::Result<()> {
        let projection = self.projection;
        let shadow = format!("{}_shadow", projection.table());
        let rows: Vec<V> = self.rows.into_values().flatten().collect();
        // A few connections write chunks side by side: encoding the rows
        // here and parsing them there then use both sides' cores.
        let mut writers = tokio::task::JoinSet::new();
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() || !writers.is_empty() {
            while writers.len() < WRITERS && rows.peek().is_some() {
                let chunk: Vec<V> = rows.by_ref().take(WRITE_CHUNK).collect();
                let (pool, shadow) = (pool.clone(), shadow.clone());
                writers.spawn(async move {
                    let mut conn = pool.acquire().await.context("writing the shadow table")?;
                    store::insert_new(&mut conn, &shadow, &chunk).await
                });
            }
            if let Some(written) = writers.join_next().await {
                written.context("a shadow writer panicked")??;
            }
        }
        report.report.refused += self.refused.len() as u64;
        let mut conn = pool.acquire().await.context("writing dead letters")?;
        store::dead_letter(&mut conn, &self.refused).await?;
        report.add(projection, self.events, self.position);
        Ok(())
    }
}

/// A [`Fold`] of any view type.
trait Folding: Send {
    fn apply(&mut self, event: &RecordedEvent);

    fn write<'a>(
        self: Box<Self>,
        pool: &'a PgPool,
        report: &'a mut Progressing,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;
}

impl<V: View> Folding for Fold<V> {
    fn apply(&mut self, event: &RecordedEvent) {
        Fold::apply(self, event);
    }

    fn write<'a>(
        self: Box<Self>,
        pool: &'a PgPool,
        report: &'a mut Progressing,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(Fold::write(*self, pool, report))
    }
}

/// Makes an empty fold of a projection's view type.
struct NewFold(Projection);

impl WithView for NewFold {
    type Output = Box<dyn Folding>;
    fn with<V: View>(self) -> Box<dyn Folding> {
        Box::new(Fold::<V>::new(self.0))
    }
}

/// The folds of the projections being rebuilt, each with its declaration;
/// an event goes to every fold whose read model takes its stream.
struct Folds(Vec<(Declaration, Box<dyn Folding>)>);

impl Folds {
    fn new(projections: &[Projection]) -> Self {
        Self(
            projections
                .iter()
                .map(|&p| (p.declaration(), p.with_view(NewFold(p))))
                .collect(),
        )
    }

    fn apply(&mut self, event: &RecordedEvent) {
        for (declaration, fold) in &mut self.0 {
            if declaration.takes(&event.stream_id) {
                fold.apply(event);
            }
        }
    }

    async fn write(self, pool: &PgPool) -> anyhow::Result<Progressing> {
        let mut report = Progressing::default();
        for (_, fold) in self.0 {
            fold.write(pool, &mut report).await?;
        }
        Ok(report)
    }
}
