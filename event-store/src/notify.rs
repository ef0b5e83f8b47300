//! Wakes subscribers after appends.
//!
//! A `NOTIFY` inside each append transaction would serialise all appending
//! commits (PostgreSQL takes a database-wide lock at commit to queue
//! notifications in order). Instead, appends poke a local task after they
//! commit, and the task sends at most one `NOTIFY` every
//! [`MIN_INTERVAL`], coalescing pokes that arrive meanwhile (a busy writer
//! would otherwise pay a second statement per append). A notification lost
//! in a crash costs a subscriber one polling interval, nothing more.

use std::time::Duration;

use tokio::sync::mpsc;

/// The longest a subscriber waits for a wake-up beyond the commit.
const MIN_INTERVAL: Duration = Duration::from_millis(5);

/// The channel subscribers `LISTEN` on.
pub(crate) const CHANNEL: &str = "event_store_appended";

#[derive(Clone)]
pub(crate) struct Notifier {
    poke: mpsc::Sender<()>,
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
        Self { poke }
    }

    pub(crate) fn appended(&self) {
        let _ = self.poke.try_send(());
    }
}
