//! The relay: publishes the stored log to Kafka in global order.
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

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::{Checkpoint, EventStore, RecordedEvent, SubscriptionOptions};

/// How the relay publishes.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Names the checkpoint row; relays of different logs need different
    /// names.
    pub name: String,
    pub topic: String,
    pub partitions: i32,
    /// CloudEvents `source` of every event.
    pub source: String,
    /// What a message holds.
    pub format: MessageFormat,
    /// The producer's `linger.ms`: how long it waits for more events before
    /// sending a request.
    pub linger_ms: u32,
    pub batch_size: u32,
    /// The advisory lock key that elects the active relay.
    pub lock_key: i64,
    /// How often a standby tries to take over and how often the active one
    /// checks it still holds the lock.
    pub poll_interval: Duration,
}

impl RelayConfig {
    pub fn new(topic: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            name: "kafka".into(),
            topic: topic.into(),
            partitions: EVENTS_TOPIC_PARTITIONS,
            source: source.into(),
            format: MessageFormat::CloudEvents,
            linger_ms: DEFAULT_LINGER_MS,
            batch_size: 1000,
            lock_key: 0x6576_656e_7473,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// What the relay puts in a Kafka message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageFormat {
    /// One event per message, keyed by its stream id, with the CloudEvents
    /// binary-mode headers (`ce_specversion`, `ce_id`, `ce_source`,
    /// `ce_type`, `ce_time`, `ce_subject`, `content-type`) and
    /// `traceparent` when the event carries one.
    #[default]
    CloudEvents,
    /// One event per message, keyed by its stream id, without headers: a
    /// broker that stores every header as a row of its own (tansu with
    /// sqlite) publishes and serves several times more events per second.
    Plain,
    /// The events of one publish round and partition in one message, a
    /// JSON array in log order, without key or headers. tansu's work goes
    /// with the number of records (it inserts each one and queries its
    /// headers on every fetch): under the saga benchmark at 200 orders/s
    /// it used about half the CPU it uses for `Plain` (BENCHMARKS.md).
    /// Consumers see fewer, larger messages.
    Batch,
}

impl MessageFormat {
    /// The names the settings use.
    pub const NAMES: [&str; 3] = ["cloudevents", "plain", "batch"];
}

impl std::str::FromStr for MessageFormat {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "cloudevents" => Ok(Self::CloudEvents),
            "plain" => Ok(Self::Plain),
            "batch" => Ok(Self::Batch),
            other => Err(format!(
                "unknown message format {other:?}; one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// The largest batch message the relay builds, in bytes of JSON; a round's
/// events beyond it go into further messages (an event larger than this
/// goes alone). Well under the 1 MB that brokers and librdkafka accept by
/// default.
pub const BATCH_MESSAGE_BYTES: usize = 256 * 1024;

/// The partition of a stream's events: the CRC-32 of its id modulo the
/// partition count, which is what librdkafka's default partitioner
/// (`consistent_random`) picks for that key, so a topic filled before the
/// relay chose partitions itself keeps every stream where it was.
pub fn partition_of(stream_id: &str, partitions: i32) -> i32 {
    const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    (CRC32.checksum(stream_id.as_bytes()) % partitions.max(1) as u32) as i32
}

/// The events a message holds: one event or, from a [`MessageFormat::Batch`]
/// relay, a JSON array of them.
pub fn decode(payload: &[u8]) -> serde_json::Result<Vec<RecordedEvent>> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(payload),
        _ => serde_json::from_slice(payload).map(|event| vec![event]),
    }
}

/// The producer's `linger.ms` unless configured. Each produce request costs
/// tansu a few queries per partition (it plans every statement anew), so
/// waiting 25 ms instead of 5 for more events sends fewer, larger requests:
/// under the saga benchmark the broker used about 12% less CPU and the
/// platform handled 150 orders/s more steadily, for about 40 ms more from
/// placement to a saga's start (BENCHMARKS.md).
pub const DEFAULT_LINGER_MS: u32 = 25;

/// Relay metrics, registered in a service's registry.
#[derive(Clone, Default)]
pub struct RelayMetrics {
    pub published: Counter,
    pub lag_events: Gauge,
    pub lag_seconds: Gauge<f64, AtomicU64>,
    pub active: Gauge,
    /// Committed events no reader of the global order can read yet because
    /// an older writing transaction is still open.
    pub held_back_events: Gauge,
    /// Age of the oldest open writing transaction.
    pub held_back_seconds: Gauge<f64, AtomicU64>,
}

impl RelayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "relay_published_events",
            "Events the relay published and the broker acknowledged",
            metrics.published.clone(),
        );
        registry.register(
            "relay_lag_events",
            "Readable events not yet published",
            metrics.lag_events.clone(),
        );
        registry.register(
            "relay_lag_seconds",
            "Age of the oldest event not yet published",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "relay_active",
            "1 while this process is the active relay (also between its failed attempts, until another process takes over)",
            metrics.active.clone(),
        );
        registry.register(
            "event_store_readers_held_back_events",
            "Committed events readers cannot read yet because an older writing transaction is open",
            metrics.held_back_events.clone(),
        );
        registry.register(
            "event_store_readers_held_back_seconds",
            "Age of the oldest open writing transaction, which bounds what readers may read",
            metrics.held_back_seconds.clone(),
        );
        metrics
    }
}

/// Runs the relay until `shutdown`: waits to become the active relay, then
/// publishes; on any failure starts over from the stored checkpoint. When
/// `stalled(since)` resolves (the caller's watchdog found the relay behind
/// with no progress, and `since`, the start of this attempt, long enough
/// ago), it also starts over, with a new producer: a broker connection that
/// stopped answering is replaced rather than waited on forever. Restarts
/// wait `poll_interval`, doubling up to [`MAX_RESTART_DELAY`] while no
/// attempt publishes anything.
pub async fn run<S, F>(
    store: EventStore,
    kafka: ClientConfig,
    config: RelayConfig,
    metrics: RelayMetrics,
    stalled: S,
    shutdown: CancellationToken,
) where
    S: Fn(Instant) -> F,
    F: Future<Output = ()>,
{
    let mut delay = config.poll_interval;
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let published = metrics.published.get();
        let result = tokio::select! {
            () = shutdown.cancelled() => Ok(()),
            result = lead(&store, &kafka, &config, &metrics) => result,
            () = stalled(started) => Err(anyhow::anyhow!(
                "stalled: behind with no progress; recreating the producer"
            )),
        };
        if metrics.published.get() > published {
            delay = config.poll_interval;
        }
        if let Err(error) = result {
            tracing::warn!(
                error = format!("{error:#}"),
                retry_in_ms = delay.as_millis() as u64,
                "relay stopped; starting over"
            );
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RESTART_DELAY);
        }
    }
    metrics.active.set(0);
}

/// The longest wait between two attempts of a relay that keeps failing.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// Where the relay called `name` has published up to (its stored
/// checkpoint, so at most [`CHECKPOINT_EVERY`] behind the truth while it
/// publishes), and how many readable events come after it: what a monitor
/// measures to tell a relay that is behind from one that is idle.
pub async fn backlog(store: &EventStore, name: &str) -> anyhow::Result<(i64, u64)> {
    let checkpoint = load_checkpoint(store, name).await?;
    let behind = store
        .count_after(checkpoint)
        .await
        .context("counting the events after the relay's checkpoint")?;
    Ok((checkpoint.position, behind))
}

/// Becomes the active relay and publishes until something fails.
async fn lead(
    store: &EventStore,
    kafka: &ClientConfig,
    config: &RelayConfig,
    metrics: &RelayMetrics,
) -> anyhow::Result<()> {
    let mut lock = PgConnection::connect_with(&store.pool().connect_options())
        .await
        .context("connecting for the relay lock")?;
    loop {
        let acquired: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
            .bind(config.lock_key)
            .fetch_one(&mut lock)
            .await
            .context("trying the relay lock")?;
        if acquired {
            break;
        }
        // Another process is the active relay. Until then this one counts
        // as active even between failed attempts: a relay that keeps
        // failing is stuck, not standing by.
        metrics.active.set(0);
        tokio::time::sleep(config.poll_interval).await;
    }
    tracing::info!(topic = %config.topic, "this process is now the active relay");
    metrics.active.set(1);

    ensure_topic(kafka, &config.topic, config.partitions).await?;
    let producer: FutureProducer = kafka
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", config.linger_ms.to_string())
        .set("compression.type", "lz4")
        .create()
        .context("creating the relay's producer")?;
    // A topic that existed keeps its own partition count.
    let partitions = partition_count(&producer, &config.topic).await?;

    let mut checkpoint = load_checkpoint(store, &config.name).await?;
    let mut saved = (checkpoint, Instant::now());
    let mut subscription = store.subscribe(
        checkpoint,
        SubscriptionOptions {
            batch_size: config.batch_size,
            poll_interval: config.poll_interval.min(Duration::from_millis(500)),
        },
    );
    let mut last_lag_update = Instant::now() - Duration::from_secs(10);
    let mut received = Vec::with_capacity(config.batch_size as usize);
    let mut batch = Vec::with_capacity(config.batch_size as usize);
    loop {
        // Wait for events, checking the lock meanwhile.
        let count = tokio::select! {
            count = subscription.next_batch(&mut received, config.batch_size as usize) => count,
            () = tokio::time::sleep(config.poll_interval) => {
                still_holding(&mut lock).await?;
                if saved.0 != checkpoint {
                    save_checkpoint(store, &config.name, checkpoint).await?;
                    saved = (checkpoint, Instant::now());
                }
                update_lag(store, checkpoint, metrics, &mut last_lag_update).await;
                continue;
            }
        };
        if count == 0 {
            anyhow::bail!("the subscription ended");
        }
        for event in received.drain(..) {
            batch.push(event?);
        }
        publish(&producer, config, partitions, &batch).await?;
        checkpoint = batch.last().expect("not empty").checkpoint();
        // Under load, batches are small and frequent; saving after each
        // would cost a commit per batch. A crash republishes at most the
        // batches since the last save, which consumers deduplicate.
        if saved.1.elapsed() >= CHECKPOINT_EVERY {
            still_holding(&mut lock).await?;
            save_checkpoint(store, &config.name, checkpoint).await?;
            saved = (checkpoint, Instant::now());
        }
        metrics.published.inc_by(batch.len() as u64);
        batch.clear();
        update_lag(store, checkpoint, metrics, &mut last_lag_update).await;
    }
}

async fn still_holding(lock: &mut PgConnection) -> anyhow::Result<()> {
    // The lock lives as long as this connection; if the connection is gone
    // so is the lock, and another relay may be active.
    lock.ping()
        .await
        .context("the relay lock connection was lost")
}

/// The longest the relay goes without saving its checkpoint while it
/// publishes; when idle it saves within `poll_interval`.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The number of partitions of the events topic; consumers that create the
/// topic before the relay does must use the same figure.
///
/// It bounds how many instances of one consumer group (projectors, saga
/// intakes) share the work; the saga executors share sagas through leases,
/// not partitions. It is small because every partition costs the broker
/// per produce request and per fetch: tansu checks the producer and moves
/// the watermark per partition batch and queries every partition on every
/// fetch, and with 2 partitions instead of 6 it used about a fifth less
/// CPU under the saga benchmark (BENCHMARKS.md). A topic that exists keeps
/// the partitions it was created with.
pub const EVENTS_TOPIC_PARTITIONS: i32 = 2;

/// Creates `topic` with `partitions` unless it exists. The broker does not
/// create topics on first use, so the relay and every consumer call this at
/// start-up (whoever comes first creates it).
pub async fn ensure_topic(
    kafka: &ClientConfig,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        kafka.create().context("creating the admin client")?;
    let topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating the events topic")?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// How many partitions `topic` has, as the broker says.
async fn partition_count(producer: &FutureProducer, topic: &str) -> anyhow::Result<i32> {
    let producer = producer.clone();
    let topic = topic.to_owned();
    let metadata = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
    })
    .await
    .context("the metadata task failed")?
    .context("reading the events topic's metadata")?;
    let count = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    anyhow::ensure!(count > 0, "the events topic has no partitions yet");
    Ok(count as i32)
}

/// Sends the batch in order and waits until the broker acknowledged all of
/// it. The idempotent producer keeps per-partition order across retries.
async fn publish(
    producer: &FutureProducer,
    config: &RelayConfig,
    partitions: i32,
    batch: &[RecordedEvent],
) -> anyhow::Result<()> {
    let mut deliveries = Vec::with_capacity(batch.len());
    match config.format {
        MessageFormat::Batch => {
            for (partition, payload) in batch_messages(batch, partitions)? {
                let record = FutureRecord::<(), _>::to(&config.topic)
                    .partition(partition)
                    .payload(&payload);
                deliveries.push(send(producer, record)?);
            }
        }
        MessageFormat::CloudEvents | MessageFormat::Plain => {
            for event in batch {
                let payload = serde_json::to_vec(event).context("encoding an event")?;
                let record = FutureRecord::to(&config.topic)
                    .partition(partition_of(&event.stream_id, partitions))
                    .key(event.stream_id.as_str())
                    .payload(&payload);
                deliveries.push(if config.format == MessageFormat::CloudEvents {
                    send(producer, record.headers(cloudevents_headers(config, event)))?
                } else {
                    send(producer, record)?
                });
            }
        }
    }
    for delivery in deliveries {
        delivery
            .await
            .context("the producer dropped a delivery")?
            .map_err(|(error, _)| error)
            .context("the broker did not acknowledge an event")?;
    }
    Ok(())
}

fn send<K: rdkafka::message::ToBytes + ?Sized>(
    producer: &FutureProducer,
    record: FutureRecord<'_, K, Vec<u8>>,
) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
    producer
        .send_result(record)
        .map_err(|(error, _)| error)
        .context("queueing a message for the broker")
}

/// The events of `batch` grouped by partition, each group as JSON arrays
/// of at most [`BATCH_MESSAGE_BYTES`] (or one event), in log order.
fn batch_messages(batch: &[RecordedEvent], partitions: i32) -> anyhow::Result<Vec<(i32, Vec<u8>)>> {
    let mut open: Vec<Option<Vec<u8>>> = vec![None; partitions.max(1) as usize];
    let mut messages = Vec::new();
    let mut json = Vec::new();
    for event in batch {
        let partition = partition_of(&event.stream_id, partitions);
        json.clear();
        serde_json::to_writer(&mut json, event).context("encoding an event")?;
        let slot = &mut open[partition as usize];
        if let Some(message) = slot
            && message.len() + 1 + json.len() + 1 > BATCH_MESSAGE_BYTES
        {
            messages.push((partition, close(slot.take().expect("open"))));
        }
        match slot {
            Some(message) => {
                message.push(b',');
                message.extend_from_slice(&json);
            }
            None => {
                let mut message = Vec::with_capacity(BATCH_MESSAGE_BYTES.min(json.len() * 64));
                message.push(b'[');
                message.extend_from_slice(&json);
                *slot = Some(message);
            }
        }
    }
    for (partition, slot) in open.into_iter().enumerate() {
        if let Some(message) = slot {
            messages.push((partition as i32, close(message)));
        }
    }
    Ok(messages)
}

fn close(mut message: Vec<u8>) -> Vec<u8> {
    message.push(b']');
    message
}

fn cloudevents_headers(config: &RelayConfig, event: &RecordedEvent) -> OwnedHeaders {
    let id = event.event_id.to_string();
    let time = event
        .recorded_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let traceparent = event.metadata.get("traceparent").and_then(|v| v.as_str());
    [
        ("ce_specversion", "1.0"),
        ("ce_id", id.as_str()),
        ("ce_source", config.source.as_str()),
        ("ce_type", event.event_type.as_str()),
        ("ce_time", time.as_str()),
        ("ce_subject", event.stream_id.as_str()),
        ("content-type", "application/json"),
    ]
    .into_iter()
    .chain(traceparent.map(|value| ("traceparent", value)))
    .fold(
        OwnedHeaders::new_with_capacity(8),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
        },
    )
}

async fn load_checkpoint(store: &EventStore, name: &str) -> anyhow::Result<Checkpoint> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "select transaction_id, position from event_relay_checkpoints where name = $1",
    )
    .bind(name)
    .fetch_optional(store.pool())
    .await
    .context("loading the relay checkpoint")?;
    Ok(
        row.map_or(Checkpoint::START, |(transaction_id, position)| Checkpoint {
            transaction_id,
            position,
        }),
    )
}

async fn save_checkpoint(
    store: &EventStore,
    name: &str,
    checkpoint: Checkpoint,
) -> anyhow::Result<()> {
    // Only ever forward: a relay that lost the lock without noticing must
    // not move the checkpoint back under the new one.
    sqlx::query(
        "insert into event_relay_checkpoints (name, transaction_id, position) values ($1, $2, $3)
         on conflict (name) do update
           set transaction_id = excluded.transaction_id, position = excluded.position, updated_at = now()
           where (event_relay_checkpoints.transaction_id, event_relay_checkpoints.position)
                 < (excluded.transaction_id, excluded.position)",
    )
    .bind(name)
    .bind(checkpoint.transaction_id)
    .bind(checkpoint.position)
    .execute(store.pool())
    .await
    .context("saving the relay checkpoint")?;
    Ok(())
}

/// Refreshes the lag gauges at most once a second (counting is not free).
async fn update_lag(
    store: &EventStore,
    checkpoint: Checkpoint,
    metrics: &RelayMetrics,
    last: &mut Instant,
) {
    if last.elapsed() < Duration::from_secs(1) {
        return;
    }
    *last = Instant::now();
    match store.count_after(checkpoint).await {
        Ok(count) => {
            metrics.lag_events.set(count as i64);
        }
        Err(error) => tracing::debug!(%error, "counting relay lag failed"),
    }
    match store.held_back().await {
        Ok(held) => {
            metrics.held_back_events.set(held.events as i64);
            metrics.held_back_seconds.set(held.seconds);
        }
        Err(error) => tracing::debug!(%error, "measuring held-back readers failed"),
    }
    match store.read_all(checkpoint, 1).await {
        Ok(next) => {
            let seconds = next.first().map_or(0.0, |event| {
                (chrono::Utc::now() - event.recorded_at).num_milliseconds() as f64 / 1000.0
            });
            metrics.lag_seconds.set(seconds.max(0.0));
        }
        Err(error) => tracing::debug!(%error, "measuring relay lag failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(stream_id: &str, version: u64, filler: usize) -> RecordedEvent {
        RecordedEvent {
            event_id: uuid::Uuid::now_v7(),
            stream_id: stream_id.into(),
            version,
            position: version as i64,
            transaction_id: 1,
            event_type: "Numbered".into(),
            schema_version: 1,
            data: json!({ "n": version, "filler": "x".repeat(filler) }),
            metadata: json!({ "correlation_id": "c", "causation_id": "c" }),
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn partitions_are_chosen_as_librdkafka_chooses_them_for_a_key() {
        // The CRC-32 check value: crc32("123456789") = 0xCBF43926.
        assert_eq!(
            partition_of("123456789", 1_000_003),
            (0xCBF4_3926_u32 % 1_000_003) as i32
        );
        assert_eq!(partition_of("123456789", 7), (0xCBF4_3926_u32 % 7) as i32);
        for stream in ["order-1", "product-SKU-1", "saga-2"] {
            assert!((0..2).contains(&partition_of(stream, 2)));
            assert_eq!(partition_of(stream, 1), 0);
        }
    }

    #[test]
    fn a_batch_message_holds_one_partitions_events_in_log_order() {
        let streams = ["order-a", "order-b", "product-c", "customer-d", "saga-e"];
        let batch: Vec<RecordedEvent> = (0..20)
            .map(|i| event(streams[i % streams.len()], i as u64, 10))
            .collect();
        let messages = batch_messages(&batch, 2).unwrap();
        assert!(messages.len() <= 2, "one message per partition");
        let mut seen = Vec::new();
        for (partition, payload) in &messages {
            let events = decode(payload).unwrap();
            assert!(!events.is_empty());
            for event in &events {
                assert_eq!(partition_of(&event.stream_id, 2), *partition);
            }
            let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
            assert!(
                versions.is_sorted(),
                "log order within a message: {versions:?}"
            );
            seen.extend(versions);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>(), "every event once");
    }

    #[test]
    fn a_large_round_is_split_into_messages_of_bounded_size_and_a_huge_event_goes_alone() {
        let mut batch: Vec<RecordedEvent> = (0..100).map(|i| event("order-a", i, 10_000)).collect();
        batch.push(event("order-a", 100, 2 * BATCH_MESSAGE_BYTES));
        batch.push(event("order-a", 101, 10));
        let messages = batch_messages(&batch, 1).unwrap();
        let mut versions = Vec::new();
        for (_, payload) in &messages {
            let events = decode(payload).unwrap();
            assert!(payload.len() <= BATCH_MESSAGE_BYTES || events.len() == 1);
            versions.extend(events.iter().map(|e| e.version));
        }
        assert!(messages.len() >= 5, "{} messages", messages.len());
        assert_eq!(versions, (0..102).collect::<Vec<_>>());
    }

    #[test]
    fn decode_reads_a_single_event_and_an_array() {
        let one = event("order-a", 1, 0);
        let single = serde_json::to_vec(&one).unwrap();
        assert_eq!(decode(&single).unwrap()[0].event_id, one.event_id);
        let array = batch_messages(std::slice::from_ref(&one), 1).unwrap();
        assert_eq!(decode(&array[0].1).unwrap()[0].event_id, one.event_id);
        assert!(decode(b"not json").is_err());
        assert!(decode(b"[{\"nope\": 1}]").is_err());
    }
}
