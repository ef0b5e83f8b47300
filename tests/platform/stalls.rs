//! A consumer or relay that stops making progress says so (contract:
//! health and `stalled`): `GET /v1/projections` shows `stalled`,
//! `/health/ready` answers 503 naming it, a gauge in `/metrics` shows it,
//! and the process keeps serving everything else; a relay whose broker
//! hangs gets a new producer and recovers once the broker answers.

use std::time::Duration;

use harness::proxy::BlackHole;
use harness::services;
use harness::{TestEnv, eventually};
use serde_json::{Value, json};

const STALL_AFTER_MS: u64 = 2_000;
const DEADLINE: Duration = Duration::from_secs(45);

async fn get(url: &str) -> anyhow::Result<(u16, String)> {
    let response = harness::auth::admin().get(url).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

async fn post(url: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let response = harness::auth::admin().post(url).json(&body).send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn register_customer(command_url: &str) {
    let url = format!("{command_url}/v1/customers");
    eventually(DEADLINE, "registering a customer", || async {
        let (status, body) = post(&url, json!({"name": "Ada", "email": "ada@example.com"})).await?;
        anyhow::ensure!(status == 201, "{status}: {body}");
        Ok(())
    })
    .await;
}

fn projection<'a>(all: &'a Value, name: &str) -> &'a Value {
    all.as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no projection {name} in {all}"))
}

#[tokio::test]
async fn a_projection_that_gets_nothing_from_the_broker_is_reported_stalled() {
    let env = TestEnv::new().await;
    let command = services::command_service(&env).await;
    // This projector reads a topic nobody publishes to: from where it
    // stands, a broker that hands it nothing while the store moves on.
    let silent_prefix = format!("{}silent.", env.topic_prefix);
    let projector = services::projector_with(&env, |config| {
        config.common.kafka_topic_prefix = silent_prefix.clone();
        config.common.stall_after_ms = STALL_AFTER_MS;
    })
    .await;
    let ready_url = format!("{}/health/ready", projector.url);
    eventually(DEADLINE, "the projector is ready at first", || async {
        let (status, body) = get(&ready_url).await?;
        anyhow::ensure!(status == 200, "{status}: {body}");
        Ok(())
    })
    .await;

    register_customer(&command.url).await;

    let projections_url = format!("{}/v1/projections", projector.url);
    let all: Value = eventually(DEADLINE, "customers is reported stalled", || async {
        let (status, body) = get(&projections_url).await?;
        anyhow::ensure!(status == 200, "{status}: {body}");
        let all: Value = serde_json::from_str(&body)?;
        anyhow::ensure!(
            projection(&all, "customers")["status"] == "stalled",
            "{all}"
        );
        Ok(all)
    })
    .await;
    assert!(projection(&all, "customers")["lag_events"].as_i64() >= Some(1));
    assert_eq!(
        projection(&all, "orders")["status"],
        "live",
        "a projection with nothing to do is not stalled: {all}"
    );

    let (status, body) = get(&ready_url).await.unwrap();
    assert_eq!(status, 503, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["down"], json!(["projection:customers"]), "{ready}");
    assert_eq!(ready["checks"]["kafka"], "up", "{ready}");
    let waiting_for = ready["stalled"][0]["waiting_for"].as_str().unwrap_or("");
    assert!(
        waiting_for.contains(&format!("{silent_prefix}events")),
        "says what it waits for: {ready}"
    );

    let (_, metrics) = get(&format!("{}/metrics", projector.url)).await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line == "orders_worker_stalled{worker=\"projection:customers\"} 1"),
        "{metrics}"
    );

    // The operator's actions still work: a rebuild replays the event store
    // and the projection is caught up again.
    let (status, body) = post(
        &format!("{}/v1/projections/customers/rebuild", projector.url),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{body}");
    eventually(
        DEADLINE,
        "the rebuilt projection is live and ready",
        || async {
            let (_, body) = get(&projections_url).await?;
            let all: Value = serde_json::from_str(&body)?;
            let customers = projection(&all, "customers");
            anyhow::ensure!(
                customers["status"] == "live" && customers["lag_events"] == 0,
                "{all}"
            );
            let (status, body) = get(&ready_url).await?;
            anyhow::ensure!(status == 200, "{status}: {body}");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_relay_whose_broker_hangs_is_reported_stalled_and_recovers_with_a_new_producer() {
    let env = TestEnv::new().await;
    // Connections through the black hole are accepted and never answered,
    // until it opens.
    let hole = BlackHole::start(&env.kafka_brokers).await;
    let command = services::command_service_with(&env, |config| {
        config.common.kafka_brokers = hole.addr.clone();
        config.common.stall_after_ms = STALL_AFTER_MS;
    })
    .await;

    // The write API takes writes without the broker: the store is the
    // record, the relay publishes later.
    register_customer(&command.url).await;

    let ready_url = format!("{}/health/ready", command.url);
    let ready: Value = eventually(DEADLINE, "the relay is reported stalled", || async {
        let (status, body) = get(&ready_url).await?;
        let ready: Value = serde_json::from_str(&body)?;
        anyhow::ensure!(
            status == 503
                && ready["down"]
                    .as_array()
                    .is_some_and(|down| down.contains(&json!("relay"))),
            "{status}: {ready}"
        );
        Ok(ready)
    })
    .await;
    let relay = ready["stalled"]
        .as_array()
        .and_then(|all| all.iter().find(|w| w["name"] == "relay"))
        .unwrap_or_else(|| panic!("the relay is among the stalled: {ready}"));
    assert!(relay["behind"].as_u64() >= Some(1), "{ready}");

    // Still serving: reads of the store answer while the relay is stuck.
    let (status, _) = get(&format!("{}/health/live", command.url)).await.unwrap();
    assert_eq!(status, 200);

    // The broker answers again: a new producer (the stuck one never would
    // in this time) publishes what waited.
    hole.open();
    let metrics_url = format!("{}/metrics", command.url);
    eventually(
        DEADLINE,
        "the relay publishes and is not stalled",
        || async {
            let (_, metrics) = get(&metrics_url).await?;
            let has = |wanted: &str| metrics.lines().any(|line| line == wanted);
            anyhow::ensure!(
                has("orders_worker_stalled{worker=\"relay\"} 0"),
                "{metrics}"
            );
            let published = metrics
                .lines()
                .find_map(|line| line.strip_prefix("orders_relay_published_events_total "))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            anyhow::ensure!(published >= 1, "published {published}");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_orchestrator_whose_sagas_ended_is_caught_up_and_ready() {
    // The intake acts only on placements and cancellation requests, but
    // every order event it receives is progress: after an order's
    // confirmation (which it does not act on) it is not behind, so it is
    // never reported stalled for an order that simply ended.
    let env = TestEnv::new().await;
    let command = services::command_service(&env).await;
    let steps = command.internal_url.clone().expect("the step API");
    let orchestrator = services::saga_orchestrator(&env, &steps, |config| {
        config.common.stall_after_ms = STALL_AFTER_MS;
        config.poll_ms = 50;
    })
    .await;
    register_customer(&command.url).await;
    let (status, body) = post(
        &format!("{}/v1/products", command.url),
        json!({"sku": "kite", "name": "Kite", "price_cents": 100, "initial_stock": 5}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, customer) = post(
        &format!("{}/v1/customers", command.url),
        json!({"name": "Bo", "email": "bo@example.com"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{customer}");
    let customer_id = customer["customer_id"].as_str().unwrap();
    let (status, body) = post(
        &format!("{}/v1/customers/{customer_id}/deposits", command.url),
        json!({"amount_cents": 1_000}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, order) = post(
        &format!("{}/v1/orders", command.url),
        json!({"customer_id": customer_id, "lines": [{"sku": "kite", "quantity": 1}],
               "shipping_address": crate::write_api::address("GB")}),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{order}");
    let state_url = format!(
        "{}/v1/orders/{}/state",
        command.url,
        order["order_id"].as_str().unwrap()
    );
    eventually(DEADLINE, "the order is confirmed", || async {
        let (status, body) = get(&state_url).await?;
        anyhow::ensure!(status == 200 && body.contains("\"confirmed\""), "{body}");
        Ok(())
    })
    .await;

    let metrics_url = format!("{}/metrics", orchestrator.url);
    let ready_url = format!("{}/health/ready", orchestrator.url);
    eventually(DEADLINE, "the intake is caught up and ready", || async {
        let (_, metrics) = get(&metrics_url).await?;
        anyhow::ensure!(
            metrics
                .lines()
                .any(|line| line == "orders_worker_behind{worker=\"saga-intake\"} 0"),
            "{}",
            metrics
                .lines()
                .filter(|line| line.starts_with("orders_worker_"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let (status, body) = get(&ready_url).await?;
        anyhow::ensure!(status == 200, "{status}: {body}");
        Ok(())
    })
    .await;
}
