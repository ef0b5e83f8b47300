//! The read side over real HTTP and a real broker: read-your-writes with
//! `min_version`, lists with cursors, idempotent consumption (redeliveries,
//! poison messages), rebuilds under load, several projector instances, and
//! the saga views.

use std::time::Duration;

use domain::Event;
use domain::saga::{SagaEvent, SagaStep};
use event_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use harness::services::{self, RunningService};
use harness::{TestEnv, eventually};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::write_api::{address, assert_problem};

/// How long the read side may take to show a write when the consumer has
/// just joined its group (tansu takes several seconds for that).
const CATCH_UP: Duration = Duration::from_secs(60);

struct ReadSide {
    env: TestEnv,
    client: Client,
    command: RunningService,
    projector: RunningService,
    query: RunningService,
}

impl ReadSide {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust_query: impl FnOnce(&mut query_service::Config)) -> Self {
        let env = TestEnv::new().await;
        let command = services::command_service(&env).await;
        let projector = services::projector(&env).await;
        let query = services::query_service_with(&env, adjust_query).await;
        let side = Self {
            env,
            client: harness::auth::admin(),
            command,
            projector,
            query,
        };
        for service in [&side.command, &side.projector, &side.query] {
            let url = format!("{}/health/ready", service.url);
            eventually(Duration::from_secs(60), "services ready", || async {
                side.client.get(&url).send().await?.error_for_status()?;
                Ok(())
            })
            .await;
        }
        side
    }

    async fn command(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.command.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn query(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.query.url))
            .send()
            .await
            .unwrap()
    }

    async fn query_json(&self, path: &str) -> Value {
        let response = self.query(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    /// Waits until `path` answers 200 on the query-service.
    async fn visible(&self, path: &str) -> Value {
        eventually(CATCH_UP, &format!("GET {path} answers 200"), || async {
            let response = self.query(path).await;
            anyhow::ensure!(response.status() == StatusCode::OK, "{}", response.status());
            Ok(response.json::<Value>().await?)
        })
        .await
    }

    async fn product(&self, sku: &str, stock: i64) {
        let (status, body) = self
            .command(
                "/v1/products",
                json!({"sku": sku, "name": sku, "price_cents": 250, "initial_stock": stock}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    async fn customer(&self, deposit: i64) -> String {
        let (status, body) = self
            .command(
                "/v1/customers",
                json!({"name": "Ada", "email": "ada@example.com"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["customer_id"].as_str().unwrap().to_owned();
        let (status, _) = self
            .command(
                &format!("/v1/customers/{id}/deposits"),
                json!({"amount_cents": deposit}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        id
    }

    async fn order(&self, customer: &str, sku: &str, quantity: i64) -> Value {
        let (status, body) = self
            .command(
                "/v1/orders",
                json!({"customer_id": customer, "lines": [{"sku": sku, "quantity": quantity}],
                       "shipping_address": address("GB")}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body
    }

    async fn projections(&self) -> Vec<Value> {
        self.client
            .get(format!("{}/v1/projections", self.projector.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn kafka(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.env.kafka_brokers);
        config
    }

    /// Sends raw bytes to the events topic, as if the relay had.
    async fn produce(&self, key: &str, payload: &[u8]) {
        let producer: FutureProducer = self.kafka().create().unwrap();
        let topic = format!("{}events", self.env.topic_prefix);
        producer
            .send(
                FutureRecord::to(&topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }
}

fn metadata() -> Metadata {
    Metadata {
        correlation_id: "tests".into(),
        causation_id: "tests".into(),
        ..Metadata::default()
    }
}

/// Appends a saga's events directly to the event store (the orchestrator
/// is not part of these tests; only what the projector shows of them is).
async fn append_saga(store: &EventStore, order_id: Uuid, events: &[SagaEvent]) {
    let events = events
        .iter()
        .map(|e| NewEvent::new(e.event_type(), e.data(), metadata()))
        .collect();
    store
        .append(&[StreamAppend::new(
            domain::saga::stream_id(order_id),
            ExpectedVersion::Any,
            events,
        )])
        .await
        .unwrap();
}

fn saga_until_charge_fails(order_id: Uuid) -> Vec<SagaEvent> {
    vec![
        SagaEvent::SagaStarted {
            order_id,
            customer_id: Uuid::new_v4(),
            total_cents: 500,
        },
        SagaEvent::StepStarted {
            step: SagaStep::ReserveInventory,
            attempt: 1,
        },
        SagaEvent::StepSucceeded {
            step: SagaStep::ReserveInventory,
            attempt: 1,
            detail: None,
        },
        SagaEvent::StepStarted {
            step: SagaStep::ChargePayment,
            attempt: 1,
        },
        SagaEvent::StepFailed {
            step: SagaStep::ChargePayment,
            attempt: 1,
            error: "payment_declined".into(),
            retryable: false,
        },
        SagaEvent::CompensationStarted {
            reason: "payment_declined".into(),
        },
        SagaEvent::StepCompensationStarted {
            step: SagaStep::ReserveInventory,
            attempt: 1,
        },
    ]
}

#[tokio::test]
async fn reads_with_min_version_see_the_write_they_follow() {
    let side = ReadSide::start().await;
    side.product("mug", 10).await;
    // The first read waits for the consumer to join its group.
    side.visible("/v1/products/mug").await;

    let (status, restocked) = side
        .command("/v1/products/mug/restock", json!({"quantity": 5}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let version = restocked["version"].as_u64().unwrap();
    let response = side
        .query(&format!("/v1/products/mug?min_version={version}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], format!("\"{version}\""));
    let product: Value = response.json().await.unwrap();
    assert_eq!(product["on_hand"], 15);
    assert_eq!(product["reserved"], 0);
    assert_eq!(product["available"], 15);
    assert_eq!(product["price_cents"], 250);
    assert_eq!(product["version"], version);

    let customer = side.customer(1_000).await;
    let response = side
        .query(&format!("/v1/customers/{customer}?min_version=2"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["balance_cents"], 1_000);
    assert_eq!(body["customer_id"], customer);

    let placed = side.order(&customer, "mug", 3).await;
    let order_id = placed["order_id"].as_str().unwrap();
    let order = side
        .query_json(&format!(
            "/v1/orders/{order_id}?min_version={}",
            placed["version"]
        ))
        .await;
    assert_eq!(order["status"], "pending");
    assert_eq!(order["customer_id"], customer);
    assert_eq!(
        order["lines"],
        json!([{"sku": "mug", "quantity": 3, "unit_price_cents": 250}])
    );
    assert_eq!(order["total_cents"], 750);
    assert_eq!(order["shipping_address"]["country"], "GB");
    assert_eq!(order["rejection_reason"], Value::Null);
    assert!(order["created_at"].is_string() && order["updated_at"].is_string());
}

#[tokio::test]
async fn a_read_model_that_does_not_catch_up_in_time_is_a_504_and_unknown_ids_are_404() {
    let side = ReadSide::start_with(|config| config.min_version_timeout_ms = 500).await;
    side.product("lamp", 1).await;
    side.visible("/v1/products/lamp").await;

    let started = std::time::Instant::now();
    let response = side.query("/v1/products/lamp?min_version=99").await;
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_problem(
        response,
        StatusCode::GATEWAY_TIMEOUT,
        "read-model-behind",
        None,
    )
    .await;

    let unknown = Uuid::new_v4();
    for path in [
        format!("/v1/orders/{unknown}"),
        format!("/v1/customers/{unknown}"),
        format!("/v1/sagas/{unknown}"),
        "/v1/products/no-such-sku".to_owned(),
    ] {
        assert_problem(
            side.query(&path).await,
            StatusCode::NOT_FOUND,
            "not-found",
            None,
        )
        .await;
    }
    for path in [
        "/v1/orders/not-a-uuid",
        "/v1/products/bad%20sku",
        "/v1/products/lamp?min_version=-1",
        // Beyond any version (a PostgreSQL bigint): refused, not awaited.
        "/v1/products/lamp?min_version=9223372036854775808",
        "/v1/orders?status=shipped",
        "/v1/orders?limit=0",
        "/v1/orders?cursor=garbage",
        "/v1/sagas?step=fly",
    ] {
        let response = side.query(path).await;
        assert_problem(response, StatusCode::BAD_REQUEST, "validation", None).await;
    }
}

#[tokio::test]
async fn order_lists_page_newest_first_by_customer_and_status() {
    let side = ReadSide::start().await;
    side.product("pen", 1_000).await;
    let (ada, bob) = (side.customer(10_000).await, side.customer(10_000).await);
    let mut ada_orders = Vec::new();
    for _ in 0..5 {
        ada_orders.push(side.order(&ada, "pen", 1).await["order_id"].clone());
    }
    let bob_order = side.order(&bob, "pen", 1).await["order_id"].clone();
    let cancelled = ada_orders[1].as_str().unwrap().to_owned();
    let (status, _) = side
        .command(
            &format!("/v1/orders/{cancelled}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    side.visible(&format!("/v1/orders/{}", bob_order.as_str().unwrap()))
        .await;
    eventually(CATCH_UP, "every order is projected", || async {
        let all = side.query_json("/v1/orders?limit=200").await;
        anyhow::ensure!(all["items"].as_array().unwrap().len() == 6);
        Ok(())
    })
    .await;

    // Ada's orders, two per page, newest first, each exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/orders?customer_id={ada}&limit=2&cursor={c}"),
            None => format!("/v1/orders?customer_id={ada}&limit=2"),
        };
        let page = side.query_json(&path).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|o| o["order_id"].clone()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        // An order placed while paging sorts before the cursor and does
        // not disturb the pages still to come.
        if seen.len() == 2 {
            side.order(&ada, "pen", 1).await;
        }
    }
    let newest_first: Vec<Value> = ada_orders.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let pending = side
        .query_json(&format!("/v1/orders?customer_id={bob}&status=pending"))
        .await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 1);
    assert_eq!(pending["items"][0]["order_id"], bob_order);
    // Cancellation was requested; the order stays pending until its saga
    // has compensated.
    let cancelled = side
        .query_json(&format!("/v1/orders/{cancelled}?min_version=2"))
        .await;
    assert_eq!(cancelled["status"], "pending");
}

#[tokio::test]
async fn a_redelivered_event_leaves_the_read_model_unchanged() {
    let side = ReadSide::start().await;
    side.product("cup", 10).await;
    side.command("/v1/products/cup/restock", json!({"quantity": 5}))
        .await;
    let before = side.visible("/v1/products/cup?min_version=2").await;
    assert_eq!(before["on_hand"], 15);

    // Deliver the restock again, exactly as the relay published it, and
    // the creation too.
    let store = side.env.event_store().await;
    for event in store.read_stream("product-cup", 1, 10).await.unwrap() {
        side.produce("product-cup", &serde_json::to_vec(&event).unwrap())
            .await;
    }
    // A later event still applies, once.
    let (_, restocked) = side
        .command("/v1/products/cup/restock", json!({"quantity": 1}))
        .await;
    assert_eq!(restocked["version"], 3);
    let after = side.visible("/v1/products/cup?min_version=3").await;
    assert_eq!(after["on_hand"], 16);

    // The duplicates were delivered before the new event (same partition),
    // so they have been consumed; nothing counted them.
    let products = side
        .projections()
        .await
        .into_iter()
        .find(|p| p["name"] == "products")
        .unwrap();
    assert_eq!(products["events_applied"], 3);
    let dead: i64 = sqlx::query_scalar("select count(*) from projector_dead_letters")
        .fetch_one(&side.env.pg)
        .await
        .unwrap();
    assert_eq!(dead, 0, "a redelivery is not a poison message");
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_later_events_still_apply() {
    let side = ReadSide::start().await;
    side.product("bowl", 4).await;
    side.visible("/v1/products/bowl").await;

    side.produce("product-bowl", b"\x00not json at all").await;
    let mut unknown = serde_json::to_value(
        side.env
            .event_store()
            .await
            .read_stream("product-bowl", 1, 1)
            .await
            .unwrap()
            .remove(0),
    )
    .unwrap();
    unknown["type"] = json!("ProductTeleported");
    unknown["version"] = json!(2);
    side.produce("product-bowl", &serde_json::to_vec(&unknown).unwrap())
        .await;

    side.command("/v1/products/bowl/restock", json!({"quantity": 6}))
        .await;
    let product = side.visible("/v1/products/bowl?min_version=2").await;
    assert_eq!(product["on_hand"], 10);

    let reasons: Vec<String> =
        sqlx::query_scalar("select reason from projector_dead_letters order by \"offset\"")
            .fetch_all(&side.env.pg)
            .await
            .unwrap();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("not an event"), "{reasons:?}");
    assert!(reasons[1].contains("ProductTeleported"), "{reasons:?}");
    let metrics = services::metrics(&side.client, &side.projector.url).await;
    assert!(
        metrics.contains("orders_projector_dead_letters_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn saga_views_show_status_steps_and_history_with_filters() {
    let side = ReadSide::start().await;
    let store = side.env.event_store().await;
    let (failing, running) = (Uuid::new_v4(), Uuid::new_v4());
    append_saga(&store, failing, &saga_until_charge_fails(failing)).await;
    append_saga(
        &store,
        running,
        &[
            SagaEvent::SagaStarted {
                order_id: running,
                customer_id: Uuid::new_v4(),
                total_cents: 100,
            },
            SagaEvent::StepStarted {
                step: SagaStep::ReserveInventory,
                attempt: 1,
            },
        ],
    )
    .await;

    let detail = side.visible(&format!("/v1/sagas/{failing}")).await;
    assert_eq!(detail["saga_id"], format!("saga-{failing}"));
    assert_eq!(detail["order_id"], failing.to_string());
    assert_eq!(detail["type"], "order_fulfilment");
    assert_eq!(detail["status"], "compensating");
    assert_eq!(detail["current_step"], "reserve_inventory");
    assert_eq!(detail["failure_reason"], "payment_declined");
    let steps = detail["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["reserve_inventory", "charge_payment", "create_shipment"]
    );
    assert_eq!(steps[0]["status"], "compensating");
    assert_eq!(steps[1]["status"], "failed");
    assert_eq!(steps[1]["attempts"], 1);
    assert_eq!(steps[1]["last_error"], "payment_declined");
    assert!(steps[1]["finished_at"].is_string());
    assert_eq!(steps[2]["status"], "pending");
    let events: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "saga_started",
            "step_started",
            "step_succeeded",
            "step_started",
            "step_failed",
            "compensation_started",
            "step_compensation_started"
        ]
    );
    assert_eq!(detail["finished_at"], Value::Null);

    side.visible(&format!("/v1/sagas/{running}")).await;
    let compensating = side.query_json("/v1/sagas?status=compensating").await;
    let items = compensating["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["order_id"], failing.to_string());
    assert_eq!(items[0]["status"], "compensating");
    let reserving = side
        .query_json("/v1/sagas?status=running&step=reserve_inventory")
        .await;
    assert_eq!(reserving["items"][0]["order_id"], running.to_string());
    let all = side.query_json("/v1/sagas?limit=1").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    assert!(all["next_cursor"].is_string());

    // The saga finishes; its view follows.
    append_saga(
        &store,
        failing,
        &[
            SagaEvent::StepCompensated {
                step: SagaStep::ReserveInventory,
                attempt: 1,
            },
            SagaEvent::SagaCompensated {
                reason: "payment_declined".into(),
            },
        ],
    )
    .await;
    let finished = eventually(CATCH_UP, "the saga is compensated", || async {
        let detail = side.query_json(&format!("/v1/sagas/{failing}")).await;
        anyhow::ensure!(detail["status"] == "compensated", "{}", detail["status"]);
        Ok(detail)
    })
    .await;
    assert!(finished["finished_at"].is_string());
    assert_eq!(finished["current_step"], Value::Null);
}

/// Every read-model table of `schema`, as JSON rows ordered by key; an
/// error until the projector of that schema has created its tables.
async fn read_models(env: &TestEnv, schema: &str) -> anyhow::Result<Value> {
    let mut all = serde_json::Map::new();
    for (table, key) in [
        ("rm_orders", "order_id"),
        ("rm_products", "sku"),
        ("rm_customers", "customer_id"),
        ("rm_sagas", "order_id"),
        ("rm_daily_sales_orders", "order_id"),
    ] {
        let rows: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select coalesce(jsonb_agg(to_jsonb(t) order by t.{key}), '[]') from {schema}.{table} t"
        )))
        .fetch_one(&env.pg)
        .await?;
        all.insert(table.to_owned(), rows);
    }
    Ok(Value::Object(all))
}

/// Places orders, cancels some, restocks, deposits and appends saga
/// events until `stop` is set; returns how many orders it placed.
async fn generate_load(
    side: &ReadSide,
    store: &EventStore,
    stop: &std::sync::atomic::AtomicBool,
) -> usize {
    let customer = side.customer(1_000_000).await;
    let mut placed = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) || placed < 20 {
        let order = side.order(&customer, "load", 1).await;
        let order_id = order["order_id"].as_str().unwrap().to_owned();
        placed += 1;
        if placed % 3 == 0 {
            side.command(
                &format!("/v1/orders/{order_id}/cancel"),
                json!({"reason": "load"}),
            )
            .await;
        }
        if placed % 4 == 0 {
            side.command("/v1/products/load/restock", json!({"quantity": 1}))
                .await;
            side.command(
                &format!("/v1/customers/{customer}/deposits"),
                json!({"amount_cents": 5}),
            )
            .await;
        }
        let id = Uuid::parse_str(&order_id).unwrap();
        append_saga(store, id, &saga_until_charge_fails(id)[..2 + placed % 5]).await;
    }
    placed
}

#[tokio::test]
async fn a_rebuild_under_load_ends_identical_to_a_projection_that_never_stopped() {
    let side = ReadSide::start().await;
    // A second, independent projection of the same log, never rebuilt.
    let reference = services::projector_with(&side.env, |config| {
        config.read_model_schema = "reference".into();
        config.consumer_group = Some(format!("{}reference", side.env.topic_prefix));
    })
    .await;
    let store = side.env.event_store().await;
    side.product("load", 1_000_000).await;

    let stop = std::sync::atomic::AtomicBool::new(false);
    let load = generate_load(&side, &store, &stop);
    let rebuild = async {
        // Let some history build up, then rebuild every projection while
        // the load goes on.
        side.visible("/v1/products/load?min_version=1").await;
        eventually(CATCH_UP, "some orders placed", || async {
            let orders = side.query_json("/v1/orders?limit=30").await;
            anyhow::ensure!(orders["items"].as_array().unwrap().len() >= 30);
            Ok(())
        })
        .await;
        for name in ["orders", "products", "customers", "sagas", "daily_sales"] {
            let response = side
                .client
                .post(format!(
                    "{}/v1/projections/{name}/rebuild",
                    side.projector.url
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        }
        let metrics_url = format!("{}/metrics", side.projector.url);
        eventually(CATCH_UP, "all five rebuilds swapped in", || async {
            let metrics = side.client.get(&metrics_url).send().await?.text().await?;
            let swapped = metrics
                .lines()
                .filter(|l| l.starts_with("orders_projector_rebuilds_total{") && l.ends_with(" 1"))
                .count();
            anyhow::ensure!(swapped == 5, "{swapped} of 5 swapped");
            Ok(())
        })
        .await;
        // Keep placing orders for a while after the swap, too.
        eventually(CATCH_UP, "more orders after the swap", || async {
            let orders = side.query_json("/v1/orders?limit=200").await;
            anyhow::ensure!(orders["items"].as_array().unwrap().len() >= 60);
            Ok(())
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (placed, ()) = tokio::join!(load, rebuild);

    let projections = side.projections().await;
    assert!(projections.iter().all(|p| p["status"] == "live"));
    eventually(CATCH_UP, "both projections agree", || async {
        let (rebuilt, never_stopped) = (
            read_models(&side.env, "public").await?,
            read_models(&side.env, "reference").await?,
        );
        anyhow::ensure!(
            rebuilt["rm_orders"].as_array().unwrap().len() == placed
                && rebuilt["rm_sagas"].as_array().unwrap().len() == placed,
            "not every order and saga projected yet"
        );
        anyhow::ensure!(rebuilt == never_stopped, "the read models differ");
        Ok(())
    })
    .await;
    drop(reference);
}

#[tokio::test]
async fn two_projector_instances_together_build_what_one_builds() {
    let side = ReadSide::start().await;
    let second = services::projector(&side.env).await;
    let single = services::projector_with(&side.env, |config| {
        config.read_model_schema = "single".into();
        config.consumer_group = Some(format!("{}single", side.env.topic_prefix));
    })
    .await;
    let store = side.env.event_store().await;
    side.product("load", 1_000_000).await;
    let stop = std::sync::atomic::AtomicBool::new(true);
    let placed = generate_load(&side, &store, &stop).await;

    eventually(CATCH_UP, "both projections agree", || async {
        let (shared, single) = (
            read_models(&side.env, "public").await?,
            read_models(&side.env, "single").await?,
        );
        anyhow::ensure!(
            shared["rm_orders"].as_array().unwrap().len() == placed
                && shared["rm_sagas"].as_array().unwrap().len() == placed,
            "not every order and saga projected yet"
        );
        anyhow::ensure!(shared == single, "the read models differ");
        Ok(())
    })
    .await;

    // Nothing was applied twice: each projection counted exactly the
    // events of its streams.
    for (name, prefix) in [
        ("orders", "order-"),
        ("products", "product-"),
        ("customers", "customer-"),
        ("sagas", "saga-"),
        ("daily_sales", "order-"),
    ] {
        let stored: i64 =
            sqlx::query_scalar("select count(*) from events where stream_id like $1 || '%'")
                .bind(prefix)
                .fetch_one(&side.env.pg)
                .await
                .unwrap();
        let applied: i64 =
            sqlx::query_scalar("select events_applied from projections where name = $1")
                .bind(name)
                .fetch_one(&side.env.pg)
                .await
                .unwrap();
        assert_eq!(applied, stored, "{name}");
    }
    drop((second, single));
}

#[tokio::test]
async fn projections_report_their_status_and_the_rebuild_command_rebuilds() {
    let side = ReadSide::start().await;
    side.product("desk", 3).await;
    side.command("/v1/products/desk/restock", json!({"quantity": 2}))
        .await;
    side.visible("/v1/products/desk?min_version=2").await;

    let projections = eventually(CATCH_UP, "no lag", || async {
        let projections = side.projections().await;
        let products = projections
            .iter()
            .find(|p| p["name"] == "products")
            .unwrap();
        anyhow::ensure!(products["lag_events"] == 0, "{products}");
        Ok(projections)
    })
    .await;
    let names: Vec<&str> = projections
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["orders", "products", "customers", "sagas", "daily_sales"]
    );
    let products = projections
        .iter()
        .find(|p| p["name"] == "products")
        .unwrap();
    assert_eq!(products["status"], "live");
    assert_eq!(products["events_applied"], 2);
    assert!(products["position"].as_i64().unwrap() > 0);

    let response = side
        .client
        .post(format!(
            "{}/v1/projections/nope/rebuild",
            side.projector.url
        ))
        .send()
        .await
        .unwrap();
    assert_problem(response, StatusCode::NOT_FOUND, "not-found", None).await;

    // The command line's rebuild, against the running projector's
    // database: same rows, and the count it reports.
    let config = projector::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        read_model_schema: "public".into(),
        consumer_group: None,
        batch_size: 500,
        fetch_wait_ms: 100,
        common: side.env.common_config_as(service_kit::db::PROJECTOR),
    };
    projector::cli::rebuild(config, Some(projector::views::Projection::Products))
        .await
        .unwrap();
    let product = side.query_json("/v1/products/desk").await;
    assert_eq!(product["on_hand"], 5);
    assert_eq!(product["version"], 2);
    let products = side
        .projections()
        .await
        .into_iter()
        .find(|p| p["name"] == "products")
        .unwrap();
    assert_eq!(products["events_applied"], 2);

    let openapi = side.query_json("/openapi.json").await;
    for path in [
        "/v1/orders",
        "/v1/orders/{id}",
        "/v1/products/{sku}",
        "/v1/customers/{id}",
        "/v1/sagas",
        "/v1/sagas/{order_id}",
        "/v1/reports/daily-sales",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} documented");
    }
}
