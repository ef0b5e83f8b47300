//! Rebuilding read models from the event store while the current ones keep
//! serving.
//!
//! 1. Take the projection's rebuild lock (one rebuild at a time, across
//!    processes) and create an empty `<table>_shadow`.
//! 2. Read the whole log in global order (one streamed query, documents as
//!    JSON text) and fold it in memory (`fold`: each event into every read
//!    model being rebuilt that takes its stream), then write the rows into
//!    the shadows with `COPY` and build their indexes.
//! 3. Catch the shadow up with what was appended meanwhile, row by row.
//! 4. In one transaction: take the projection's exclusive lock (live writes
//!    to the table hold it shared, so none is in flight), catch up the last
//!    events, rename the shadow into place and drop the old table.
//!
//! Everything readable when the swap commits is in the new table; anything
//! later reaches the live consumer from Kafka and is applied to the new
//! table, whose rows carry their stream versions, so nothing that arrived
//! during the rebuild is lost or applied twice.

mod fold;
mod shadow;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use event_store::{Checkpoint, EventStore, RecordedEvent};
use futures::StreamExt;
use sqlx::{Connection, PgConnection, PgPool};

use self::fold::Folds;
use self::shadow::{create_shadows, index_shadows, swap_in};
use crate::store::{self, DeadLetter};
use crate::views::Projection;

/// Advisory lock class of rebuilds: (class, projection) is held for the
/// whole rebuild, on a connection of its own.
pub const REBUILD_LOCK_CLASS: i32 = 0x7265_6275; // "rebu"

/// Rebuilds run one after another in a process. Each uses up to
/// `WRITERS + 1` of the pool's connections at once, and the live consumer
/// and the status reports need theirs: several rebuilds side by side (one
/// per `POST /v1/projections/{name}/rebuild`) could leave a query waiting
/// past the pool's acquire timeout, which fails its rebuild.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Events read per query.
const PAGE: u32 = 5_000;
/// Indexes of the shadow tables built at once.
const INDEXERS: usize = 2;
/// Shadow tables written at once, each by one `COPY` on a connection of
/// its own.
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
    /// Time spent reading and folding the log, writing the rows into the
    /// shadow tables, indexing them, and catching up and swapping.
    pub phases: [Duration; 4],
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

    /// Rebuilds from the event store and swaps the new tables in. Rebuilds
    /// of one process take turns (see [`ONE_AT_A_TIME`]); until its turn
    /// comes, a rebuild holds its lock and shows as `rebuilding`.
    pub async fn run(
        self,
        pool: &PgPool,
        store: &EventStore,
        progress: &dyn Progress,
    ) -> anyhow::Result<Report> {
        let _turn = ONE_AT_A_TIME.lock().await;
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
    create_shadows(pool, projections, total).await?;
    let (folds, mut after, mut read) = fold_log(pool, store, projections, progress).await?;
    let folded = started.elapsed();
    let mut report = folds.write(pool).await?;
    let copied = started.elapsed();
    let tables: Vec<&'static str> = projections.iter().map(|p| p.table()).collect();
    let indexes = index_shadows(pool, &tables).await?;
    let written = started.elapsed();
    report.report.phases = [folded, copied - folded, written - copied, Duration::ZERO];

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
    read += swap(pool, store, projections, &indexes, after, &mut report).await?;
    progress.advanced(read);
    report.report.events_read = read;
    report.report.elapsed = started.elapsed();
    report.report.phases[3] = report.report.elapsed - written;
    Ok(report.report)
}

/// The last step, in one transaction: under every projection's exclusive
/// lock no live write is in flight, so once the last events are caught up
/// the shadows hold everything and can take the tables' place. Returns how
/// many events it read.
async fn swap(
    pool: &PgPool,
    store: &EventStore,
    projections: &[Projection],
    indexes: &[Vec<String>],
    mut after: Checkpoint,
    report: &mut Progressing,
) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await.context("starting the swap")?;
    for projection in projections {
        sqlx::query("select pg_advisory_xact_lock($1, $2)")
            .bind(store::LOCK_CLASS)
            .bind(projection.lock_id())
            .execute(&mut *tx)
            .await
            .context("taking the projection's exclusive lock")?;
    }
    let mut read = 0;
    loop {
        let (count, next) = catch_up(&mut tx, store, projections, after, report).await?;
        read += count;
        after = next;
        if count < u64::from(PAGE) {
            break;
        }
    }
    for (projection, indexes) in projections.iter().zip(indexes) {
        let (events, position) = report.totals(*projection);
        swap_in(&mut tx, *projection, indexes, events, position).await?;
    }
    tx.commit().await.context("committing the swap")?;
    Ok(read)
}

/// Reads the whole log in global order and folds it in memory; returns the
/// folds, the checkpoint of the last event read and how many were read.
async fn fold_log(
    pool: &PgPool,
    store: &EventStore,
    projections: &[Projection],
    progress: &dyn Progress,
) -> anyhow::Result<(Folds, Checkpoint, u64)> {
    let mut folds = Folds::new(projections);
    let mut after = Checkpoint::START;
    let mut read = 0u64;
    let mut last_saved = Instant::now();
    // Reading and folding overlap: PostgreSQL produces the rows of one
    // query over the whole log, a task decodes them into pages, and this
    // one folds.
    let (pages, mut reading) = tokio::sync::mpsc::channel(2);
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            // Only the events' data is folded: their metadata is left out.
            let mut events = store.stream_all_raw(Checkpoint::START, false);
            let mut page = Vec::with_capacity(PAGE as usize);
            while let Some(event) = events.next().await {
                page.push(event?);
                if page.len() == PAGE as usize {
                    let full = std::mem::replace(&mut page, Vec::with_capacity(PAGE as usize));
                    if pages.send(full).await.is_err() {
                        return anyhow::Ok(());
                    }
                }
            }
            if !page.is_empty() {
                let _ = pages.send(page).await;
            }
            Ok(())
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
    Ok((folds, after, read))
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
