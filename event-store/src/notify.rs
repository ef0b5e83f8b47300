//! Wakes subscribers after appends.
//!
//! A subscriber in the process that appended is woken at once, in memory.
//! Subscribers in other processes `LISTEN`: after appends, a local task
//! sends at most one `NOTIFY` every [`MIN_INTERVAL`], coalescing the pokes
//! that arrive meanwhile. Not one per append: a `NOTIFY` is a transaction
//! of its own that takes an id and flushes a commit record, and a
//! `NOTIFY` inside each append transaction would serialise all appending
//! commits (PostgreSQL takes a database-wide lock at commit to queue
//! notifications in order). A notification lost in a crash costs a
//! subscriber one polling interval, nothing more.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// The longest a subscriber in another process waits for a wake-up beyond
/// the commit.
const MIN_INTERVAL: Duration = Duration::from_millis(20);

/// The channel subscribers `LISTEN` on.
pub(crate) const CHANNEL: &str = "event_store_appended";

#[derive(Clone)]
pub(crate) struct Notifier {
    poke: mpsc::Sender<()>,
    local: Arc<watch::Sender<()>>,
}

impl Notifier {
    pub(crate) fn start(pool: sqlx::PgPool) -> Self {
        // Capacity one: a poke that finds the slot full is already covered
        // by the notification that slot will cause.
        let (poke, mut pokes) = mpsc::channel::<()>(1);
        tokio::spawn(async move {
            while pokes.recv().await.is_some() {
                let sent = sqlx::query("select pg_notify($1, '')")
                    .bind(CHANNEL)
                    .execute(&pool)
                    .await;
                if let Err(error) = sent {
                    tracing::debug!(%error, "notifying subscribers failed; they will poll");
                }
                tokio::time::sleep(MIN_INTERVAL).await;
            }
        });
        Self {
            poke,
            local: Arc::new(watch::channel(()).0),
        }
    }

    pub(crate) fn appended(&self) {
        self.local.send_replace(());
        let _ = self.poke.try_send(());
    }

    /// Changes after every append made through this store (or a clone of
    /// it) in this process.
    pub(crate) fn local_appends(&self) -> watch::Receiver<()> {
        self.local.subscribe()
    }
}
