//! The saga's steps on command-service's internal API: atomic multi-product
//! reservation, contention, business failures, and idempotency per order
//! and step.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::write_api::{Api, address, assert_problem};

async fn order(api: &Api, customer: &str, lines: Value, country: &str) -> String {
    let placed: Value = api
        .post(
            "/v1/orders",
            json!({"customer_id": customer, "lines": lines, "shipping_address": address(country)}),
        )
        .await
        .json()
        .await
        .unwrap();
    placed["order_id"].as_str().unwrap().to_owned()
}

async fn step(api: &Api, order_id: &str, step: &str) -> (StatusCode, Value) {
    let response = api
        .client
        .post(api.url(&format!("/internal/v1/orders/{order_id}/{step}")))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn events_of(api: &Api, stream: &str, event_type: &str) -> usize {
    let response = api
        .get(&format!("/v1/streams/{stream}/events?limit=1000"))
        .await;
    let body: Value = response.json().await.unwrap();
    body["events"].as_array().map_or(0, |events| {
        events.iter().filter(|e| e["type"] == event_type).count()
    })
}

#[tokio::test]
async fn fifty_reservations_against_a_stock_of_ten_let_exactly_ten_through() {
    let api = Api::start().await;
    api.product("hot", 100, 10).await;
    let customer = api.customer(0).await;
    let mut orders = Vec::new();
    for _ in 0..50 {
        orders.push(
            order(
                &api,
                &customer,
                json!([{"sku": "hot", "quantity": 1}]),
                "GB",
            )
            .await,
        );
    }
    let outcomes =
        futures::future::join_all(orders.iter().map(|o| step(&api, o, "reserve-inventory"))).await;
    let succeeded = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .count();
    let short = outcomes
        .iter()
        .filter(|(s, b)| {
            *s == StatusCode::UNPROCESSABLE_ENTITY && b["type"] == "/problems/insufficient-stock"
        })
        .count();
    assert_eq!((succeeded, short), (10, 40), "{outcomes:?}");
    assert_eq!(
        events_of(&api, "product-hot", "InventoryReserved").await,
        10
    );
}

#[tokio::test]
async fn a_reservation_is_all_or_nothing_across_products() {
    let api = Api::start().await;
    api.product("plenty", 100, 5).await;
    api.product("none", 100, 0).await;
    let customer = api.customer(0).await;
    let order_id = order(
        &api,
        &customer,
        json!([{"sku": "plenty", "quantity": 1}, {"sku": "none", "quantity": 1}]),
        "GB",
    )
    .await;
    let (status, body) = step(&api, &order_id, "reserve-inventory").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["type"], "/problems/insufficient-stock");
    assert_eq!(
        events_of(&api, "product-plenty", "InventoryReserved").await,
        0,
        "nothing reserved"
    );
}

#[tokio::test]
async fn every_step_repeated_returns_its_first_outcome_and_changes_nothing() {
    let api = Api::start().await;
    api.product("mug", 1200, 1).await;
    let customer = api.customer(5000).await;
    let order_id = order(
        &api,
        &customer,
        json!([{"sku": "mug", "quantity": 1}]),
        "GB",
    )
    .await;

    for name in [
        "reserve-inventory",
        "charge-payment",
        "create-shipment",
        "confirm",
    ] {
        let first = step(&api, &order_id, name).await;
        assert_eq!(first.0, StatusCode::OK, "{name}: {first:?}");
        assert_eq!(step(&api, &order_id, name).await, first, "{name} repeated");
    }
    assert_eq!(events_of(&api, "product-mug", "InventoryReserved").await, 1);
    assert_eq!(
        events_of(&api, &format!("customer-{customer}"), "PaymentCharged").await,
        1
    );
    let state: Value = api
        .get(&format!("/v1/orders/{order_id}/state"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state["status"], "confirmed");
    assert!(
        state["tracking_number"]
            .as_str()
            .unwrap()
            .starts_with("TRK-")
    );

    // Compensations, each once.
    for name in ["cancel-shipment", "refund-payment", "release-inventory"] {
        let first = step(&api, &order_id, name).await;
        assert_eq!(first.0, StatusCode::OK, "{name}: {first:?}");
        assert_eq!(first.1["appended"], 1, "{name}");
        assert_eq!(step(&api, &order_id, name).await, first, "{name} repeated");
    }
    let customer_events: Value = api
        .get(&format!("/v1/streams/customer-{customer}/events"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        customer_events["events"].as_array().unwrap().len(),
        4,
        "registered, deposit, charge, refund"
    );
}

#[tokio::test]
async fn a_failed_step_keeps_failing_with_its_first_outcome() {
    let api = Api::start().await;
    api.product("mug", 1200, 0).await;
    let customer = api.customer(0).await;
    let order_id = order(
        &api,
        &customer,
        json!([{"sku": "mug", "quantity": 1}]),
        "GB",
    )
    .await;
    let first = step(&api, &order_id, "reserve-inventory").await;
    assert_eq!(first.0, StatusCode::UNPROCESSABLE_ENTITY);
    api.post("/v1/products/mug/restock", json!({"quantity": 5}))
        .await;
    assert_eq!(step(&api, &order_id, "reserve-inventory").await, first);
}

#[tokio::test]
async fn payment_and_shipping_failures_are_business_problems() {
    let api = Api::start().await;
    api.product("mug", 1200, 5).await;
    let poor = api.customer(100).await;
    let order_id = order(&api, &poor, json!([{"sku": "mug", "quantity": 1}]), "GB").await;
    let (status, body) = step(&api, &order_id, "charge-payment").await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("/problems/payment-declined")
        )
    );

    let rich = api.customer(100_000).await;
    let far = order(&api, &rich, json!([{"sku": "mug", "quantity": 1}]), "BR").await;
    let (status, body) = step(&api, &far, "create-shipment").await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("/problems/shipping-unavailable")
        )
    );

    let rejected = api
        .client
        .post(api.url(&format!("/internal/v1/orders/{far}/reject")))
        .json(&json!({"reason": "shipping_unavailable"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), StatusCode::OK);
    let state: Value = api
        .get(&format!("/v1/orders/{far}/state"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (state["status"].as_str(), state["rejection_reason"].as_str()),
        (Some("rejected"), Some("shipping_unavailable"))
    );

    let unknown_reason = api
        .client
        .post(api.url(&format!("/internal/v1/orders/{order_id}/reject")))
        .json(&json!({"reason": "bored"}))
        .send()
        .await
        .unwrap();
    assert_problem(
        unknown_reason,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        Some("reason"),
    )
    .await;
    let missing = step(&api, &uuid::Uuid::new_v4().to_string(), "charge-payment").await;
    assert_eq!(missing.0, StatusCode::NOT_FOUND);
}

/// A step as the orchestrator calls it: recording its success in the
/// saga's stream at `saga_version`.
async fn recording_step(
    api: &Api,
    order_id: &str,
    step: &str,
    saga_version: u64,
) -> reqwest::Response {
    api.client
        .post(api.url(&format!("/internal/v1/orders/{order_id}/{step}")))
        .header("x-saga-version", saga_version)
        .header("x-saga-attempt", 1)
        .send()
        .await
        .unwrap()
}

async fn saga_events(api: &Api, order_id: &str) -> Vec<(String, Value)> {
    let body: Value = api
        .get(&format!("/v1/streams/saga-{order_id}/events?limit=1000"))
        .await
        .json()
        .await
        .unwrap();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"].clone()))
        .collect()
}

#[tokio::test]
async fn a_step_that_records_in_the_saga_stream_takes_effect_once_per_saga_version() {
    let api = Api::start().await;
    api.product("lamp", 2_000, 3).await;
    let customer = api.customer(5_000).await;
    let order_id = order(
        &api,
        &customer,
        json!([{"sku": "lamp", "quantity": 1}]),
        "FR",
    )
    .await;

    // Each success is recorded in the saga's stream with the effect.
    for (version, name) in [
        (0, "reserve-inventory"),
        (1, "charge-payment"),
        (2, "create-shipment"),
        (3, "confirm"),
    ] {
        let response = recording_step(&api, &order_id, name, version).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        // The same call again finds the saga moved: nothing is written.
        let again = recording_step(&api, &order_id, name, version).await;
        assert!(again.headers().get("retry-after").is_none(), "{name}");
        assert_problem(again, StatusCode::CONFLICT, "saga-moved", None).await;
    }
    assert_eq!(
        events_of(&api, "product-lamp", "InventoryReserved").await,
        1
    );
    let charges = events_of(&api, &format!("customer-{customer}"), "PaymentCharged").await;
    assert_eq!(charges, 1);
    let recorded = saga_events(&api, &order_id).await;
    let types: Vec<&str> = recorded.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "StepSucceeded",
            "StepSucceeded",
            "StepSucceeded",
            "SagaCompleted"
        ]
    );
    assert_eq!(recorded[0].1["step"], "reserve_inventory");
    assert_eq!(recorded[0].1["attempt"], 1);
    let tracking = recorded[2].1["detail"].as_str().unwrap();
    assert!(tracking.starts_with("TRK-"), "{tracking}");
    assert_eq!(recorded[3].1["tracking_number"], tracking);

    // A compensation decided on a stale version is not carried out.
    assert_problem(
        recording_step(&api, &order_id, "refund-payment", 3).await,
        StatusCode::CONFLICT,
        "saga-moved",
        None,
    )
    .await;
    assert_eq!(
        events_of(&api, &format!("customer-{customer}"), "PaymentRefunded").await,
        0
    );
    let refunded = recording_step(&api, &order_id, "refund-payment", 4).await;
    assert_eq!(refunded.status(), StatusCode::OK);
    assert_eq!(
        events_of(&api, &format!("customer-{customer}"), "PaymentRefunded").await,
        1
    );
    let last = saga_events(&api, &order_id).await.pop().unwrap();
    assert_eq!(last.0, "StepCompensated");
    assert_eq!(last.1["step"], "charge_payment");

    // A business refusal writes nothing, in the saga's stream neither.
    let other = order(
        &api,
        &customer,
        json!([{"sku": "lamp", "quantity": 5}]),
        "FR",
    )
    .await;
    assert_problem(
        recording_step(&api, &other, "reserve-inventory", 0).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient-stock",
        None,
    )
    .await;
    let saga = api.get(&format!("/v1/streams/saga-{other}/events")).await;
    assert_eq!(saga.status(), StatusCode::NOT_FOUND, "no saga stream");

    // A step that records nothing keeps its idempotency key, with the
    // header or without: its repeat answers as the first call did.
    let reject = || async {
        let response = api
            .client
            .post(api.url(&format!("/internal/v1/orders/{other}/reject")))
            .header("x-saga-version", 0)
            .json(&json!({"reason": "insufficient_stock"}))
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    let first = reject().await;
    assert_eq!(first.0, StatusCode::OK, "{first:?}");
    assert_eq!(first.1["appended"], 1);
    assert_eq!(reject().await, first);

    let bad = api
        .client
        .post(api.url(&format!("/internal/v1/orders/{other}/charge-payment")))
        .header("x-saga-version", "seven")
        .send()
        .await
        .unwrap();
    assert_problem(
        bad,
        StatusCode::BAD_REQUEST,
        "validation",
        Some("x-saga-version"),
    )
    .await;
}

/// A forward step as the orchestrator calls it when the next step is to
/// start with its success.
async fn recording_step_then(
    api: &Api,
    order_id: &str,
    step: &str,
    saga_version: u64,
    next: &str,
    next_attempt: &str,
) -> reqwest::Response {
    api.client
        .post(api.url(&format!("/internal/v1/orders/{order_id}/{step}")))
        .header("x-saga-version", saga_version)
        .header("x-saga-attempt", 1)
        .header("x-saga-next-step", next)
        .header("x-saga-next-attempt", next_attempt)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_forward_step_records_the_next_steps_start_with_its_success() {
    let api = Api::start().await;
    api.product("kettle", 3_000, 5).await;
    let customer = api.customer(10_000).await;
    let order_id = order(
        &api,
        &customer,
        json!([{"sku": "kettle", "quantity": 1}]),
        "DE",
    )
    .await;

    // Naming a step that does not follow this one is refused, and writes
    // nothing.
    for (step, next, attempt, field) in [
        (
            "reserve-inventory",
            "create_shipment",
            "1",
            "x-saga-next-step",
        ),
        ("reserve-inventory", "teleport", "1", "x-saga-next-step"),
        (
            "reserve-inventory",
            "charge_payment",
            "0",
            "x-saga-next-attempt",
        ),
        ("create-shipment", "charge_payment", "1", "x-saga-next-step"),
        (
            "release-inventory",
            "charge_payment",
            "1",
            "x-saga-next-step",
        ),
    ] {
        let refused = recording_step_then(&api, &order_id, step, 0, next, attempt).await;
        assert_problem(refused, StatusCode::BAD_REQUEST, "validation", Some(field)).await;
    }
    let saga = api
        .get(&format!("/v1/streams/saga-{order_id}/events"))
        .await;
    assert_eq!(saga.status(), StatusCode::NOT_FOUND, "nothing recorded");
    assert_eq!(
        events_of(&api, "product-kettle", "InventoryReserved").await,
        0
    );

    let reserved = recording_step_then(
        &api,
        &order_id,
        "reserve-inventory",
        0,
        "charge_payment",
        "1",
    )
    .await;
    assert_eq!(reserved.status(), StatusCode::OK);
    let charged =
        recording_step_then(&api, &order_id, "charge-payment", 2, "create_shipment", "3").await;
    assert_eq!(charged.status(), StatusCode::OK);
    // The start it recorded moved the saga: the call made at the version
    // before it is stale.
    assert_problem(
        recording_step(&api, &order_id, "create-shipment", 3).await,
        StatusCode::CONFLICT,
        "saga-moved",
        None,
    )
    .await;
    assert_eq!(
        recording_step(&api, &order_id, "create-shipment", 4)
            .await
            .status(),
        StatusCode::OK
    );

    let recorded = saga_events(&api, &order_id).await;
    let summary: Vec<(&str, &Value, &Value)> = recorded
        .iter()
        .map(|(t, data)| (t.as_str(), &data["step"], &data["attempt"]))
        .collect();
    assert_eq!(
        summary,
        [
            ("StepSucceeded", &json!("reserve_inventory"), &json!(1)),
            ("StepStarted", &json!("charge_payment"), &json!(1)),
            ("StepSucceeded", &json!("charge_payment"), &json!(1)),
            ("StepStarted", &json!("create_shipment"), &json!(3)),
            ("StepSucceeded", &json!("create_shipment"), &json!(1)),
        ]
    );
    assert_eq!(
        events_of(&api, "product-kettle", "InventoryReserved").await,
        1
    );
    let charges = events_of(&api, &format!("customer-{customer}"), "PaymentCharged").await;
    assert_eq!(charges, 1);
}

/// A replica decides on the state it last appended, kept in memory; what
/// another replica appended since must never be overruled by it.
#[tokio::test]
async fn a_replica_never_decides_on_a_state_another_replica_has_changed() {
    let api = Api::start().await;
    let other = harness::services::command_service(&api.env).await;
    let post_other = |path: &str, body: Value| {
        api.client
            .post(format!("{}{path}", other.url))
            .json(&body)
            .send()
    };
    api.product("shared", 100, 1).await;
    let customer = api.customer(0).await;
    let order_id = order(
        &api,
        &customer,
        json!([{"sku": "shared", "quantity": 3}]),
        "GB",
    )
    .await;

    // The first replica last saw 1 in stock and a balance of 0; the other
    // restocks and takes a deposit.
    let restocked = post_other("/v1/products/shared/restock", json!({"quantity": 4}))
        .await
        .unwrap();
    assert_eq!(restocked.status(), StatusCode::OK);
    let deposited = post_other(
        &format!("/v1/customers/{customer}/deposits"),
        json!({"amount_cents": 1_000}),
    )
    .await
    .unwrap();
    assert_eq!(deposited.status(), StatusCode::OK);

    // Refusals decided on what the first replica last saw would be
    // insufficient stock and a declined payment.
    let (status, body) = step(&api, &order_id, "reserve-inventory").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = step(&api, &order_id, "charge-payment").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Appends decided on a stale state conflict and are decided again:
    // every restock counts, on whichever replica.
    let restocked = post_other("/v1/products/shared/restock", json!({"quantity": 1}))
        .await
        .unwrap();
    assert_eq!(restocked.status(), StatusCode::OK);
    let restocked: Value = api
        .post("/v1/products/shared/restock", json!({"quantity": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(restocked["on_hand"], 7, "{restocked}");
    assert_eq!(restocked["reserved"], 3, "{restocked}");
    assert_eq!(restocked["version"], 5, "{restocked}");
    // 1,000 deposited, 300 charged, 1 more deposited here.
    let deposited: Value = api
        .post(
            &format!("/v1/customers/{customer}/deposits"),
            json!({"amount_cents": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deposited["balance_cents"], 701, "{deposited}");
}
