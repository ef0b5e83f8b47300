//! The relay itself: one active process, elected by an advisory lock,
//! publishing from its checkpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use event_store::{Checkpoint, EventStore, RawEvent, SubscriptionOptions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use service_kit::backoff::Backoff;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::topic::{EVENTS_TOPIC_PARTITIONS, ensure_topic, partition_count};
use crate::wire::{MessageFormat, batch_messages, cloudevents_headers, partition_of};

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
    /// How long the relay waits for more events, from the first event of a
    /// batch, before handing the batch to the producer (a full batch goes
    /// at once).
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

/// The relay's linger unless configured. Each produce request costs
/// tansu a few queries per partition (it plans every statement anew), so
/// waiting 25 ms instead of 5 for more events sends fewer, larger requests,
/// which saves the broker more than the wait costs a saga's start
/// (BENCHMARKS.md).
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
    let published = AtomicU64::new(metrics.published.get());
    service_kit::progress::restart(
        "relay",
        Backoff::new(config.poll_interval, MAX_RESTART_DELAY),
        &shutdown,
        || lead(&store, &kafka, &config, &metrics),
        |started| {
            let stalled = stalled(started);
            async move {
                stalled.await;
                anyhow::anyhow!("stalled: behind with no progress; recreating the producer")
            }
        },
        |_| {
            let now = metrics.published.get();
            now > published.swap(now, std::sync::atomic::Ordering::Relaxed)
        },
    )
    .await;
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
    let mut lock = become_active(store, config, metrics).await?;
    let (producer, partitions) = create_producer(kafka, config).await?;
    publish_from_checkpoint(store, config, metrics, &mut lock, &producer, partitions).await
}

/// Waits until this process holds the relay lock; returns the connection
/// that holds it (the lock lasts as long as the connection).
async fn become_active(
    store: &EventStore,
    config: &RelayConfig,
    metrics: &RelayMetrics,
) -> anyhow::Result<PgConnection> {
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
    Ok(lock)
}

/// Makes sure the topic exists and creates an idempotent producer for it;
/// returns it with the topic's partition count.
async fn create_producer(
    kafka: &ClientConfig,
    config: &RelayConfig,
) -> anyhow::Result<(FutureProducer, i32)> {
    ensure_topic(kafka, &config.topic, config.partitions).await?;
    let producer: FutureProducer = kafka
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The relay lingers itself (see `publish_from_checkpoint`) and
        // hands over whole batches. The producer waits only for the rest
        // of the batch being queued: with none, it sends the first
        // messages alone and the rest wait behind them (`PRODUCER_LINGER`).
        .set("linger.ms", PRODUCER_LINGER.as_millis().to_string())
        .set("compression.type", "lz4")
        .create()
        .context("creating the relay's producer")?;
    // A topic that existed keeps its own partition count.
    let partitions = partition_count(&producer, &config.topic).await?;
    Ok((producer, partitions))
}

/// Publishes the log from the stored checkpoint on, saving the checkpoint
/// as it goes, until something fails or the lock is lost.
///
/// One batch is with the producer at a time, and the next is read from the
/// store while the broker writes it: whatever is read meanwhile (up to
/// `batch_size` events) goes out once the broker has acknowledged the
/// batch before and `linger_ms` has passed since the batch's first event
/// was read (at once if it is full). Lingering here rather than in the
/// producer lets a batch that filled up while its predecessor was written
/// go out at the acknowledgement. Handing the producer more would not send
/// more: the idempotent producer keeps a partition's next request back
/// while one carrying five or more messages is unacknowledged, and its
/// broker thread spins until then (librdkafka 2.12; BENCHMARKS.md, "Sagas:
/// a CPU profile per process"). The producer keeps each partition's order
/// across its retries. The checkpoint only ever moves past a batch the
/// broker acknowledged in full: a crash or a refused message repeats what
/// was in flight, and never skips it.
async fn publish_from_checkpoint(
    store: &EventStore,
    config: &RelayConfig,
    metrics: &RelayMetrics,
    lock: &mut PgConnection,
    producer: &FutureProducer,
    partitions: i32,
) -> anyhow::Result<()> {
    let mut checkpoint = load_checkpoint(store, &config.name).await?;
    let mut saved = (checkpoint, Instant::now());
    // The events' documents stay the JSON text the store holds: the relay
    // copies them into messages and never needs them parsed.
    let mut subscription = store.subscribe_raw(
        checkpoint,
        SubscriptionOptions {
            batch_size: config.batch_size,
            poll_interval: config.poll_interval.min(Duration::from_millis(500)),
        },
    );
    let batch_size = config.batch_size as usize;
    let mut last_lag_update = Instant::now() - Duration::from_secs(10);
    let mut received = Vec::with_capacity(batch_size);
    let mut batch = Vec::with_capacity(batch_size);
    let mut in_flight: Option<Sent> = None;
    let linger = Duration::from_millis(config.linger_ms.into());
    // When the first event of `batch` was read.
    let mut batch_since = Instant::now();
    loop {
        let ready_at = batch_since + linger;
        tokio::select! {
            // The acknowledgement first, so the checkpoint keeps up.
            biased;
            acked = async { (&mut in_flight.as_mut().expect("one in flight").acked).await },
                if in_flight.is_some() =>
            {
                acked?;
                let sent = in_flight.take().expect("one in flight");
                checkpoint = sent.last;
                metrics.published.inc_by(sent.events);
                // Under load, batches are small and frequent; saving after
                // each would cost a commit per batch. A crash republishes
                // at most the batches since the last save, which consumers
                // deduplicate.
                if saved.1.elapsed() >= CHECKPOINT_EVERY {
                    save_checkpoint(lock, &config.name, checkpoint).await?;
                    saved = (checkpoint, Instant::now());
                }
                update_lag(store, checkpoint, metrics, &mut last_lag_update).await;
            }
            count = subscription.next_batch(&mut received, batch_size - batch.len()),
                if batch.len() < batch_size =>
            {
                if count == 0 {
                    anyhow::bail!("the subscription ended");
                }
                if batch.is_empty() {
                    batch_since = Instant::now();
                }
                for event in received.drain(..) {
                    batch.push(event?);
                }
            }
            // A batch that waited its linger, with nothing in flight.
            () = tokio::time::sleep_until(ready_at.into()),
                if in_flight.is_none() && !batch.is_empty() => {}
            // Idle (nothing read, nothing acknowledged): check the lock and
            // save what was published since the last save.
            () = tokio::time::sleep(config.poll_interval) => {
                if saved.0 == checkpoint {
                    still_holding(lock).await?;
                } else {
                    save_checkpoint(lock, &config.name, checkpoint).await?;
                    saved = (checkpoint, Instant::now());
                }
                update_lag(store, checkpoint, metrics, &mut last_lag_update).await;
            }
        }
        let ready = batch.len() >= batch_size || batch_since.elapsed() >= linger;
        if in_flight.is_none() && !batch.is_empty() && ready {
            in_flight = Some(publish(producer, config, partitions, &batch)?);
            batch.clear();
        }
    }
}

/// How long the producer waits for more messages before a request: long
/// enough for the relay to queue a batch of events, built beforehand, so
/// that each partition gets one request per batch. A batch queued over
/// longer goes out in parts, and the idempotent producer holds the later
/// parts back until the first is acknowledged, waking its thread over and
/// over meanwhile (BENCHMARKS.md).
const PRODUCER_LINGER: Duration = Duration::from_millis(5);

/// A batch handed to the producer.
struct Sent {
    /// The checkpoint of its last event.
    last: Checkpoint,
    events: u64,
    /// Resolves once the broker acknowledged every message of the batch,
    /// or with the first refusal.
    acked: Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>,
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

/// Queues the batch in order with the producer and returns what resolves
/// once the broker acknowledged all of it, in a producer span linked to
/// the span that appended each event (whose context each message carries:
/// the `traceparent` header of the CloudEvents format, the event's
/// metadata in the payload of every format).
fn publish(
    producer: &FutureProducer,
    config: &RelayConfig,
    partitions: i32,
    batch: &[RawEvent],
) -> anyhow::Result<Sent> {
    let span = tracing::info_span!(
        "publish",
        otel.name = format!("send {}", config.topic),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = config.topic.as_str(),
        messaging.batch.message_count = batch.len(),
    );
    service_kit::telemetry::link_all(&span, batch.iter().filter_map(RawEvent::traceparent));
    let deliveries = span.in_scope(|| queue_all(producer, config, partitions, batch))?;
    let acked = async move {
        for delivery in deliveries {
            delivery
                .await
                .context("the producer dropped a delivery")?
                .map_err(|(error, _)| error)
                .context("the broker did not acknowledge an event")?;
        }
        Ok(())
    };
    Ok(Sent {
        last: batch.last().expect("not empty").checkpoint(),
        events: batch.len() as u64,
        acked: Box::pin(acked.instrument(span)),
    })
}

/// [`publish`]'s work: every message of the batch queued with the
/// producer, in order. The idempotent producer keeps per-partition order
/// across retries.
fn queue_all(
    producer: &FutureProducer,
    config: &RelayConfig,
    partitions: i32,
    batch: &[RawEvent],
) -> anyhow::Result<Vec<rdkafka::producer::DeliveryFuture>> {
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
            // Every message is built before the first is queued, so that
            // the batch is queued within `PRODUCER_LINGER` and goes out as
            // one request per partition.
            let with_headers = config.format == MessageFormat::CloudEvents;
            let messages = batch
                .iter()
                .map(|event| {
                    let payload = serde_json::to_vec(event).context("encoding an event")?;
                    let headers = with_headers.then(|| cloudevents_headers(&config.source, event));
                    let partition = partition_of(&event.stream_id, partitions);
                    Ok((event.stream_id.as_str(), partition, payload, headers))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            for (key, partition, payload, headers) in messages {
                let record = FutureRecord::to(&config.topic)
                    .partition(partition)
                    .key(key)
                    .payload(&payload);
                deliveries.push(match headers {
                    Some(headers) => send(producer, record.headers(headers))?,
                    None => send(producer, record)?,
                });
            }
        }
    }
    Ok(deliveries)
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

/// Saves the checkpoint on the connection that holds the relay's lock: a
/// relay that lost its lock (its connection gone) cannot save at all.
async fn save_checkpoint(
    lock: &mut PgConnection,
    name: &str,
    checkpoint: Checkpoint,
) -> anyhow::Result<()> {
    // Only ever forward, in case two relays ever overlap.
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
    .execute(lock)
    .await
    .context("saving the relay checkpoint on the lock's connection")?;
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
