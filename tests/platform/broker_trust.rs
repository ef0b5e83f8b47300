//! The broker is a trust boundary: whoever can publish to the events topic
//! can change nothing. With the whole platform running over a real broker,
//! forged messages in each of the relay's formats (a placement of an order
//! that does not exist, under an id the store does not hold; a real
//! placement's id claiming another order; a real deposit's id claiming a
//! bigger deposit at the next version) change no read model and start no
//! saga; the projector and the saga intake count them, and a real order
//! placed after them goes through as usual.

use std::time::Duration;

use event_relay::{self as relay, MessageFormat};
use event_store::RecordedEvent;
use harness::eventually;
use harness::platform;
use harness::services::RunningService;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::write_api::address;

const SETTLE: Duration = Duration::from_secs(90);

/// The whole platform, with what these tests ask of it.
struct Platform(platform::Platform);

impl std::ops::Deref for Platform {
    type Target = platform::Platform;

    fn deref(&self) -> &platform::Platform {
        &self.0
    }
}

impl Platform {
    async fn start(format: MessageFormat) -> Self {
        Self(platform::Platform::start_relaying(format, platform::fast_retries).await)
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(format!("{}{path}", self.command.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    async fn query(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.query.url))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn place(&self, customer: &str, sku: &str) -> String {
        let body = self
            .command(
                "/v1/orders",
                json!({"customer_id": customer, "lines": [{"sku": sku, "quantity": 1}],
                       "shipping_address": address("GB")}),
            )
            .await;
        body["order_id"].as_str().unwrap().to_owned()
    }

    /// Waits until the read model shows the order confirmed: it was
    /// projected, and its saga ran.
    async fn confirmed(&self, order_id: &str) {
        eventually(SETTLE, &format!("order {order_id} confirmed"), || async {
            let (code, order) = self.query(&format!("/v1/orders/{order_id}")).await;
            anyhow::ensure!(code == StatusCode::OK, "{code}");
            anyhow::ensure!(order["status"] == "confirmed", "{order}");
            Ok(())
        })
        .await;
    }

    /// The value of a counter sample (`name{labels}`) in a service's
    /// `/metrics`, 0 while it has none.
    async fn counter(&self, service: &RunningService, sample: &str) -> anyhow::Result<u64> {
        let text = self
            .client
            .get(format!("{}/metrics", service.url))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(Ok(0), str::parse)?)
    }

    /// Waits until a service has counted exactly `expected` forged events
    /// of each kind (and then checks nothing more came).
    async fn counted(&self, service: &RunningService, metric: &str, expected: [(&str, u64); 2]) {
        eventually(
            SETTLE,
            &format!("{} counts {metric}", service.name),
            || async {
                for (reason, count) in expected {
                    let sample = format!("{metric}{{reason=\"{reason}\"}}");
                    let seen = self.counter(service, &sample).await?;
                    anyhow::ensure!(seen == count, "{sample} is {seen}, expected {count}");
                }
                Ok(())
            },
        )
        .await;
    }

    fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.env.kafka_brokers)
            .set("log_level", "3")
            .create()
            .unwrap()
    }

    /// Publishes `events` to the events topic as the relay would in
    /// `format`: one message each (keyed by stream, in its stream's
    /// partition, with CloudEvents headers or without), or all in one
    /// batch message.
    async fn publish(&self, format: MessageFormat, events: &[RecordedEvent]) {
        let producer = self.producer();
        let topic = self.env.common_config().events_topic();
        let partitions = relay::EVENTS_TOPIC_PARTITIONS;
        let mut messages = Vec::new();
        if format == MessageFormat::Batch {
            messages.push((None, 0, serde_json::to_vec(events).unwrap(), None));
        } else {
            for event in events {
                let headers = (format == MessageFormat::CloudEvents).then(|| headers(event));
                messages.push((
                    Some(event.stream_id.clone()),
                    relay::partition_of(&event.stream_id, partitions),
                    serde_json::to_vec(event).unwrap(),
                    headers,
                ));
            }
        }
        for (key, partition, payload, headers) in messages {
            let mut record = FutureRecord::<String, Vec<u8>>::to(&topic)
                .partition(partition)
                .payload(&payload);
            if let Some(key) = &key {
                record = record.key(key);
            }
            if let Some(headers) = headers {
                record = record.headers(headers);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(error, _)| error)
                .expect("the broker takes the forged message");
        }
    }
}

/// The CloudEvents binary-mode headers the relay sets, which a forger can
/// set as easily.
fn headers(event: &RecordedEvent) -> OwnedHeaders {
    let id = event.event_id.to_string();
    let time = event.recorded_at.to_rfc3339();
    [
        ("ce_specversion", "1.0"),
        ("ce_id", id.as_str()),
        ("ce_source", "/command-service"),
        ("ce_type", event.event_type.as_str()),
        ("ce_time", time.as_str()),
        ("ce_subject", event.stream_id.as_str()),
        ("content-type", "application/json"),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |headers, (key, value)| {
        headers.insert(Header {
            key,
            value: Some(value),
        })
    })
}

/// A placement claimed for another order: `placed` with the order's id
/// replaced everywhere it appears.
fn placement_of(placed: &RecordedEvent, order_id: Uuid) -> RecordedEvent {
    let mut forged = placed.clone();
    forged.stream_id = format!("order-{order_id}");
    forged.data["order_id"] = json!(order_id);
    forged
}

/// The balance the customer's stored events add up to.
fn stored_balance(events: &[RecordedEvent]) -> i64 {
    events
        .iter()
        .map(|event| {
            let amount = event.data["amount_cents"].as_i64().unwrap_or(0);
            match event.event_type.as_str() {
                "FundsDeposited" | "PaymentRefunded" => amount,
                "PaymentCharged" => -amount,
                _ => 0,
            }
        })
        .sum()
}

async fn forged_messages_change_nothing(format: MessageFormat) {
    let platform = Platform::start(format).await;
    platform
        .command(
            "/v1/products",
            json!({"sku": "kettle", "name": "Kettle", "price_cents": 500, "initial_stock": 10}),
        )
        .await;
    let customer = platform
        .command(
            "/v1/customers",
            json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await["customer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    platform
        .command(
            &format!("/v1/customers/{customer}/deposits"),
            json!({"amount_cents": 10_000}),
        )
        .await;
    let first = platform.place(&customer, "kettle").await;
    platform.confirmed(&first).await;

    let store = platform.env.event_store().await;
    let customer_stream = format!("customer-{customer}");
    let stored = store.read_stream(&customer_stream, 1, 100).await.unwrap();
    let deposit = stored
        .iter()
        .find(|event| event.event_type == "FundsDeposited")
        .expect("the deposit is stored")
        .clone();
    let last = stored.last().unwrap();
    let placed = store
        .read_stream(&format!("order-{first}"), 1, 1)
        .await
        .unwrap()
        .remove(0);

    // An order nobody placed, under an id the store does not hold.
    let (invented, borrowed) = (Uuid::now_v7(), Uuid::now_v7());
    let mut unknown = placement_of(&placed, invented);
    unknown.event_id = Uuid::now_v7();
    unknown.position = last.position + 1_000;
    // The real placement's id, claiming another order.
    let borrowed_placement = placement_of(&placed, borrowed);
    // The real deposit's id, claiming a bigger one as the stream's next
    // event: applied as content, it would have raised the balance.
    let mut bigger = deposit.clone();
    bigger.data["amount_cents"] = json!(1_000_000);
    bigger.version = last.version + 1;
    bigger.position = last.position + 1_001;
    let forged = [unknown, borrowed_placement, bigger];
    platform.publish(format, &forged).await;

    // Both consumers read them and counted them as what they are (the
    // saga intake looks only at order events).
    platform
        .counted(
            &platform.projector,
            "orders_projector_forged_events_total",
            [("not_stored", 1), ("differs", 2)],
        )
        .await;
    platform
        .counted(
            platform.orchestrator.as_ref().expect("running"),
            "orders_saga_intake_forged_events_total",
            [("not_stored", 1), ("differs", 1)],
        )
        .await;

    // Neither consumer is stuck behind them: a real order placed afterwards
    // is projected and its saga runs.
    let second = platform.place(&customer, "kettle").await;
    platform.confirmed(&second).await;

    for order in [invented, borrowed] {
        let (code, body) = platform.query(&format!("/v1/orders/{order}")).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "no order {order}: {body}");
        let (code, body) = platform.query(&format!("/v1/sagas/{order}")).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "no saga for {order}: {body}");
        assert_eq!(
            store
                .stream_version(&format!("saga-{order}"))
                .await
                .unwrap(),
            0,
            "no saga recorded for {order}"
        );
        let instances: i64 =
            sqlx::query_scalar("select count(*) from saga_instances where order_id = $1")
                .bind(order)
                .fetch_one(&platform.env.pg)
                .await
                .unwrap();
        assert_eq!(instances, 0, "no saga scheduled for {order}");
    }
    let stored = store.read_stream(&customer_stream, 1, 100).await.unwrap();
    assert_eq!(stored_balance(&stored), 10_000 - 2 * 500);
    let (_, shown) = platform
        .query(&format!(
            "/v1/customers/{customer}?min_version={}",
            stored.len()
        ))
        .await;
    assert_eq!(
        shown["balance_cents"],
        stored_balance(&stored),
        "the balance is what the stored events add up to: {shown}"
    );
    assert_eq!(shown["version"], stored.len(), "{shown}");

    // The projector kept the forged messages for an operator to see.
    let reasons: Vec<String> = sqlx::query_scalar("select reason from projector_dead_letters")
        .fetch_all(&platform.env.pg)
        .await
        .unwrap();
    let reasons = reasons.join("\n");
    for event in &forged {
        assert!(
            reasons.contains(&event.event_id.to_string()),
            "{} among the dead letters: {reasons}",
            event.event_id
        );
    }
}

#[tokio::test]
async fn forged_cloudevents_messages_change_nothing() {
    forged_messages_change_nothing(MessageFormat::CloudEvents).await;
}

#[tokio::test]
async fn forged_plain_messages_change_nothing() {
    forged_messages_change_nothing(MessageFormat::Plain).await;
}

#[tokio::test]
async fn a_forged_batch_message_changes_nothing() {
    forged_messages_change_nothing(MessageFormat::Batch).await;
}
