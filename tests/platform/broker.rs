//! The Kafka-protocol broker keeps what consumer groups rely on: a consumer
//! that commits part-way through a batch and restarts resumes exactly at the
//! committed offset, losing and repeating nothing. (tansu's `memory://`
//! storage fails this; see ../shared/FACTS.md.)

use std::collections::BTreeSet;
use std::time::Duration;

use harness::TestEnv;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const MESSAGES: usize = 200;
const PARTITIONS: i32 = 2;

fn client_config(env: &TestEnv) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &env.kafka_brokers)
        .set("log_level", "3");
    config
}

fn consumer(env: &TestEnv, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = client_config(env)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("creating a consumer");
    consumer.subscribe(&[topic]).expect("subscribing");
    consumer
}

/// Receives one message within the deadline and returns its payload.
async fn next_payload(consumer: &StreamConsumer) -> anyhow::Result<String> {
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no message within 30 s"))??;
    Ok(String::from_utf8(
        message.payload().unwrap_or_default().to_vec(),
    )?)
}

#[tokio::test]
async fn consumer_group_resumes_exactly_at_the_committed_offset() {
    let env = TestEnv::new().await;
    let topic = format!("{}resume", env.topic_prefix);
    let group = format!("{}group", env.topic_prefix);

    let admin: AdminClient<DefaultClientContext> = client_config(&env).create().unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("creating the topic");
    for result in created {
        result.expect("topic created");
    }

    // Lingering makes the producer pack many messages into each record
    // batch, so the commit below lands inside a batch.
    let producer: FutureProducer = client_config(&env)
        .set("enable.idempotence", "true")
        .set("linger.ms", "50")
        .create()
        .unwrap();
    let sends = (0..MESSAGES).map(|i| {
        let payload = format!("message-{i:04}");
        let key = format!("key-{}", i % 7);
        let (producer, topic) = (&producer, &topic);
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(error, _)| error)
        }
    });
    for delivery in futures::future::join_all(sends).await {
        delivery.expect("the broker acknowledged every message");
    }

    // First consumer: read part of the log, commit what it read, go away.
    let first_part = MESSAGES * 2 / 5;
    let mut seen = Vec::new();
    {
        let consumer = consumer(&env, &group, &topic);
        let mut positions = TopicPartitionList::new();
        while seen.len() < first_part {
            let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
                .await
                .expect("the first consumer receives messages within 60 s")
                .expect("receiving");
            seen.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
            positions
                .add_partition_offset(
                    message.topic(),
                    message.partition(),
                    Offset::Offset(message.offset() + 1),
                )
                .unwrap();
        }
        consumer
            .commit(&positions, CommitMode::Sync)
            .expect("committing the offsets read so far");
    }

    // Second consumer in the same group: the rest, each message once.
    let consumer = consumer(&env, &group, &topic);
    // Joining a group can take several seconds on tansu, so the deadline is
    // generous; each message must still arrive within 30 s of the last.
    let read_rest = async {
        while seen.len() < MESSAGES {
            seen.push(next_payload(&consumer).await?);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(90), read_rest)
        .await
        .expect("the second consumer reads the rest within 90 s")
        .expect("receiving");
    let rest = seen;

    let unique: BTreeSet<_> = rest.iter().cloned().collect();
    assert_eq!(rest.len(), MESSAGES, "no message repeated");
    assert_eq!(unique.len(), MESSAGES, "no message repeated");
    let expected: BTreeSet<_> = (0..MESSAGES).map(|i| format!("message-{i:04}")).collect();
    assert_eq!(unique, expected, "no message lost");

    // And nothing more arrives after the last one.
    let extra = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
    assert!(extra.is_err(), "no message delivered twice");
}
