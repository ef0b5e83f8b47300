//! The relay publishes the stored log to Kafka in order, with CloudEvents
//! headers or in batch messages, each stream in its partition, and exactly
//! one replica is active; another takes over when it stops.

use std::collections::HashMap;
use std::time::Duration;

use event_relay::{self as relay, RelayConfig, RelayMetrics};
use event_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use harness::{TestEnv, eventually};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn kafka(env: &TestEnv) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &env.kafka_brokers)
        .set("log_level", "3");
    config
}

const PARTITIONS: i32 = 3;

fn relay_config(env: &TestEnv) -> RelayConfig {
    let mut config = RelayConfig::new(format!("{}events", env.topic_prefix), "/tests");
    config.partitions = PARTITIONS;
    config.poll_interval = Duration::from_millis(200);
    config
}

fn start_relay(env: &TestEnv, store: &EventStore) -> (CancellationToken, RelayMetrics) {
    start_relay_with(env, store, relay_config(env))
}

fn start_relay_with(
    env: &TestEnv,
    store: &EventStore,
    config: RelayConfig,
) -> (CancellationToken, RelayMetrics) {
    let stop = CancellationToken::new();
    let metrics = RelayMetrics::default();
    tokio::spawn(relay::run(
        store.clone(),
        kafka(env),
        config,
        metrics.clone(),
        |_| std::future::pending(),
        stop.clone(),
    ));
    (stop, metrics)
}

async fn append_numbered(store: &EventStore, streams: usize, per_stream: u64, from: u64) {
    for s in 0..streams {
        let events = (from..from + per_stream)
            .map(|n| {
                let metadata = Metadata {
                    correlation_id: format!("c-{s}"),
                    causation_id: format!("c-{s}-{n}"),
                    traceparent: Some(
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                    ),
                    ..Metadata::default()
                };
                NewEvent::new("Numbered", json!({ "n": n }), metadata)
            })
            .collect();
        store
            .append(&[StreamAppend::new(
                format!("stream-{s}"),
                ExpectedVersion::Any,
                events,
            )])
            .await
            .unwrap();
    }
}

/// What [`consume`] read.
struct Consumed {
    /// The numbers of each stream's events, in arrival order.
    by_stream: HashMap<String, Vec<u64>>,
    /// The headers of the first message, with its event's id and stream.
    first_headers: HashMap<String, String>,
    /// How many messages carried them.
    messages: usize,
}

/// Reads the topic until `count` distinct events arrived, checking that
/// every event is in its stream's partition.
async fn consume(env: &TestEnv, count: usize) -> Consumed {
    let consumer: StreamConsumer = kafka(env)
        .set("group.id", format!("{}check", env.topic_prefix))
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .unwrap();
    let topic = format!("{}events", env.topic_prefix);
    // Subscribe once the relay has created the topic: librdkafka otherwise
    // looks for it again only at its next metadata refresh.
    eventually(
        Duration::from_secs(30),
        "the relay creates the topic",
        || async {
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
            let partitions = metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len());
            anyhow::ensure!(partitions > 0, "topic {topic} not there yet");
            Ok(())
        },
    )
    .await;
    consumer.subscribe(&[&topic]).unwrap();
    let mut consumed = Consumed {
        by_stream: HashMap::new(),
        first_headers: HashMap::new(),
        messages: 0,
    };
    let mut ids = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while ids.len() < count {
        let message = match tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .expect("the relayed events arrive within 90 s")
        {
            Ok(message) => message,
            // Until the relay has created the topic, the consumer reports it
            // unknown; keep waiting.
            Err(_) => continue,
        };
        consumed.messages += 1;
        let events = relay::decode(message.payload().unwrap()).unwrap();
        let first: Value = serde_json::to_value(&events[0]).unwrap();
        if consumed.messages == 1 {
            for header in message.headers().into_iter().flat_map(|h| h.iter()) {
                consumed.first_headers.insert(
                    header.key.to_owned(),
                    String::from_utf8(header.value.unwrap().to_vec()).unwrap(),
                );
            }
            if let Some(key) = message.key() {
                assert_eq!(key, first["stream_id"].as_str().unwrap().as_bytes());
                consumed
                    .first_headers
                    .insert("key".into(), String::from_utf8(key.to_vec()).unwrap());
            }
            consumed.first_headers.insert(
                "event_id".into(),
                first["event_id"].as_str().unwrap().into(),
            );
            consumed.first_headers.insert(
                "stream_id".into(),
                first["stream_id"].as_str().unwrap().into(),
            );
        }
        for event in events {
            assert_eq!(
                message.partition(),
                relay::partition_of(&event.stream_id, PARTITIONS),
                "{} in its partition",
                event.stream_id
            );
            if ids.insert(event.event_id) {
                consumed
                    .by_stream
                    .entry(event.stream_id)
                    .or_default()
                    .push(event.data["n"].as_u64().unwrap());
            }
        }
    }
    consumed
}

#[tokio::test]
async fn the_relay_publishes_every_event_in_stream_order_with_cloudevents_headers() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    append_numbered(&store, 5, 20, 0).await;
    let (_stop, metrics) = start_relay(&env, &store);
    append_numbered(&store, 5, 20, 20).await;

    let Consumed {
        by_stream,
        first_headers: headers,
        messages,
    } = consume(&env, 200).await;
    assert!(messages >= 200, "one event per message");
    assert_eq!(headers["key"], headers["stream_id"]);
    for (stream, numbers) in &by_stream {
        assert_eq!(
            numbers,
            &(0..40).collect::<Vec<_>>(),
            "{stream} in order, complete"
        );
    }
    assert_eq!(by_stream.len(), 5);
    assert_eq!(headers["ce_specversion"], "1.0");
    assert_eq!(headers["ce_id"], headers["event_id"]);
    assert_eq!(headers["ce_subject"], headers["stream_id"]);
    assert_eq!(headers["ce_type"], "Numbered");
    assert_eq!(headers["ce_source"], "/tests");
    assert!(chrono::DateTime::parse_from_rfc3339(&headers["ce_time"]).is_ok());
    assert_eq!(
        headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );

    eventually(Duration::from_secs(10), "lag reaches zero", || async {
        anyhow::ensure!(
            metrics.published.get() == 200,
            "published {}",
            metrics.published.get()
        );
        anyhow::ensure!(
            metrics.lag_events.get() == 0,
            "lag {}",
            metrics.lag_events.get()
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn only_one_relay_is_active_and_another_takes_over_when_it_stops() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    let (stop_a, a) = start_relay(&env, &store);
    let (stop_b, b) = start_relay(&env, &store);

    eventually(
        Duration::from_secs(20),
        "one relay becomes active",
        || async {
            anyhow::ensure!(
                a.active.get() + b.active.get() == 1,
                "active: {} {}",
                a.active.get(),
                b.active.get()
            );
            Ok(())
        },
    )
    .await;
    append_numbered(&store, 2, 10, 0).await;
    eventually(
        Duration::from_secs(60),
        "the first batch is published",
        || async {
            anyhow::ensure!(a.published.get() + b.published.get() == 20);
            Ok(())
        },
    )
    .await;
    assert_eq!(
        a.active.get() + b.active.get(),
        1,
        "still exactly one active"
    );

    let (stop_active, standby) = if a.active.get() == 1 {
        (stop_a, &b)
    } else {
        (stop_b, &a)
    };
    stop_active.cancel();
    eventually(
        Duration::from_secs(20),
        "the standby takes over",
        || async {
            anyhow::ensure!(standby.active.get() == 1);
            Ok(())
        },
    )
    .await;
    append_numbered(&store, 2, 10, 10).await;

    let by_stream = consume(&env, 40).await.by_stream;
    for numbers in by_stream.values() {
        assert_eq!(numbers, &(0..20).collect::<Vec<_>>());
    }
    assert!(
        standby.published.get() >= 20,
        "the standby published the new events"
    );
}

#[tokio::test]
async fn a_relay_stopped_mid_stream_is_succeeded_without_losing_an_event() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    append_numbered(&store, 4, 500, 0).await;

    let mut config = relay_config(&env);
    // Small batches, so the first relay is stopped between checkpoints.
    config.batch_size = 50;
    let (stop_first, first) = start_relay_with(&env, &store, config.clone());
    eventually(
        Duration::from_secs(60),
        "the first relay publishes",
        || async {
            anyhow::ensure!(first.published.get() > 0);
            Ok(())
        },
    )
    .await;
    stop_first.cancel();

    let (_stop, second) = start_relay(&env, &store);
    let by_stream = consume(&env, 2000).await.by_stream;
    for numbers in by_stream.values() {
        assert_eq!(
            numbers,
            &(0..500).collect::<Vec<_>>(),
            "complete and in order"
        );
    }
    // Between them the relays checkpointed the whole log. (Their
    // `published` counters can miss a batch: a relay stopped while saving
    // its checkpoint may have saved it without seeing the answer.)
    let head = store.head().await.unwrap();
    eventually(
        Duration::from_secs(30),
        "between them the relays published everything",
        || async {
            let (transaction_id, position): (i64, i64) = sqlx::query_as(
                "select transaction_id, position from event_relay_checkpoints where name = $1",
            )
            .bind(&config.name)
            .fetch_one(store.pool())
            .await?;
            anyhow::ensure!(
                (transaction_id, position) == (head.transaction_id, head.position),
                "checkpoint at {transaction_id}/{position}"
            );
            anyhow::ensure!(
                second.published.get() > 0,
                "the second relay published nothing"
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_batching_relay_publishes_every_event_in_stream_order_in_fewer_messages() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    append_numbered(&store, 5, 20, 0).await;
    let mut config = relay_config(&env);
    config.format = relay::MessageFormat::Batch;
    let (stop, metrics) = start_relay_with(&env, &store, config);
    let _stop = stop.drop_guard();
    append_numbered(&store, 5, 20, 20).await;

    let consumed = consume(&env, 200).await;
    for (stream, numbers) in &consumed.by_stream {
        assert_eq!(
            numbers,
            &(0..40).collect::<Vec<_>>(),
            "{stream} in order, complete"
        );
    }
    assert_eq!(consumed.by_stream.len(), 5);
    // A publish round reads up to 1,000 events and every append is 20
    // events of one stream, so 200 events take far fewer than 100 messages.
    assert!(
        consumed.messages < 100,
        "{} messages for 200 events",
        consumed.messages
    );
    assert!(
        !consumed.first_headers.contains_key("key")
            && !consumed.first_headers.contains_key("ce_id"),
        "a batch message has no key and no headers: {:?}",
        consumed.first_headers
    );
    eventually(
        Duration::from_secs(10),
        "everything is published",
        || async {
            anyhow::ensure!(
                metrics.published.get() == 200,
                "published {}",
                metrics.published.get()
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_relay_puts_a_stream_where_librdkafka_would_put_its_key() {
    // So a topic filled by a producer that let librdkafka choose keeps
    // every stream in its partition once the relay chooses.
    let env = TestEnv::new().await;
    let topic = format!("{}keyed", env.topic_prefix);
    relay::ensure_topic(&kafka(&env), &topic, PARTITIONS)
        .await
        .unwrap();
    let producer: rdkafka::producer::FutureProducer = kafka(&env).create().unwrap();
    for n in 0..30 {
        let stream = format!("order-{n}");
        let delivery = producer
            .send(
                rdkafka::producer::FutureRecord::to(&topic)
                    .key(&stream)
                    .payload("{}"),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(
            delivery.partition,
            relay::partition_of(&stream, PARTITIONS),
            "{stream}"
        );
    }
}
