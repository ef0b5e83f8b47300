//! The daily sales report (`GET /v1/reports/daily-sales`) over a real
//! broker: a read model fed by the same order streams as `rm_orders`, each
//! confirmed order counted once on its day and taken off on the day it is
//! cancelled, whatever the broker redelivers and however often the read
//! model is rebuilt; and who may read it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Days, NaiveDate};
use domain::Event;
use domain::order::{OrderEvent, OrderLine};
use event_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use harness::services::{self, RunningService};
use harness::{TestEnv, eventually};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::write_api::{address, assert_problem};

/// How long the read side may take to show a write when the consumer has
/// just joined its group (tansu takes several seconds for that).
const CATCH_UP: Duration = Duration::from_secs(60);

fn metadata() -> Metadata {
    Metadata {
        correlation_id: "tests".into(),
        causation_id: "tests".into(),
        ..Metadata::default()
    }
}

async fn append(store: &EventStore, order_id: Uuid, events: &[OrderEvent]) {
    let events = events
        .iter()
        .map(|e| NewEvent::new(e.event_type(), e.data(), metadata()))
        .collect();
    store
        .append(&[StreamAppend::new(
            format!("order-{order_id}"),
            ExpectedVersion::Any,
            events,
        )])
        .await
        .unwrap();
}

fn placed(order_id: Uuid, lines: &[(&str, i64, i64)]) -> OrderEvent {
    let lines: Vec<OrderLine> = lines
        .iter()
        .map(|&(sku, quantity, unit_price_cents)| OrderLine {
            sku: sku.into(),
            quantity,
            unit_price_cents,
        })
        .collect();
    OrderEvent::OrderPlaced {
        order_id,
        customer_id: Uuid::new_v4(),
        total_cents: lines.iter().map(|l| l.quantity * l.unit_price_cents).sum(),
        lines,
        shipping_address: serde_json::from_value(address("GB")).unwrap(),
    }
}

fn confirmed(order_id: Uuid) -> OrderEvent {
    OrderEvent::OrderConfirmed {
        order_id,
        tracking_number: "TRK-1".into(),
    }
}

fn cancelled(order_id: Uuid) -> OrderEvent {
    OrderEvent::OrderCancelled {
        order_id,
        reason: "changed my mind".into(),
    }
}

/// What the contract says the report holds, from the stored events
/// themselves: per (day, SKU), the lines of orders confirmed that day, less
/// those of confirmed orders cancelled that day.
async fn expected_report(
    store: &EventStore,
    orders: &[Uuid],
) -> BTreeMap<(String, String), (i64, i64)> {
    let mut report = BTreeMap::new();
    for order_id in orders {
        let events = store
            .read_stream(&format!("order-{order_id}"), 1, 100)
            .await
            .unwrap();
        let mut lines = Vec::new();
        let mut confirmed_on = None;
        for event in &events {
            let day = event.recorded_at.date_naive().to_string();
            match OrderEvent::decode(&event.event_type, &event.data).unwrap() {
                OrderEvent::OrderPlaced { lines: placed, .. } => lines = placed,
                OrderEvent::OrderConfirmed { .. } => {
                    confirmed_on = Some(day.clone());
                    add(&mut report, &day, &lines, 1);
                }
                OrderEvent::OrderCancelled { .. } if confirmed_on.is_some() => {
                    add(&mut report, &day, &lines, -1);
                }
                _ => {}
            }
        }
    }
    report
}

fn add(
    report: &mut BTreeMap<(String, String), (i64, i64)>,
    day: &str,
    lines: &[OrderLine],
    sign: i64,
) {
    for line in lines {
        let entry = report
            .entry((day.to_owned(), line.sku.clone()))
            .or_default();
        entry.0 += sign * line.quantity;
        entry.1 += sign * line.quantity * line.unit_price_cents;
    }
}

/// A report's items as (day, SKU) → (units, revenue), checking that they
/// come newest day first.
fn as_map(report: &Value) -> BTreeMap<(String, String), (i64, i64)> {
    let items = report["items"].as_array().expect("items");
    let days: Vec<&str> = items.iter().map(|i| i["day"].as_str().unwrap()).collect();
    assert!(
        days.windows(2).all(|w| w[0] >= w[1]),
        "newest day first: {days:?}"
    );
    items
        .iter()
        .map(|i| {
            (
                (
                    i["day"].as_str().unwrap().to_owned(),
                    i["sku"].as_str().unwrap().to_owned(),
                ),
                (
                    i["units"].as_i64().unwrap(),
                    i["revenue_cents"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

struct Side {
    env: TestEnv,
    client: Client,
    projector: RunningService,
    query: RunningService,
    _command: RunningService,
}

impl Side {
    async fn report(&self, query: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/v1/reports/daily-sales{query}", self.query.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{query}");
        response.json().await.unwrap()
    }

    async fn projection(&self, name: &str) -> Value {
        let all: Vec<Value> = self
            .client
            .get(format!("{}/v1/projections", self.projector.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.into_iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no projection {name}"))
    }

    /// Waits until the daily sales projection has applied `events` events
    /// and no more.
    async fn applied(&self, events: i64) {
        let applied = eventually(CATCH_UP, &format!("{events} events applied"), || async {
            let daily = self.projection("daily_sales").await;
            let applied = daily["events_applied"].as_i64().unwrap_or(0);
            anyhow::ensure!(applied >= events, "{daily}");
            Ok(applied)
        })
        .await;
        assert_eq!(applied, events, "an event was counted twice");
    }

    /// Sends a stored event to the events topic again, as the relay
    /// published it (same key, so the same partition as the original).
    async fn redeliver(&self, store: &EventStore, order_ids: &[Uuid]) {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.env.kafka_brokers);
        let producer: FutureProducer = config.create().unwrap();
        let topic = format!("{}events", self.env.topic_prefix);
        for order_id in order_ids {
            let stream = format!("order-{order_id}");
            for event in store.read_stream(&stream, 1, 100).await.unwrap() {
                let payload = serde_json::to_vec(&event).unwrap();
                producer
                    .send(
                        FutureRecord::to(&topic).key(&stream).payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(error, _)| error)
                    .unwrap();
            }
        }
    }

    async fn rebuilt(&self, times: u32) {
        let metrics_url = format!("{}/metrics", self.projector.url);
        let line = format!("orders_projector_rebuilds_total{{projection=\"daily_sales\"}} {times}");
        eventually(CATCH_UP, "the rebuild swapped in", || async {
            let metrics = self.client.get(&metrics_url).send().await?.text().await?;
            anyhow::ensure!(metrics.lines().any(|l| l == line), "not yet");
            Ok(())
        })
        .await;
    }
}

#[tokio::test]
async fn daily_sales_count_each_confirmed_order_once_through_redeliveries_and_rebuilds() {
    let env = TestEnv::new().await;
    // command-service runs the relay; the orders are appended directly so
    // the test chooses their lines and fates.
    let command = services::command_service(&env).await;
    let projector = services::projector(&env).await;
    let query = services::query_service(&env).await;
    let side = Side {
        env,
        client: harness::auth::admin(),
        projector,
        query,
        _command: command,
    };
    let store = side.env.event_store().await;

    let orders: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let [kept, cancelled_after, cancelled_before, pending, two_lines] = orders[..] else {
        unreachable!()
    };
    append(
        &store,
        kept,
        &[
            placed(kept, &[("mug", 2, 900), ("cup", 1, 300)]),
            confirmed(kept),
        ],
    )
    .await;
    append(
        &store,
        cancelled_after,
        &[
            placed(cancelled_after, &[("mug", 1, 900)]),
            confirmed(cancelled_after),
            cancelled(cancelled_after),
        ],
    )
    .await;
    append(
        &store,
        cancelled_before,
        &[
            placed(cancelled_before, &[("mug", 5, 900)]),
            cancelled(cancelled_before),
        ],
    )
    .await;
    append(&store, pending, &[placed(pending, &[("cup", 3, 300)])]).await;
    append(
        &store,
        two_lines,
        &[
            placed(two_lines, &[("mug", 1, 900), ("mug", 2, 800)]),
            confirmed(two_lines),
        ],
    )
    .await;
    side.applied(10).await;

    let expected = expected_report(&store, &orders).await;
    let today = store
        .read_stream(&format!("order-{kept}"), 2, 1)
        .await
        .unwrap()[0]
        .recorded_at
        .date_naive();
    // The confirmed and the cancelled mug of one day cancel out; the
    // order cancelled before confirmation and the pending one never count.
    if expected.keys().all(|(day, _)| *day == today.to_string()) {
        assert_eq!(
            expected,
            BTreeMap::from([
                ((today.to_string(), "cup".into()), (1, 300)),
                ((today.to_string(), "mug".into()), (5, 4_300)),
            ])
        );
    }
    let report = side.report("").await;
    assert_eq!(as_map(&report), expected, "{report}");
    // The orders read model, fed by the same streams, has them all too.
    let rows: i64 = sqlx::query_scalar("select count(*) from rm_orders")
        .fetch_one(&side.env.pg)
        .await
        .unwrap();
    assert_eq!(rows, 5);

    // Filters: one SKU, a range of days.
    let cups = as_map(&side.report("?sku=cup").await);
    assert!(cups.keys().all(|(_, sku)| sku == "cup") && !cups.is_empty());
    let day = |d: NaiveDate| d.to_string();
    let tomorrow = today.checked_add_days(Days::new(1)).unwrap();
    let yesterday = today.checked_sub_days(Days::new(1)).unwrap();
    assert!(as_map(&side.report(&format!("?from={}", day(tomorrow))).await).is_empty());
    assert!(as_map(&side.report(&format!("?to={}", day(yesterday))).await).is_empty());
    let only_today = format!("?from={}&to={}", day(today), day(today));
    assert_eq!(
        as_map(&side.report(&only_today).await),
        expected
            .clone()
            .into_iter()
            .filter(|((d, _), _)| *d == day(today))
            .collect()
    );

    // The broker delivers every order event again; then each stream moves
    // on by one event (a cancellation request, which sells nothing). The
    // duplicates share their streams' partitions and come first, so once
    // the new events are applied, the duplicates have been consumed.
    side.redeliver(&store, &orders).await;
    for order_id in &orders {
        let requested = OrderEvent::OrderCancellationRequested {
            order_id: *order_id,
            reason: "asked after the redelivery".into(),
        };
        append(&store, *order_id, &[requested]).await;
    }
    side.applied(15).await;
    assert_eq!(
        as_map(&side.report("").await),
        expected,
        "a redelivery changed the report"
    );
    let dead: i64 = sqlx::query_scalar("select count(*) from projector_dead_letters")
        .fetch_one(&side.env.pg)
        .await
        .unwrap();
    assert_eq!(dead, 0, "a redelivery is not a poison message");

    // Rebuilt through the operator's API, then the command line: the same
    // report, the same count.
    let response = side
        .client
        .post(format!(
            "{}/v1/projections/daily_sales/rebuild",
            side.projector.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    side.rebuilt(1).await;
    assert_eq!(
        as_map(&side.report("").await),
        expected,
        "after the rebuild"
    );
    assert_eq!(side.projection("daily_sales").await["events_applied"], 15);

    let config = projector::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        read_model_schema: "public".into(),
        consumer_group: None,
        batch_size: 500,
        fetch_wait_ms: 100,
        common: side.env.common_config_as(service_kit::db::PROJECTOR),
    };
    projector::cli::rebuild(config, Some(projector::views::Projection::DailySales))
        .await
        .unwrap();
    assert_eq!(
        as_map(&side.report("").await),
        expected,
        "after projector rebuild"
    );
    let daily = side.projection("daily_sales").await;
    assert_eq!(
        (daily["status"].as_str(), daily["events_applied"].as_i64()),
        (Some("live"), Some(15))
    );
}

#[tokio::test]
async fn the_daily_sales_report_is_for_readers_and_checks_its_filters() {
    let env = TestEnv::new().await;
    let query = services::query_service(&env).await;
    let url = format!("{}/v1/reports/daily-sales", query.url);

    for role in ["reader", "writer", "operator", "admin"] {
        let response = harness::auth::client(role).get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{role}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["items"], serde_json::json!([]), "{role}");
    }
    let customer = harness::auth::client_with(&harness::auth::customer_token(Uuid::new_v4()));
    let response = customer.get(&url).send().await.unwrap();
    assert_problem(response, StatusCode::FORBIDDEN, "forbidden", None).await;
    let response = Client::new().get(&url).send().await.unwrap();
    assert_problem(response, StatusCode::UNAUTHORIZED, "unauthorized", None).await;

    let reader = harness::auth::client("reader");
    for (query, field) in [
        ("sku=not%20a%20sku", Some("sku")),
        ("from=2026-12-07&to=2026-12-06", Some("from")),
        // Not dates: the query string does not parse.
        ("from=2026-13-01", Some("query")),
        ("to=yesterday", Some("query")),
    ] {
        let response = reader.get(format!("{url}?{query}")).send().await.unwrap();
        assert_problem(response, StatusCode::BAD_REQUEST, "validation", field).await;
    }
    let response = reader
        .get(format!("{url}?sku=mug&from=2026-12-06&to=2026-12-06"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_read_model_table_has_the_columns_its_declaration_names() {
    // The declarations (`read-models`) are what the projector writes
    // through and the query-service selects; the migrations make the
    // tables. They must agree, column for column and in order.
    let env = TestEnv::new().await;
    for projection in projector::views::Projection::ALL {
        let declaration = projection.declaration();
        let columns: Vec<String> = sqlx::query_scalar(
            "select column_name::text from information_schema.columns
             where table_schema = 'public' and table_name = $1
             order by ordinal_position",
        )
        .bind(declaration.table)
        .fetch_all(&env.pg)
        .await
        .unwrap();
        let declared: Vec<&str> = declaration.column_names().collect();
        assert_eq!(columns, declared, "{}", declaration.table);
    }
}
