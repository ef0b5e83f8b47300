//! Live projection: consumes the event log from Kafka in a consumer group
//! and applies each batch in one PostgreSQL transaction, which also records
//! what was applied; offsets are committed only after that transaction
//! (batched, at most once a second: see `service_kit::consumer`).
//!
//! The broker is not trusted with content: a message tells which event it
//! carries, and the event applied is the one the event store holds under
//! that id (see `apply_batch`).
//!
//! A crash between the commit and the offset commit redelivers the batch,
//! and redelivered events change nothing (rows carry their stream version).
//! Several instances share the partitions; a stream is always in one
//! partition (the relay picks it from the stream id), and the version
//! guard on every write makes even a rebalance overlap harmless.

use std::collections::BTreeMap;

use anyhow::Context;
use event_store::{EventStore, Forged, RecordedEvent};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use service_kit::consumer::Offsets;
use service_kit::progress::Watchdog;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::store::{self, DeadLetter};
use crate::views::Projection;

/// How the live consumer reads.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub topic: String,
    pub group: String,
    /// Most messages applied in one transaction.
    pub batch_size: usize,
    /// `fetch.wait.max.ms` of the consumer.
    pub fetch_wait_ms: u32,
}

/// Consumes until `shutdown`; on any failure, or when a projection is
/// stalled (see `status::watch_progress`), starts over with a new consumer
/// from the committed offsets (nothing after them was acknowledged).
pub async fn run(
    pool: PgPool,
    store: EventStore,
    kafka: ClientConfig,
    config: LiveConfig,
    metrics: Metrics,
    watchdog: Watchdog,
    shutdown: CancellationToken,
) {
    service_kit::progress::supervise("projection consumer", &watchdog, &shutdown, || {
        consume(&pool, &store, &kafka, &config, &metrics)
    })
    .await;
}

async fn consume(
    pool: &PgPool,
    store: &EventStore,
    kafka: &ClientConfig,
    config: &LiveConfig,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    event_relay::ensure_topic(kafka, &config.topic, event_relay::EVENTS_TOPIC_PARTITIONS).await?;
    let consumer: StreamConsumer =
        service_kit::consumer::config(kafka, &config.group, config.fetch_wait_ms)
            .create()
            .context("creating the consumer")?;
    consumer
        .subscribe(&[&config.topic])
        .context("subscribing to the events topic")?;
    tracing::info!(topic = %config.topic, group = %config.group, "consuming the event log");
    let mut batch = Vec::with_capacity(config.batch_size);
    let mut offsets = Offsets::new();
    loop {
        service_kit::consumer::next_batch(&consumer, &mut offsets, &mut batch, config.batch_size)
            .await?;
        let span = service_kit::telemetry::consumer_span(&config.topic, &config.group, batch.len());
        apply_batch(pool, store, metrics, &batch)
            .instrument(span)
            .await?;
        // Only now are the batch's offsets committable.
        offsets.handled(&batch);
        offsets.commit_if_due(&consumer);
        batch.clear();
    }
}

/// Where a message came from, for its dead letter.
#[derive(Clone, Copy)]
struct Origin<'a>(&'a OwnedMessage);

impl Origin<'_> {
    fn dead_letter(&self, reason: String) -> DeadLetter {
        let message = self.0;
        let text = |bytes: Option<&[u8]>| {
            // PostgreSQL text cannot hold NUL.
            bytes.map(|b| String::from_utf8_lossy(b).replace('\0', "\u{fffd}"))
        };
        DeadLetter {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: text(message.key()),
            payload: text(message.payload()),
            reason,
        }
    }
}

/// Decodes a batch, looks its events up in the event store and applies the
/// stored ones in one transaction.
///
/// A message only names events: what is applied is what the store holds
/// under their ids (one read for the whole batch). A message whose event
/// the store does not bear out (an id it does not hold, or other content
/// under a stored id) changes no read model: it is counted, logged and
/// kept as a dead letter, and its offset is committed like any other.
pub async fn apply_batch(
    pool: &PgPool,
    store: &EventStore,
    metrics: &Metrics,
    batch: &[OwnedMessage],
) -> anyhow::Result<()> {
    let (claimed, mut dead) = decode(batch);
    let verified = store
        .verify(claimed)
        .await
        .context("looking the batch's events up in the event store")?;
    // Linked to the spans that appended the stored events (never to what a
    // message claims).
    service_kit::telemetry::link_all(
        &tracing::Span::current(),
        verified
            .genuine
            .iter()
            .filter_map(|(event, _)| service_kit::telemetry::traceparent_in(&event.metadata)),
    );
    let forged = set_aside_forged(verified.forged, &mut dead);
    let by_projection = by_projection(verified.genuine);
    let committed = apply_in_one_transaction(pool, store, by_projection, dead).await?;
    committed.report(metrics, forged);
    Ok(())
}

/// Warns about each forged event and makes its message a dead letter;
/// returns the forgeries' kinds, counted once the batch is committed.
fn set_aside_forged(
    forged: Vec<Forged<Origin<'_>>>,
    dead: &mut Vec<DeadLetter>,
) -> Vec<&'static str> {
    let mut kinds = Vec::with_capacity(forged.len());
    for Forged {
        claimed,
        origin,
        forgery,
    } in forged
    {
        event_relay::warn_forged(origin.0, &claimed, &forgery);
        dead.push(origin.dead_letter(format!(
            "{} {} at version {} of {}: {forgery}",
            claimed.event_type, claimed.event_id, claimed.version, claimed.stream_id
        )));
        kinds.push(forgery.kind());
    }
    kinds
}

/// The genuine events by the read models that take them, in the order in
/// which their locks are taken.
fn by_projection<'a>(
    genuine: Vec<(RecordedEvent, Origin<'a>)>,
) -> BTreeMap<Projection, Vec<(RecordedEvent, Origin<'a>)>> {
    let mut by_projection: BTreeMap<Projection, Vec<(RecordedEvent, Origin<'_>)>> = BTreeMap::new();
    for (event, origin) in genuine {
        // The stored stream is the claimed one, which has a projection;
        // every read model taking the stream gets the event.
        for projection in Projection::taking(&event.stream_id) {
            by_projection
                .entry(projection)
                .or_default()
                .push((event.clone(), origin));
        }
    }
    by_projection
}

/// What a batch's transaction committed, reported only once it has (a
/// batch that fails is redelivered and must not be counted twice).
struct Committed {
    /// Events applied, per projection.
    progress: Vec<(Projection, u64)>,
    /// The batch's dead letters, one per message.
    dead: Vec<DeadLetter>,
    /// How many of them were recorded (a redelivered one is not again).
    recorded: u64,
}

/// Applies each read model's events, records its progress and the batch's
/// dead letters, all in one transaction: a batch is applied whole or not
/// at all.
async fn apply_in_one_transaction(
    pool: &PgPool,
    store: &EventStore,
    by_projection: BTreeMap<Projection, Vec<(RecordedEvent, Origin<'_>)>>,
    mut dead: Vec<DeadLetter>,
) -> anyhow::Result<Committed> {
    let mut tx = pool.begin().await.context("starting a transaction")?;
    // In a fixed order (the map's), so two transactions never wait on each
    // other's locks in a cycle.
    for projection in by_projection.keys() {
        store::lock_shared(&mut tx, *projection).await?;
    }
    let mut progress = Vec::new();
    for (projection, events) in by_projection {
        let applied =
            store::apply_projection(&mut tx, store, projection, projection.table(), events).await?;
        store::record_progress(&mut tx, projection, applied.events, applied.position).await?;
        progress.push((projection, applied.events));
        dead.extend(
            applied
                .refused
                .into_iter()
                .map(|(origin, reason)| origin.dead_letter(reason)),
        );
    }
    let dead = one_letter_per_message(dead);
    let recorded = store::dead_letter(&mut tx, &dead).await?;
    tx.commit().await.context("committing applied events")?;
    Ok(Committed {
        progress,
        dead,
        recorded,
    })
}

impl Committed {
    /// Counts what was applied, forged and dead-lettered, and logs each
    /// dead letter when any was new.
    fn report(self, metrics: &Metrics, forged: Vec<&'static str>) {
        for (projection, events) in self.progress {
            metrics.applied(projection, events);
        }
        for kind in forged {
            metrics.forged(kind);
        }
        if self.recorded > 0 {
            metrics.dead_letters.inc_by(self.recorded);
            for letter in &self.dead {
                tracing::warn!(
                    topic = %letter.topic, partition = letter.partition, offset = letter.offset,
                    reason = %letter.reason, "message sent to the dead-letter table"
                );
            }
        }
    }
}

/// The events a batch's messages claim that some read model takes, each
/// with its message; and dead letters for messages that are not events and
/// for events no read model takes that are not expected on the log either.
fn decode(batch: &[OwnedMessage]) -> (Vec<(RecordedEvent, Origin<'_>)>, Vec<DeadLetter>) {
    let mut dead = Vec::new();
    let mut claimed = Vec::new();
    for message in batch {
        let origin = Origin(message);
        // One event, or several from a relay that batches them.
        let events = match message.payload().map(event_relay::decode) {
            Some(Ok(events)) => events,
            Some(Err(error)) => {
                dead.push(origin.dead_letter(format!("not an event: {error}")));
                continue;
            }
            None => {
                dead.push(origin.dead_letter("empty message".into()));
                continue;
            }
        };
        for event in events {
            if Projection::taking(&event.stream_id).next().is_some() {
                claimed.push((event, origin));
            } else if !known_unprojected(&event) {
                dead.push(origin.dead_letter(format!(
                    "unknown event type {} on stream {}",
                    event.event_type, event.stream_id
                )));
            }
        }
    }
    (claimed, dead)
}

/// A message is one dead letter (the table has one row per message): the
/// reasons of several refused events of a batch message are joined.
fn one_letter_per_message(letters: Vec<DeadLetter>) -> Vec<DeadLetter> {
    let mut merged: Vec<DeadLetter> = Vec::with_capacity(letters.len());
    for letter in letters {
        match merged.iter_mut().find(|m| {
            (m.partition, m.offset, &m.topic) == (letter.partition, letter.offset, &letter.topic)
        }) {
            Some(same) => {
                same.reason.push_str("; ");
                same.reason.push_str(&letter.reason);
            }
            None => merged.push(letter),
        }
    }
    merged
}

/// Events no projection folds but which are expected on the log
/// (shipments).
fn known_unprojected(event: &RecordedEvent) -> bool {
    use domain::Event;
    event.stream_id.starts_with(domain::stream::SHIPMENT)
        && domain::shipment::ShipmentEvent::decode(&event.event_type, &event.data).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: i64, reason: &str) -> DeadLetter {
        DeadLetter {
            topic: "events".into(),
            partition: 1,
            offset,
            key: None,
            payload: Some("[...]".into()),
            reason: reason.into(),
        }
    }

    #[test]
    fn refused_events_of_one_message_make_one_dead_letter_with_every_reason() {
        let merged = one_letter_per_message(vec![
            letter(7, "unknown event type X on stream a"),
            letter(8, "not an event"),
            letter(7, "unknown event type Y on stream b"),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].offset, 7);
        assert_eq!(
            merged[0].reason,
            "unknown event type X on stream a; unknown event type Y on stream b"
        );
        assert_eq!(merged[1].reason, "not an event");
    }
}
