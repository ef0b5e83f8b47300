//! Starts and cancels sagas from the order events on Kafka.
//!
//! `OrderPlaced` records `SagaStarted` and the first step's `StepStarted`
//! in the saga's stream (once: the stream must not exist yet) and hands the
//! saga to this instance's executor, leased to it, or, when the executor
//! has no free place, makes it due for whichever instance claims it; an
//! `OrderCancellationRequested` records `CancellationRequested` and makes
//! the saga due again, also when it had completed. The placements of a
//! batch (up to a cancellation) start together, in one multi-stream append
//! and one statement. Offsets are committed
//! after a batch is recorded (at most once a second, see
//! `service_kit::consumer`), so a crash redelivers and nothing is missed;
//! a redelivery records nothing new.
//!
//! The broker is not trusted with content: a message names events, and
//! what the intake acts on is what the event store holds under their ids.
//! A message whose event the store does not bear out is counted, logged
//! and passed over (its offset is committed with the rest).

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use domain::Event;
use domain::order::OrderEvent;
use domain::saga::{SagaEvent, SagaStep};
use event_store::{EventStore, Forged, RecordedEvent};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use service_kit::backoff::Backoff;
use service_kit::consumer::Offsets;
use service_kit::progress::{Progress, Watchdog};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::executor::Handoff;
use crate::metrics::Metrics;
use crate::{instances, record};

pub struct Intake {
    pub store: EventStore,
    pub pool: PgPool,
    pub kafka: ClientConfig,
    pub topic: String,
    pub group: String,
    pub fetch_wait_ms: u32,
    pub metrics: Metrics,
    pub wake: Arc<Notify>,
    pub handoff: Handoff,
    /// The intake's progress: every handled batch advances it, to the
    /// position of the last order event seen.
    pub progress: Progress,
    /// Over the intake's progress only (see `Watchdog::over`).
    pub watchdog: Watchdog,
}

impl Intake {
    /// Consumes until `shutdown`; on failure, or when stalled (see
    /// [`watch_progress`]), starts over with a new consumer from the
    /// committed offsets.
    pub async fn run(&self, shutdown: CancellationToken) {
        tokio::join!(
            service_kit::progress::supervise("order consumer", &self.watchdog, &shutdown, || {
                self.consume()
            }),
            watch_progress(
                &self.store,
                &self.progress,
                &self.group,
                &self.topic,
                &shutdown
            ),
        );
    }

    async fn consume(&self) -> anyhow::Result<()> {
        event_relay::ensure_topic(
            &self.kafka,
            &self.topic,
            event_relay::EVENTS_TOPIC_PARTITIONS,
        )
        .await?;
        let consumer: StreamConsumer =
            service_kit::consumer::config(&self.kafka, &self.group, self.fetch_wait_ms)
                .create()
                .context("creating the consumer")?;
        consumer
            .subscribe(&[&self.topic])
            .context("subscribing to the events topic")?;
        let mut batch = Vec::new();
        let mut offsets = Offsets::new();
        loop {
            service_kit::consumer::next_batch(&consumer, &mut offsets, &mut batch, 200).await?;
            let span = service_kit::telemetry::consumer_span(&self.topic, &self.group, batch.len());
            let reached = self.handle_batch(&batch).instrument(span).await?;
            match reached {
                Some(position) => self.progress.advanced_to(position),
                None => self.progress.advanced(),
            }
            offsets.handled(&batch);
            offsets.commit_if_due(&consumer);
            batch.clear();
        }
    }

    /// Handles a batch in order, starting the sagas of consecutive
    /// placements together: one append and one statement for all of them.
    /// (Driving different sagas side by side is the executor's job.)
    /// Returns the highest position of an order event in it.
    ///
    /// Only events the event store holds are acted on: the batch's order
    /// events are looked up by id in one read, and what is stored under
    /// each id is what counts (see [`claimed_order_events`]).
    async fn handle_batch(&self, batch: &[OwnedMessage]) -> anyhow::Result<Option<i64>> {
        let claimed: Vec<_> = batch.iter().flat_map(claimed_order_events).collect();
        let verified = self
            .store
            .verify(claimed)
            .await
            .context("looking the batch's order events up in the event store")?;
        let forged: Vec<_> = verified.forged.into_iter().map(warned).collect();
        // Linked to the spans that appended the stored events (never to
        // what a message claims).
        service_kit::telemetry::link_all(
            &tracing::Span::current(),
            verified
                .genuine
                .iter()
                .filter_map(|(stored, _)| service_kit::telemetry::traceparent_in(&stored.metadata)),
        );
        let mut placed = Vec::new();
        // The order ids in `placed`.
        let mut placing = HashSet::new();
        let mut reached = None;
        for (stored, _) in verified.genuine {
            reached = reached.max(Some(stored.position));
            let Ok(event) = OrderEvent::decode(&stored.event_type, &stored.data) else {
                continue;
            };
            // What the saga's events that this one causes carry: caused by
            // it, in its chain.
            let cause = record::Cause {
                correlation_id: stored.metadata["correlation_id"]
                    .as_str()
                    .map_or_else(|| stored.stream_id.clone(), str::to_owned),
                causation_id: stored.event_id.to_string(),
            };
            match event {
                // Once per batch: a redelivered placement is harmless later,
                // but one statement may not touch a row twice.
                OrderEvent::OrderPlaced {
                    order_id,
                    customer_id,
                    total_cents,
                    ..
                } if placing.insert(order_id) => {
                    placed.push(record::Start {
                        order_id,
                        events: first_events(order_id, customer_id, total_cents),
                        cause,
                    });
                }
                OrderEvent::OrderCancellationRequested { order_id, reason } => {
                    // Placements before it first, so its saga exists.
                    self.start(&mut placed).await?;
                    placing.clear();
                    self.cancel(order_id, reason, &cause).await?;
                }
                _ => {}
            }
        }
        self.start(&mut placed).await?;
        for kind in forged {
            self.metrics.forged(kind);
        }
        Ok(reached)
    }

    /// Starts the sagas of `placed` and hands them to the executor, or
    /// makes them due; empties it.
    async fn start(&self, placed: &mut Vec<record::Start>) -> anyhow::Result<()> {
        if placed.is_empty() {
            return Ok(());
        }
        let started = record::start_all(&self.store, placed).await?;
        let new: Vec<usize> = (0..placed.len())
            .filter(|&i| started[i].is_some())
            .collect();
        self.metrics.started.inc_by(new.len() as u64);
        // The executor's free places go to new sagas, leased to it now.
        let places = self.handoff.places(new.len());
        let chosen: Vec<Uuid> = new
            .iter()
            .take(places.len())
            .map(|&i| placed[i].order_id)
            .collect();
        let leased_at = std::time::Instant::now();
        let leased = self.handoff.lease_new(&self.pool, &chosen).await?;
        let recorded_at = chrono::Utc::now();
        let mut places = places.into_iter();
        let mut due = Vec::new();
        for (start, last_event_id) in placed.iter().zip(started) {
            // `leased` is part of `chosen`, which has a place each.
            if leased.contains(&start.order_id)
                && let Some(place) = places.next()
            {
                let mut loaded = record::SagaRecord::of(&start.events, recorded_at);
                loaded.correlation_id = Some(start.cause.correlation_id.clone());
                loaded.last_event_id = last_event_id;
                // What `record::start_all` stamped on the saga's events.
                loaded.traceparent = service_kit::telemetry::current_traceparent();
                self.handoff
                    .hand_over(start.order_id, loaded, leased_at, place);
            } else {
                due.push(start.order_id);
            }
        }
        if !due.is_empty() {
            instances::make_due(&self.pool, &due).await?;
            self.wake.notify_one();
        }
        placed.clear();
        Ok(())
    }

    /// Records the cancellation (caused by `cause`, the order's
    /// cancellation request) and makes the saga due.
    async fn cancel(
        &self,
        order_id: Uuid,
        reason: String,
        cause: &record::Cause,
    ) -> anyhow::Result<()> {
        // Until it is recorded: a lost race waits as any other (the saga's
        // own appends are what it races with).
        for attempt in 1.. {
            if attempt > 1 {
                Backoff::CONTENTION.sleep(attempt - 1).await;
            }
            let loaded = record::load(&self.store, order_id).await?;
            if !loaded.state.exists {
                tracing::warn!(%order_id, "cancellation of an order without a saga; ignored");
                return Ok(());
            }
            if loaded.state.cancellation_reason.is_some() {
                break;
            }
            let requested = SagaEvent::CancellationRequested {
                reason: reason.clone(),
            };
            if record::append(&self.store, order_id, loaded.version, &[requested], cause)
                .await?
                .is_some()
            {
                break;
            }
        }
        instances::make_due(&self.pool, &[order_id]).await?;
        self.wake.notify_one();
        Ok(())
    }
}

/// A saga's first events, appended together: its start and its first
/// step's first attempt's.
fn first_events(order_id: Uuid, customer_id: Uuid, total_cents: i64) -> Vec<SagaEvent> {
    vec![
        SagaEvent::SagaStarted {
            order_id,
            customer_id,
            total_cents,
        },
        SagaEvent::StepStarted {
            step: SagaStep::FIRST,
            attempt: 1,
        },
    ]
}

/// Warns of a forged message's claim; the kind of forgery, to count.
fn warned(forged: Forged<&OwnedMessage>) -> &'static str {
    let Forged {
        claimed,
        origin,
        forgery,
    } = forged;
    event_relay::warn_forged(origin, &claimed, &forgery);
    forgery.kind()
}

/// The order events a message claims to carry, each tagged with the
/// message, as decoded: only claims, to be looked up in the event store.
fn claimed_order_events(message: &OwnedMessage) -> Vec<(RecordedEvent, &OwnedMessage)> {
    // A message of one event is keyed by its stream (see
    // `event_relay`): most are of other streams and need no
    // parsing. A batch message has no key. Skipping a message on its key
    // is safe: ignoring a message never acts on it.
    if message
        .key()
        .is_some_and(|key| !key.starts_with(domain::stream::ORDER.as_bytes()))
    {
        return Vec::new();
    }
    // Not an event: the projector keeps it as a dead letter.
    let Some(Ok(events)) = message.payload().map(event_relay::decode) else {
        return Vec::new();
    };
    // Every order event is looked up, not only those acted on: the
    // intake's progress is the highest stored position among them, and
    // an order event it does not act on (a confirmation, say) is progress
    // too, or the intake would look behind after every order's end.
    events
        .into_iter()
        .filter(|event| event.stream_id.starts_with(domain::stream::ORDER))
        .map(|event| (event, message))
        .collect()
}

/// Every second until `shutdown`: measures in the event store how many
/// order events lie after the intake's position (loaded at start from
/// `saga_intake_progress`, so a restart behind a backlog is seen), tells
/// the watchdog, and stores the position when it moved.
async fn watch_progress(
    store: &EventStore,
    progress: &Progress,
    group: &str,
    topic: &str,
    shutdown: &CancellationToken,
) {
    // The position last read from or written to the table; `None` until
    // it has been read.
    let mut stored: Option<Option<i64>> = None;
    while service_kit::progress::tick(shutdown).await {
        let measured = async {
            let kept = match stored {
                Some(kept) => kept,
                None => {
                    let kept = load_position(store.pool(), group).await?;
                    if let Some(position) = kept {
                        progress.advanced_to(position);
                    }
                    stored = Some(kept);
                    kept
                }
            };
            let position = progress.position();
            if let Some(reached) = position.filter(|&p| Some(p) != kept) {
                save_position(store.pool(), group, reached).await?;
                stored = Some(position);
            }
            let position = position.unwrap_or(0);
            let (behind, oldest) = store
                .category_after(domain::stream::ORDER, position)
                .await?;
            anyhow::Ok((position, behind, oldest))
        };
        match measured.await {
            Ok((position, behind, oldest)) => progress.observe(
                behind,
                None,
                format!(
                    "order events after position {position} from Kafka topic {topic} \
                     ({behind} in the store, the oldest recorded {})",
                    oldest.map_or_else(|| "-".to_owned(), |at| at.to_rfc3339())
                ),
            ),
            Err(error) => tracing::debug!(
                error = format!("{error:#}"),
                "measuring the intake's progress failed"
            ),
        }
    }
}

async fn load_position(pool: &PgPool, group: &str) -> anyhow::Result<Option<i64>> {
    sqlx::query_scalar("select position from saga_intake_progress where consumer_group = $1")
        .bind(group)
        .fetch_optional(pool)
        .await
        .context("loading the intake's position")
}

async fn save_position(pool: &PgPool, group: &str, position: i64) -> anyhow::Result<()> {
    sqlx::query(
        "insert into saga_intake_progress (consumer_group, position) values ($1, $2)
         on conflict (consumer_group) do update
           set position = greatest(saga_intake_progress.position, excluded.position),
               updated_at = now()",
    )
    .bind(group)
    .bind(position)
    .execute(pool)
    .await
    .context("storing the intake's position")?;
    Ok(())
}
