//! What the Kafka consumers of the platform (the projector's and the
//! orchestrator's) share: their settings, and offsets committed in batches.
//!
//! Both consumers make a redelivered message change nothing, so an offset
//! committed late (or lost) only means some messages are delivered again.
//! That lets them commit at most every [`COMMIT_EVERY`] instead of after
//! every batch: each commit is a write on the broker's group coordinator,
//! and on a small broker (tansu with sqlite, where every storage request
//! waits in one queue) frequent commits delay the heartbeats behind them
//! until the group's session times out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Longest time between receiving a message and committing its offset.
pub const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// The settings of a consumer in `group` that commits its own offsets
/// (after applying) and starts from the beginning of the log when the
/// group has none.
///
/// The session timeout is generous (30 s rather than librdkafka's 45 s or
/// the 10 s often seen): a busy broker answering a heartbeat late must not
/// cost the group a rebalance, while a consumer that stops without leaving
/// the group (killed) still hands its partitions over within half a
/// minute. A consumer that closes normally leaves the group at once.
pub fn config(base: &ClientConfig, group: &str, fetch_wait_ms: u32) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "30000")
        .set("heartbeat.interval.ms", "3000")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string());
    config
}

/// Past this many bytes of payload a batch takes no more messages.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Fills `batch` (which should be empty) with the next messages: waits for
/// one, committing `offsets` whenever nothing arrives for
/// [`COMMIT_EVERY`], then takes whatever else is already waiting, up to
/// `max` messages or [`MAX_BATCH_BYTES`] of payload, whichever comes
/// first (a batch message of the relay holds hundreds of events).
pub async fn next_batch(
    consumer: &StreamConsumer,
    offsets: &mut Offsets,
    batch: &mut Vec<OwnedMessage>,
    max: usize,
) -> anyhow::Result<()> {
    let first = loop {
        match tokio::time::timeout(COMMIT_EVERY, consumer.recv()).await {
            Ok(message) => break message.context("receiving from Kafka")?,
            Err(_idle) => offsets.commit(consumer),
        }
    };
    let payload_len = |message: &OwnedMessage| message.payload().map_or(0, <[u8]>::len);
    let first = first.detach();
    let mut bytes = payload_len(&first);
    batch.push(first);
    while batch.len() < max && bytes < MAX_BATCH_BYTES {
        match tokio::time::timeout(Duration::from_millis(2), consumer.recv()).await {
            Ok(message) => {
                let message = message.context("receiving from Kafka")?.detach();
                bytes += payload_len(&message);
                batch.push(message);
            }
            Err(_) => break,
        }
    }
    Ok(())
}

/// The offsets after the messages handled so far, per partition, not yet
/// committed.
#[derive(Debug)]
pub struct Offsets {
    pending: BTreeMap<(String, i32), i64>,
    last_commit: Instant,
}

impl Default for Offsets {
    fn default() -> Self {
        Self::new()
    }
}

impl Offsets {
    pub fn new() -> Self {
        Self {
            pending: BTreeMap::new(),
            last_commit: Instant::now(),
        }
    }

    /// Records that `messages` are handled (their effects are durable).
    pub fn handled<'a, M: Message + 'a>(&mut self, messages: impl IntoIterator<Item = &'a M>) {
        for message in messages {
            let next = self
                .pending
                .entry((message.topic().to_owned(), message.partition()))
                .or_insert(0);
            *next = (*next).max(message.offset() + 1);
        }
    }

    /// Whether anything handled is not committed yet.
    pub fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Commits if the last commit is [`COMMIT_EVERY`] old.
    pub fn commit_if_due<C: Consumer>(&mut self, consumer: &C) {
        if self.last_commit.elapsed() >= COMMIT_EVERY {
            self.commit(consumer);
        }
    }

    /// Commits what is pending, asynchronously: a commit that fails or is
    /// lost only means a redelivery.
    pub fn commit<C: Consumer>(&mut self, consumer: &C) {
        self.last_commit = Instant::now();
        if self.pending.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in std::mem::take(&mut self.pending) {
            if let Err(error) =
                offsets.add_partition_offset(&topic, partition, Offset::Offset(offset))
            {
                tracing::debug!(%error, "an offset could not be listed; it will be redelivered");
            }
        }
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(%error, "committing offsets failed; they will be redelivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedHeaders, OwnedMessage, Timestamp};

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "events".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None::<OwnedHeaders>,
        )
    }

    #[test]
    fn keeps_the_offset_after_the_highest_message_per_partition() {
        let mut offsets = Offsets::new();
        assert!(!offsets.is_pending());
        offsets.handled(&[message(0, 4), message(1, 9), message(0, 7), message(0, 5)]);
        assert!(offsets.is_pending());
        assert_eq!(
            offsets.pending,
            BTreeMap::from([
                (("events".to_owned(), 0), 8),
                (("events".to_owned(), 1), 10)
            ])
        );
    }
}
