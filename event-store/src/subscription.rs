//! Following the whole log: catch up from a checkpoint, then receive live
//! appends, woken at once by appends in this process and by LISTEN/NOTIFY
//! for appends elsewhere, with a bounded polling fallback.

use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::notify::CHANNEL;
use crate::{Checkpoint, Document, EventStore, RecordedEvent, Result};

/// The shortest time between two reads of a caught-up subscription, so a
/// steady stream of appends is read in batches, not one query per append.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(5);

/// How a subscription reads.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionOptions {
    /// Events read per query.
    pub batch_size: u32,
    /// Longest wait between two reads when no notification arrives; bounds
    /// the delay when a notification is lost or readers were held back by
    /// a transaction that did not append.
    pub poll_interval: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// A running subscription, handing out events whose documents are `D`
/// (see [`Document`]); dropping it stops the reader.
pub struct Subscription<D = Value> {
    events: mpsc::Receiver<Result<RecordedEvent<D>>>,
    stop: CancellationToken,
}

impl<D> Subscription<D> {
    /// The next event in global order, or the error that ended the
    /// subscription. `None` once it has stopped.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent<D>>> {
        self.events.recv().await
    }

    /// Waits for at least one event, then takes every event already
    /// waiting, up to `max`, into `into`. Returns how many were added; 0
    /// once the subscription has stopped.
    pub async fn next_batch(
        &mut self,
        into: &mut Vec<Result<RecordedEvent<D>>>,
        max: usize,
    ) -> usize {
        self.events.recv_many(into, max).await
    }
}

impl<D> Drop for Subscription<D> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl EventStore {
    /// Follows the log from just after `after`: every event committed later
    /// arrives exactly once, in global order.
    pub fn subscribe(&self, after: Checkpoint, options: SubscriptionOptions) -> Subscription {
        self.subscribe_as(after, options)
    }

    /// [`EventStore::subscribe`] with the events' documents left as the
    /// stored JSON text (see [`EventStore::read_all_raw`]).
    pub fn subscribe_raw(
        &self,
        after: Checkpoint,
        options: SubscriptionOptions,
    ) -> Subscription<Box<RawValue>> {
        self.subscribe_as(after, options)
    }

    fn subscribe_as<D: Document>(
        &self,
        after: Checkpoint,
        options: SubscriptionOptions,
    ) -> Subscription<D> {
        let (sender, events) = mpsc::channel(options.batch_size as usize);
        let stop = CancellationToken::new();
        let store = self.clone();
        let stopped = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopped.cancelled() => {}
                () = store.follow(after, options, &sender) => {}
            }
        });
        Subscription { events, stop }
    }

    async fn follow<D: Document>(
        &self,
        mut after: Checkpoint,
        options: SubscriptionOptions,
        sender: &mpsc::Sender<Result<RecordedEvent<D>>>,
    ) {
        let mut listener = match self.listen().await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "LISTEN failed; the subscription polls");
                None
            }
        };
        let mut local_appends = self.notifier.local_appends();
        loop {
            // Appends from now on wake the wait below.
            local_appends.borrow_and_update();
            let read_at = tokio::time::Instant::now();
            let batch = match self.read_all_as::<D>(after, options.batch_size).await {
                Ok(batch) => batch,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let full = batch.len() == options.batch_size as usize;
            for event in batch {
                after = event.checkpoint();
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            // Caught up: wait for an append here or a notification from
            // elsewhere, at most one interval.
            let notified = async {
                match &mut listener {
                    Some(l) => {
                        if let Err(error) = l.recv().await {
                            tracing::debug!(%error, "LISTEN connection lost; reconnecting");
                            tokio::time::sleep(options.poll_interval).await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = notified => {}
                _ = local_appends.changed() => {}
                () = tokio::time::sleep(options.poll_interval) => {}
            }
            // Under a steady stream of appends, read in batches rather than
            // once per append.
            tokio::time::sleep_until(read_at + MIN_READ_INTERVAL).await;
        }
    }

    async fn listen(&self) -> Result<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }
}
