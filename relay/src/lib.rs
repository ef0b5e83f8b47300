//! The relay: publishes the event store's log to Kafka in global order, and
//! the wire format its messages have, which every consumer decodes.
//!
//! - Exactly one relay is active across all replicas: it holds a PostgreSQL
//!   session advisory lock on a connection of its own. When its process or
//!   connection dies the lock is released and a standby, retrying every
//!   `poll_interval`, takes over.
//! - The checkpoint is written only after the broker acknowledged every
//!   event up to it, at most every [`CHECKPOINT_EVERY`] while publishing and
//!   within a poll interval when idle, so after a crash events may be
//!   published again but none is skipped. Consumers deduplicate by
//!   (stream_id, version).
//! - A stream's events all go to one partition, chosen from its id as
//!   librdkafka's default partitioner would ([`partition_of`]), so its
//!   order holds within the partition whatever the [`MessageFormat`].
//! - By default a message is one event: key = stream_id, value = the event
//!   as JSON, CloudEvents binary-mode headers. [`MessageFormat::Batch`]
//!   sends one message per partition and publish round instead, its value
//!   a JSON array of the events in log order; [`decode`] reads either.
//!
//! Layout: `publish` is the relay itself (election, checkpoint, producer,
//! metrics) and the only part that touches PostgreSQL; `wire` is what a
//! message holds ([`MessageFormat`], [`partition_of`], [`decode`]); `topic`
//! creates the events topic. It is a crate of its own so that the event
//! store is only the log, and Kafka is linked only where it is used.

mod publish;
mod topic;
mod wire;

pub use publish::{DEFAULT_LINGER_MS, MAX_RESTART_DELAY, RelayConfig, RelayMetrics, backlog, run};
pub use topic::{EVENTS_TOPIC_PARTITIONS, ensure_topic};
pub use wire::{
    BATCH_MESSAGE_BYTES, MessageFormat, cloudevents_headers, decode, partition_of, warn_forged,
};
