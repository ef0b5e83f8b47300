//! The events topic: created by whoever comes first.

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, Producer};

/// The number of partitions of the events topic; consumers that create the
/// topic before the relay does must use the same figure.
///
/// It bounds how many instances of one consumer group (projectors, saga
/// intakes) share the work; the saga executors share sagas through leases,
/// not partitions. It is small because every partition costs the broker
/// per produce request and per fetch: tansu checks the producer and moves
/// the watermark per partition batch and queries every partition on every
/// fetch, so fewer partitions cost it less CPU (BENCHMARKS.md). A topic
/// that exists keeps the partitions it was created with.
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
pub(crate) async fn partition_count(producer: &FutureProducer, topic: &str) -> anyhow::Result<i32> {
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
