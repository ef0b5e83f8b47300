//! Starts and cancels sagas from the order events on Kafka.
//!
//! `OrderPlaced` records `SagaStarted` in the saga's stream (once: the
//! stream must not exist yet) and makes the saga due; an
//! `OrderCancellationRequested` records `CancellationRequested` and makes
//! the saga due again, also when it had completed. Offsets are committed
//! after a batch is recorded (at most once a second, see
//! `service_kit::consumer`), so a crash redelivers and nothing is missed;
//! a redelivery records nothing new.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use domain::Event;
use domain::order::OrderEvent;
use domain::saga::SagaEvent;
use event_store::{EventStore, RecordedEvent};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use service_kit::consumer::Offsets;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::record;

pub struct Intake {
    pub store: EventStore,
    pub pool: PgPool,
    pub kafka: ClientConfig,
    pub topic: String,
    pub group: String,
    pub metrics: Metrics,
    pub wake: Arc<Notify>,
}

impl Intake {
    /// Consumes until `shutdown`; on failure starts over from the committed
    /// offsets.
    pub async fn run(&self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let result = tokio::select! {
                () = shutdown.cancelled() => Ok(()),
                result = self.consume() => result,
            };
            if let Err(error) = result {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "order consumer stopped; starting over"
                );
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }

    async fn consume(&self) -> anyhow::Result<()> {
        event_store::relay::ensure_topic(
            &self.kafka,
            &self.topic,
            event_store::relay::EVENTS_TOPIC_PARTITIONS,
        )
        .await?;
        let consumer: StreamConsumer = service_kit::consumer::config(&self.kafka, &self.group, 100)
            .create()
            .context("creating the consumer")?;
        consumer
            .subscribe(&[&self.topic])
            .context("subscribing to the events topic")?;
        let mut batch = Vec::new();
        let mut offsets = Offsets::new();
        loop {
            service_kit::consumer::next_batch(&consumer, &mut offsets, &mut batch, 200).await?;
            self.handle_batch(&batch).await?;
            offsets.handled(&batch);
            offsets.commit_if_due(&consumer);
            batch.clear();
        }
    }

    /// Handles a batch in order. (Handling different streams side by side
    /// was tried: it made more sagas hit the same products at once, and the
    /// 200-order test then saw compensations give up on 409s.)
    async fn handle_batch(&self, batch: &[OwnedMessage]) -> anyhow::Result<()> {
        for message in batch {
            self.handle(message).await?;
        }
        Ok(())
    }

    async fn handle(&self, message: &OwnedMessage) -> anyhow::Result<()> {
        let Some(Ok(event)) = message
            .payload()
            .map(serde_json::from_slice::<RecordedEvent>)
        else {
            // Not an event; the projector keeps it as a dead letter.
            return Ok(());
        };
        if !event.stream_id.starts_with("order-") {
            return Ok(());
        }
        let Ok(order_event) = OrderEvent::decode(&event.event_type, &event.data) else {
            return Ok(());
        };
        let causation = event.event_id.to_string();
        match order_event {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                total_cents,
                ..
            } => {
                let started = SagaEvent::SagaStarted {
                    order_id,
                    customer_id,
                    total_cents,
                };
                if record::append(&self.store, order_id, 0, &[started], &causation).await? {
                    self.metrics.started.inc();
                }
                self.make_due(order_id).await?;
            }
            OrderEvent::OrderCancellationRequested { order_id, reason } => {
                self.cancel(order_id, reason, &causation).await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn cancel(&self, order_id: Uuid, reason: String, causation: &str) -> anyhow::Result<()> {
        loop {
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
            if record::append(
                &self.store,
                order_id,
                loaded.version,
                &[requested],
                causation,
            )
            .await?
            {
                break;
            }
        }
        self.make_due(order_id).await
    }

    /// Makes the saga due now (creating its row when new) and wakes the
    /// executor.
    async fn make_due(&self, order_id: Uuid) -> anyhow::Result<()> {
        make_due(&self.pool, order_id).await?;
        self.wake.notify_one();
        Ok(())
    }
}

/// Makes a saga due now, creating its row when new; a saga that had ended
/// becomes active again.
pub async fn make_due(pool: &PgPool, order_id: Uuid) -> anyhow::Result<()> {
    sqlx::query(
        "insert into saga_instances (order_id) values ($1)
         on conflict (order_id) do update
           set status = 'active', due_at = now(), nudges = saga_instances.nudges + 1,
               updated_at = now()",
    )
    .bind(order_id)
    .execute(pool)
    .await
    .context("making the saga due")?;
    Ok(())
}
