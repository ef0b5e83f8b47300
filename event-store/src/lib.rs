//! An ordered event log on PostgreSQL: appends with optimistic concurrency,
//! reads of one stream or of the whole log in global order without gaps,
//! snapshots and upcasting of old event shapes. Publishing the log to Kafka
//! is the `event-relay` crate's job.
//!
//! Layout: [`model`] holds the values the store takes and returns; `append`,
//! `read`, `subscription`, `snapshot` each add their part of [`EventStore`];
//! `verify` checks the events a broker's message claims against the store;
//! [`upcast`] turns old schema versions into current ones on read. The
//! store is generic over event types: it stores JSON with a type name and
//! schema version, and the caller owns the meaning.
//!
//! Only this crate knows the `events` table.

mod append;
mod error;
mod group;
pub mod model;
mod notify;
mod read;
mod snapshot;
mod subscription;
pub mod upcast;
mod verify;

use std::sync::Arc;

pub use append::{AppendError, AppendOutcome};
pub use error::Error;
pub use model::{
    Appended, Checkpoint, ExpectedVersion, Metadata, NewEvent, RawEvent, RecordedEvent,
    StreamAppend,
};
pub use read::{Document, HeldBack};
pub use snapshot::{FromSnapshot, Snapshot};
pub use subscription::{Subscription, SubscriptionOptions};
pub use upcast::Upcasters;
pub use verify::{Forged, Forgery, Verified};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The event store: a PostgreSQL pool plus the upcasters applied on read.
#[derive(Clone)]
pub struct EventStore {
    pool: sqlx::PgPool,
    upcasters: Arc<Upcasters>,
    notifier: notify::Notifier,
    group: group::GroupCommit,
}

impl EventStore {
    /// A store over `pool`; call [`EventStore::migrate`] once at start-up.
    /// Must be called inside a tokio runtime (it starts the task that wakes
    /// subscribers after appends and the tasks that write appends in
    /// groups).
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self::with_upcasters(pool, Upcasters::default())
    }

    pub fn with_upcasters(pool: sqlx::PgPool, upcasters: Upcasters) -> Self {
        let pool = own_pool(&pool);
        let notifier = notify::Notifier::start(pool.clone());
        let group = group::GroupCommit::start(pool.clone(), notifier.clone());
        Self {
            pool,
            upcasters: Arc::new(upcasters),
            notifier,
            group,
        }
    }

    /// The store's own pool (see [`own_pool`]): for a transaction that
    /// appends with [`EventStore::append_in`].
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Applies the event store's migrations (idempotent). Its versions are
    /// 1-999; other crates' migrations in the same database are left alone.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        migrator().run(&self.pool).await
    }
}

/// The event store's migrations, for [`EventStore::migrate`] and for
/// services that check the schema has them before they start. They grant
/// the platform's database roles what each may do with the log, so those
/// roles must exist first (`service_kit::db::bootstrap`).
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// A pool like `pool` (same database, options and size) whose connections
/// never choose a sequential scan where an index serves.
///
/// Every query of the store goes by an index, but PostgreSQL plans a
/// prepared statement once per connection and keeps that plan: planned
/// while `events` was small (a new database, right after a few appends),
/// the append statement's check for stored event ids becomes a hash join
/// over a scan of the whole table, and it stays one as the table grows,
/// until the next `ANALYZE` happens to replan it, and every append then
/// reads the whole table (BENCHMARKS.md). The store's connections come on
/// top of the caller's pool: up to twice its size in all.
fn own_pool(pool: &sqlx::PgPool) -> sqlx::PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options([("enable_seqscan", "off")]);
    let settings = pool.options();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(settings.get_max_connections())
        .acquire_timeout(settings.get_acquire_timeout())
        .connect_lazy_with(options)
}
