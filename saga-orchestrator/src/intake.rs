//! Starts and cancels sagas from the order events on Kafka.
//!
//! `OrderPlaced` records `SagaStarted` in the saga's stream (once: the
//! stream must not exist yet) and makes the saga due; an
//! `OrderCancellationRequested` records `CancellationRequested` and makes
//! the saga due again, also when it had completed. Offsets are committed
//! after a batch is recorded, so a crash redelivers and nothing is missed;
//! a redelivery records nothing new.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use domain::Event;
use domain::order::OrderEvent;
use domain::saga::SagaEvent;
use event_store::{EventStore, RecordedEvent};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
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
        let consumer: StreamConsumer = self
            .kafka
            .clone()
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("fetch.wait.max.ms", "100")
            .create()
            .context("creating the consumer")?;
        consumer
            .subscribe(&[&self.topic])
            .context("subscribing to the events topic")?;
        let mut batch = Vec::new();
        loop {
            batch.push(consumer.recv().await.context("receiving")?.detach());
            while batch.len() < 200 {
                match tokio::time::timeout(Duration::from_millis(2), consumer.recv()).await {
                    Ok(message) => batch.push(message.context("receiving")?.detach()),
                    Err(_) => break,
                }
            }
            for message in &batch {
                self.handle(message).await?;
            }
            commit(&consumer, &batch);
            batch.clear();
        }
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

fn commit(consumer: &StreamConsumer, batch: &[OwnedMessage]) {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for message in batch {
        let entry = next
            .entry((message.topic().to_owned(), message.partition()))
            .or_insert(0);
        *entry = (*entry).max(message.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if offsets
            .add_partition_offset(&topic, partition, Offset::Offset(offset))
            .is_err()
        {
            return;
        }
    }
    if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
        tracing::debug!(%error, "committing offsets failed; they will be redelivered");
    }
}
