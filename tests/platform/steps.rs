//! The saga's steps on command-service's internal listener: each action
//! takes effect only at the saga's version it names and only in its turn
//! (`domain::saga::SagaState::turn`), recording its outcome in the saga's
//! stream with its effect; atomic multi-product reservation, contention and
//! business failures; and a cancelled confirmed order still refunded and
//! released by the real orchestrator.
//!
//! Each test sets the saga's stream up as the orchestrator would have
//! written it, appending `SagaEvent`s to `saga-<order id>` through the event
//! store, then calls the steps as the orchestrator does.

use std::time::Duration;

use domain::customer::Customer;
use domain::product::Product;
use domain::saga::{SagaEvent, SagaStep};
use domain::{Aggregate, Event};
use event_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::write_api::{Api, address, assert_problem, lost_races};
use SagaStep::{ChargePayment as Charge, CreateShipment as Ship, ReserveInventory as Reserve};

/// The command-service with the event store under it.
struct Steps {
    api: Api,
    store: EventStore,
}

impl Steps {
    async fn start() -> Self {
        let api = Api::start().await;
        let store = api.env.event_store().await;
        Self { api, store }
    }

    /// Places an order (its saga not yet started); returns its id.
    async fn order(&self, customer: &str, lines: Value, country: &str) -> String {
        let response = self
            .api
            .post(
                "/v1/orders",
                json!({"customer_id": customer, "lines": lines, "shipping_address": address(country)}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let placed: Value = response.json().await.unwrap();
        placed["order_id"].as_str().unwrap().to_owned()
    }

    /// Appends `events` to the order's saga stream, as the orchestrator
    /// records them; returns the stream's version after them.
    async fn saga(&self, order_id: &str, events: &[SagaEvent]) -> u64 {
        let stream = format!("saga-{order_id}");
        let version = self.saga_version(order_id).await;
        let events = events
            .iter()
            .map(|event| NewEvent::new(event.event_type(), event.data(), Metadata::default()))
            .collect();
        self.store
            .append(&[StreamAppend::new(
                stream,
                ExpectedVersion::at(version),
                events,
            )])
            .await
            .unwrap()
            .last()
            .map_or(version, |appended| appended.version)
    }

    /// A started saga whose first step is running: version 2.
    async fn started(&self, order_id: &str) -> u64 {
        self.saga(
            order_id,
            &[
                SagaEvent::SagaStarted {
                    order_id: order_id.parse().unwrap(),
                    customer_id: Uuid::nil(),
                    total_cents: 0,
                },
                SagaEvent::StepStarted {
                    step: Reserve,
                    attempt: 1,
                },
            ],
        )
        .await
    }

    /// An order of one `sku` for a new customer with `balance`, whose
    /// saga started and reserved it, recording the charge's start as the
    /// orchestrator asks: returns the customer, the order and the saga's
    /// version before the reservation (the charge runs at two past it).
    async fn charging(&self, sku: &str, balance: i64, country: &str) -> (String, String, u64) {
        let customer = self.api.customer(balance).await;
        let order_id = self.order(&customer, one(sku), country).await;
        let version = self.started(&order_id).await;
        self.reserved_then_charging(&order_id, version).await;
        (customer, order_id, version)
    }

    /// Reserves the order's stock at `version`, recording the charge's
    /// start as the orchestrator asks; the charge then runs at two past it.
    async fn reserved_then_charging(&self, order_id: &str, version: u64) {
        let reserved = self
            .step_then(
                order_id,
                "reserve-inventory",
                version,
                "charge_payment",
                "1",
            )
            .await;
        assert_eq!(reserved.status(), StatusCode::OK);
    }

    async fn saga_version(&self, order_id: &str) -> u64 {
        self.saga_events(order_id).await.len().try_into().unwrap()
    }

    async fn saga_events(&self, order_id: &str) -> Vec<(String, Value)> {
        self.stream(&format!("saga-{order_id}")).await
    }

    async fn stream(&self, stream: &str) -> Vec<(String, Value)> {
        self.store
            .read_stream(stream, 1, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.event_type, e.data))
            .collect()
    }

    async fn count(&self, stream: &str, event_type: &str) -> usize {
        let events = self.stream(stream).await;
        events.iter().filter(|(t, _)| t == event_type).count()
    }

    /// An aggregate's state, folded from the event store.
    async fn fold<A: Aggregate>(&self, stream: &str) -> A::State {
        self.stream(stream)
            .await
            .iter()
            .map(|(kind, data)| A::Event::decode(kind, data).unwrap())
            .fold(A::State::default(), |state, event| A::evolve(state, &event))
    }

    /// A step call to the internal listener, made at `saga_version`.
    fn call(&self, order_id: &str, step: &str, saga_version: u64) -> RequestBuilder {
        self.internal(order_id, step)
            .header("x-saga-version", saga_version)
            .header("x-saga-attempt", 1)
    }

    /// A step request without the saga's headers, with a `service`
    /// token as the orchestrator's.
    fn internal(&self, order_id: &str, step: &str) -> RequestBuilder {
        self.api
            .client
            .post(
                self.api
                    .internal_url(&format!("/internal/v1/orders/{order_id}/{step}")),
            )
            .bearer_auth(harness::auth::token("service", "saga-orchestrator"))
    }

    async fn step(&self, order_id: &str, step: &str, saga_version: u64) -> Response {
        self.call(order_id, step, saga_version)
            .send()
            .await
            .unwrap()
    }

    /// A forward step whose success starts `next` too, as the orchestrator
    /// calls it.
    async fn step_then(
        &self,
        order_id: &str,
        step: &str,
        saga_version: u64,
        next: &str,
        next_attempt: &str,
    ) -> Response {
        self.call(order_id, step, saga_version)
            .header("x-saga-next-step", next)
            .header("x-saga-next-attempt", next_attempt)
            .send()
            .await
            .unwrap()
    }

    /// Runs an order's saga through all three steps and the confirmation
    /// as the orchestrator does; returns the saga's version at the end.
    async fn complete(&self, order_id: &str) -> u64 {
        let v = self.started(order_id).await;
        let reserved = self
            .step_then(order_id, "reserve-inventory", v, "charge_payment", "1")
            .await;
        assert_eq!(reserved.status(), StatusCode::OK);
        let charged = self
            .step_then(order_id, "charge-payment", v + 2, "create_shipment", "1")
            .await;
        assert_eq!(charged.status(), StatusCode::OK);
        let shipped = self.step(order_id, "create-shipment", v + 4).await;
        assert_eq!(shipped.status(), StatusCode::OK);
        let confirmed = self.step(order_id, "confirm", v + 5).await;
        assert_eq!(confirmed.status(), StatusCode::OK);
        v + 6
    }

    async fn order_state(&self, order_id: &str) -> Value {
        let response = self.api.get(&format!("/v1/orders/{order_id}/state")).await;
        response.json().await.unwrap()
    }
}

fn one(sku: &str) -> Value {
    json!([{"sku": sku, "quantity": 1}])
}

#[tokio::test]
async fn fifty_reservations_against_a_stock_of_ten_let_exactly_ten_through() {
    let t = Steps::start().await;
    t.api.product("hot", 100, 10).await;
    let customer = t.api.customer(0).await;
    let mut orders = Vec::new();
    for _ in 0..50 {
        let order_id = t.order(&customer, one("hot"), "GB").await;
        let version = t.started(&order_id).await;
        orders.push((order_id, version));
    }
    let outcomes = futures::future::join_all(orders.iter().map(|(order_id, version)| async {
        let response = t.step(order_id, "reserve-inventory", *version).await;
        let status = response.status();
        (status, response.json::<Value>().await.unwrap())
    }))
    .await;
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
    assert_eq!(t.count("product-hot", "InventoryReserved").await, 10);
}

#[tokio::test]
async fn a_reservation_is_all_or_nothing_across_products() {
    let t = Steps::start().await;
    t.api.product("plenty", 100, 5).await;
    t.api.product("none", 100, 0).await;
    let customer = t.api.customer(0).await;
    let order_id = t
        .order(
            &customer,
            json!([{"sku": "plenty", "quantity": 1}, {"sku": "none", "quantity": 1}]),
            "GB",
        )
        .await;
    let version = t.started(&order_id).await;
    let refused = t.step(&order_id, "reserve-inventory", version).await;
    assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient-stock",
        None,
    )
    .await;
    assert_eq!(
        t.count("product-plenty", "InventoryReserved").await,
        0,
        "nothing reserved"
    );
    assert_eq!(
        t.saga_version(&order_id).await,
        version,
        "a refusal records nothing; the orchestrator does"
    );
}

#[tokio::test]
async fn every_step_requires_the_sagas_version() {
    let t = Steps::start().await;
    t.api.product("mug", 1200, 5).await;
    let customer = t.api.customer(5_000).await;
    let order_id = t.order(&customer, one("mug"), "GB").await;
    t.started(&order_id).await;
    for step in [
        "reserve-inventory",
        "release-inventory",
        "charge-payment",
        "refund-payment",
        "create-shipment",
        "cancel-shipment",
        "confirm",
        "mark-cancelled",
    ] {
        let response = t.internal(&order_id, step).send().await.unwrap();
        assert_problem(
            response,
            StatusCode::BAD_REQUEST,
            "validation",
            Some("x-saga-version"),
        )
        .await;
    }
    let reject = t
        .internal(&order_id, "reject")
        .json(&json!({"reason": "insufficient_stock"}))
        .send()
        .await
        .unwrap();
    assert_problem(
        reject,
        StatusCode::BAD_REQUEST,
        "validation",
        Some("x-saga-version"),
    )
    .await;
    let malformed = t
        .internal(&order_id, "reserve-inventory")
        .header("x-saga-version", "seven")
        .send()
        .await
        .unwrap();
    assert_problem(
        malformed,
        StatusCode::BAD_REQUEST,
        "validation",
        Some("x-saga-version"),
    )
    .await;
    assert_eq!(t.count("product-mug", "InventoryReserved").await, 0);
    assert_eq!(t.saga_version(&order_id).await, 2, "nothing recorded");
}

#[tokio::test]
async fn a_stale_saga_version_is_saga_moved_and_writes_nothing() {
    let t = Steps::start().await;
    t.api.product("lamp", 2_000, 3).await;
    let customer = t.api.customer(5_000).await;
    let order_id = t.order(&customer, one("lamp"), "FR").await;
    let version = t.started(&order_id).await;
    for stale in [version - 1, version + 1] {
        let response = t.step(&order_id, "reserve-inventory", stale).await;
        assert!(response.headers().get("retry-after").is_none());
        assert_problem(response, StatusCode::CONFLICT, "saga-moved", None).await;
    }
    assert_eq!(t.count("product-lamp", "InventoryReserved").await, 0);
    assert_eq!(t.saga_version(&order_id).await, version);

    // At its version the step takes effect once; the same call again finds
    // the saga moved.
    let reserved = t.step(&order_id, "reserve-inventory", version).await;
    assert_eq!(reserved.status(), StatusCode::OK);
    let again = t.step(&order_id, "reserve-inventory", version).await;
    assert_problem(again, StatusCode::CONFLICT, "saga-moved", None).await;
    assert_eq!(t.count("product-lamp", "InventoryReserved").await, 1);
}

/// command-service keeps each saga as its last recorded outcome left it,
/// and decides the next call at that version without reading the stream.
/// When the stream has moved on meanwhile (a cancellation recorded by the
/// orchestrator), the outcome's append finds it: 409 `saga-moved`, and
/// nothing is charged.
#[tokio::test]
async fn a_saga_moved_on_after_its_last_step_is_saga_moved_and_charges_nothing() {
    let t = Steps::start().await;
    t.api.product("vase", 3_000, 3).await;
    let (customer, order_id, version) = t.charging("vase", 5_000, "FR").await;
    let charging = version + 2;
    assert_eq!(t.saga_version(&order_id).await, charging);
    let moved = t
        .saga(
            &order_id,
            &[SagaEvent::CancellationRequested {
                reason: "customer".into(),
            }],
        )
        .await;
    assert_eq!(moved, charging + 1);

    let charged = t.step(&order_id, "charge-payment", charging).await;
    assert_problem(charged, StatusCode::CONFLICT, "saga-moved", None).await;
    let customer_stream = format!("customer-{customer}");
    assert_eq!(t.count(&customer_stream, "PaymentCharged").await, 0);
    assert_eq!(t.saga_version(&order_id).await, moved, "nothing recorded");
}

#[tokio::test]
async fn a_saga_that_goes_straight_through_records_each_outcome_with_its_effect() {
    let t = Steps::start().await;
    t.api.product("lamp", 2_000, 3).await;
    let customer = t.api.customer(5_000).await;
    let order_id = t.order(&customer, one("lamp"), "FR").await;
    let end = t.complete(&order_id).await;

    assert_eq!(t.count("product-lamp", "InventoryReserved").await, 1);
    let customer_stream = format!("customer-{customer}");
    assert_eq!(t.count(&customer_stream, "PaymentCharged").await, 1);
    let recorded = t.saga_events(&order_id).await;
    let summary: Vec<(&str, &Value)> = recorded
        .iter()
        .map(|(kind, data)| (kind.as_str(), &data["step"]))
        .collect();
    assert_eq!(
        summary,
        [
            ("SagaStarted", &Value::Null),
            ("StepStarted", &json!("reserve_inventory")),
            ("StepSucceeded", &json!("reserve_inventory")),
            ("StepStarted", &json!("charge_payment")),
            ("StepSucceeded", &json!("charge_payment")),
            ("StepStarted", &json!("create_shipment")),
            ("StepSucceeded", &json!("create_shipment")),
            ("SagaCompleted", &Value::Null),
        ]
    );
    assert_eq!(end, 8);
    let tracking = recorded[6].1["detail"].as_str().unwrap();
    assert!(tracking.starts_with("TRK-"), "{tracking}");
    assert_eq!(recorded[7].1["tracking_number"], tracking);
    let state = t.order_state(&order_id).await;
    assert_eq!(state["status"], "confirmed");
    assert_eq!(state["tracking_number"], tracking);
}

/// The attack of issue 22: undoing a step of an order whose saga
/// completed, with no cancellation asked for.
#[tokio::test]
async fn a_refund_or_release_of_a_completed_saga_is_a_conflict_and_changes_nothing() {
    let t = Steps::start().await;
    t.api.product("lamp", 2_000, 3).await;
    let customer = t.api.customer(5_000).await;
    let order_id = t.order(&customer, one("lamp"), "FR").await;
    let end = t.complete(&order_id).await;
    let customer_stream = format!("customer-{customer}");
    let balance = t.fold::<Customer>(&customer_stream).await.balance_cents;
    let stock = t.fold::<Product>("product-lamp").await;
    assert_eq!((balance, stock.reserved), (3_000, 1));

    for step in ["refund-payment", "release-inventory", "cancel-shipment"] {
        let refused = t.step(&order_id, step, end).await;
        let body = assert_problem(refused, StatusCode::CONFLICT, "conflict", None).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("not compensating"),
            "{step}: {body}"
        );
    }
    let reject = t
        .call(&order_id, "reject", end)
        .json(&json!({"reason": "payment_declined"}))
        .send()
        .await
        .unwrap();
    assert_problem(reject, StatusCode::CONFLICT, "conflict", None).await;

    assert_eq!(
        t.fold::<Customer>(&customer_stream).await.balance_cents,
        balance,
        "balance unchanged"
    );
    let after = t.fold::<Product>("product-lamp").await;
    assert_eq!((after.on_hand, after.reserved), (stock.on_hand, 1));
    assert_eq!(t.count(&customer_stream, "PaymentRefunded").await, 0);
    assert_eq!(t.saga_version(&order_id).await, end, "nothing recorded");
    assert_eq!(t.order_state(&order_id).await["status"], "confirmed");
}

#[tokio::test]
async fn an_undo_takes_effect_only_once_the_saga_compensates_and_only_last_first() {
    let t = Steps::start().await;
    t.api.product("lamp", 2_000, 3).await;
    let customer = t.api.customer(5_000).await;
    let order_id = t.order(&customer, one("lamp"), "FR").await;
    t.complete(&order_id).await;
    // The customer cancels; the orchestrator starts compensating.
    let cancelled = t
        .api
        .post(
            &format!("/v1/orders/{order_id}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
    let mut version = t
        .saga(
            &order_id,
            &[
                SagaEvent::CancellationRequested {
                    reason: "changed my mind".into(),
                },
                SagaEvent::CompensationStarted {
                    reason: "cancelled".into(),
                },
            ],
        )
        .await;
    // The shipment is undone first; nothing else may go before it, nor
    // may the order be cancelled while anything is left to undo.
    for early in ["refund-payment", "release-inventory", "mark-cancelled"] {
        let refused = t.step(&order_id, early, version).await;
        assert_problem(refused, StatusCode::CONFLICT, "conflict", None).await;
    }
    for (step, undo) in [
        (Ship, "cancel-shipment"),
        (Charge, "refund-payment"),
        (Reserve, "release-inventory"),
    ] {
        version = t
            .saga(
                &order_id,
                &[SagaEvent::StepCompensationStarted { step, attempt: 1 }],
            )
            .await;
        let undone = t.step(&order_id, undo, version).await;
        assert_eq!(undone.status(), StatusCode::OK, "{undo}");
        version += 1;
    }
    let cancelled = t.step(&order_id, "mark-cancelled", version).await;
    assert_eq!(cancelled.status(), StatusCode::OK);

    let customer_stream = format!("customer-{customer}");
    assert_eq!(
        t.fold::<Customer>(&customer_stream).await.balance_cents,
        5_000
    );
    assert_eq!(t.fold::<Product>("product-lamp").await.reserved, 0);
    assert_eq!(t.order_state(&order_id).await["status"], "cancelled");
    let (last, data) = t.saga_events(&order_id).await.pop().unwrap();
    assert_eq!(
        (last.as_str(), &data["reason"]),
        ("SagaCompensated", &json!("cancelled"))
    );
}

#[tokio::test]
async fn confirm_before_payment_is_a_conflict() {
    let t = Steps::start().await;
    t.api.product("mug", 1_200, 5).await;
    let (_, order_id, version) = t.charging("mug", 5_000, "GB").await;
    let refused = t.step(&order_id, "confirm", version + 2).await;
    let body = assert_problem(refused, StatusCode::CONFLICT, "conflict", None).await;
    assert!(
        body["detail"].as_str().unwrap().contains("charge_payment"),
        "{body}"
    );
    assert_eq!(t.order_state(&order_id).await["status"], "pending");
    assert_eq!(t.saga_version(&order_id).await, version + 2);
    // Nor may a step that is not the running one go ahead.
    let early = t.step(&order_id, "create-shipment", version + 2).await;
    assert_problem(early, StatusCode::CONFLICT, "conflict", None).await;
    assert_eq!(
        t.count(&format!("shipment-{order_id}"), "ShipmentCreated")
            .await,
        0
    );
}

#[tokio::test]
async fn reject_takes_only_the_failures_code_and_records_the_sagas_end() {
    let t = Steps::start().await;
    t.api.product("mug", 1_200, 0).await;
    let customer = t.api.customer(0).await;
    let order_id = t.order(&customer, one("mug"), "GB").await;
    let version = t.started(&order_id).await;
    let short = t.step(&order_id, "reserve-inventory", version).await;
    assert_problem(
        short,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient-stock",
        None,
    )
    .await;
    // The orchestrator records the refusal; the reservation is no longer
    // the step running.
    let failed = t
        .saga(
            &order_id,
            &[SagaEvent::StepFailed {
                step: Reserve,
                attempt: 1,
                error: "insufficient_stock".into(),
                retryable: false,
            }],
        )
        .await;
    t.api
        .post("/v1/products/mug/restock", json!({"quantity": 5}))
        .await;
    let again = t.step(&order_id, "reserve-inventory", failed).await;
    assert_problem(again, StatusCode::CONFLICT, "conflict", None).await;
    let version = t
        .saga(
            &order_id,
            &[SagaEvent::CompensationStarted {
                reason: "insufficient_stock".into(),
            }],
        )
        .await;

    let reject = |reason: &'static str| {
        t.call(&order_id, "reject", version)
            .json(&json!({ "reason": reason }))
            .send()
    };
    for wrong in ["payment_declined", "shipping_unavailable"] {
        let refused = reject(wrong).await.unwrap();
        assert_problem(refused, StatusCode::CONFLICT, "conflict", None).await;
    }
    let not_cancelled = t.step(&order_id, "mark-cancelled", version).await;
    assert_problem(not_cancelled, StatusCode::CONFLICT, "conflict", None).await;
    let unknown = reject("bored").await.unwrap();
    assert_problem(
        unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        Some("reason"),
    )
    .await;
    assert_eq!(t.order_state(&order_id).await["status"], "pending");
    assert_eq!(t.saga_version(&order_id).await, version);

    let rejected = reject("insufficient_stock").await.unwrap();
    assert_eq!(rejected.status(), StatusCode::OK);
    let state = t.order_state(&order_id).await;
    assert_eq!(
        (state["status"].as_str(), state["rejection_reason"].as_str()),
        (Some("rejected"), Some("insufficient_stock"))
    );
    let (last, data) = t.saga_events(&order_id).await.pop().unwrap();
    assert_eq!(
        (last.as_str(), &data["reason"]),
        ("SagaCompensated", &json!("insufficient_stock"))
    );
    let repeated = reject("insufficient_stock").await.unwrap();
    assert_problem(repeated, StatusCode::CONFLICT, "saga-moved", None).await;
}

#[tokio::test]
async fn payment_and_shipping_failures_are_business_problems() {
    let t = Steps::start().await;
    t.api.product("mug", 1_200, 5).await;
    let (_, order_id, version) = t.charging("mug", 100, "GB").await;
    let declined = t.step(&order_id, "charge-payment", version + 2).await;
    assert_problem(
        declined,
        StatusCode::UNPROCESSABLE_ENTITY,
        "payment-declined",
        None,
    )
    .await;

    let rich = t.api.customer(100_000).await;
    let far = t.order(&rich, one("mug"), "BR").await;
    let version = t.started(&far).await;
    let reserved = t
        .step_then(&far, "reserve-inventory", version, "charge_payment", "1")
        .await;
    assert_eq!(reserved.status(), StatusCode::OK);
    let charged = t
        .step_then(&far, "charge-payment", version + 2, "create_shipment", "1")
        .await;
    assert_eq!(charged.status(), StatusCode::OK);
    let unavailable = t.step(&far, "create-shipment", version + 4).await;
    assert_problem(
        unavailable,
        StatusCode::UNPROCESSABLE_ENTITY,
        "shipping-unavailable",
        None,
    )
    .await;

    // An order nobody placed has no saga, so it is nobody's turn.
    let unknown = t
        .step(&Uuid::new_v4().to_string(), "charge-payment", 0)
        .await;
    assert_problem(unknown, StatusCode::CONFLICT, "conflict", None).await;
}

#[tokio::test]
async fn a_forward_step_records_the_next_steps_start_with_its_success() {
    let t = Steps::start().await;
    t.api.product("kettle", 3_000, 5).await;
    let customer = t.api.customer(10_000).await;
    let order_id = t.order(&customer, one("kettle"), "DE").await;
    let v = t.started(&order_id).await;

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
        let refused = t.step_then(&order_id, step, v, next, attempt).await;
        assert_problem(refused, StatusCode::BAD_REQUEST, "validation", Some(field)).await;
    }
    assert_eq!(t.saga_version(&order_id).await, v, "nothing recorded");
    assert_eq!(t.count("product-kettle", "InventoryReserved").await, 0);

    let reserved = t
        .step_then(&order_id, "reserve-inventory", v, "charge_payment", "1")
        .await;
    assert_eq!(reserved.status(), StatusCode::OK);
    let charged = t
        .step_then(&order_id, "charge-payment", v + 2, "create_shipment", "3")
        .await;
    assert_eq!(charged.status(), StatusCode::OK);
    // The start it recorded moved the saga: the call made at the version
    // before it is stale.
    let stale = t.step(&order_id, "create-shipment", v + 3).await;
    assert_problem(stale, StatusCode::CONFLICT, "saga-moved", None).await;
    let shipped = t.step(&order_id, "create-shipment", v + 4).await;
    assert_eq!(shipped.status(), StatusCode::OK);

    let recorded = t.saga_events(&order_id).await;
    let summary: Vec<(&str, &Value, &Value)> = recorded[v as usize..]
        .iter()
        .map(|(kind, data)| (kind.as_str(), &data["step"], &data["attempt"]))
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
    assert_eq!(t.count("product-kettle", "InventoryReserved").await, 1);
    let charges = t
        .count(&format!("customer-{customer}"), "PaymentCharged")
        .await;
    assert_eq!(charges, 1);
}

#[tokio::test]
async fn the_public_listener_has_no_step_api() {
    let t = Steps::start().await;
    t.api.product("lamp", 2_000, 3).await;
    let customer = t.api.customer(5_000).await;
    let order_id = t.order(&customer, one("lamp"), "FR").await;
    let end = t.complete(&order_id).await;
    let customer_stream = format!("customer-{customer}");
    for step in ["refund-payment", "release-inventory", "confirm"] {
        let response = t
            .api
            .client
            .post(t.api.url(&format!("/internal/v1/orders/{order_id}/{step}")))
            .header("x-saga-version", end)
            .send()
            .await
            .unwrap();
        assert_problem(response, StatusCode::NOT_FOUND, "not-found", None).await;
    }
    assert_eq!(t.count(&customer_stream, "PaymentRefunded").await, 0);
    assert_eq!(t.saga_version(&order_id).await, end);
}

/// A replica decides on the state it last appended, kept in memory; what
/// another replica appended since must never be overruled by it.
#[tokio::test]
async fn a_replica_never_decides_on_a_state_another_replica_has_changed() {
    let t = Steps::start().await;
    let api = &t.api;
    let other = harness::services::command_service(&api.env).await;
    let post_other = |path: &str, body: Value| {
        api.client
            .post(format!("{}{path}", other.url))
            .json(&body)
            .send()
    };
    api.product("shared", 100, 1).await;
    let customer = api.customer(0).await;
    let order_id = t
        .order(&customer, json!([{"sku": "shared", "quantity": 3}]), "GB")
        .await;
    let version = t.started(&order_id).await;

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
    t.reserved_then_charging(&order_id, version).await;
    let charged = t.step(&order_id, "charge-payment", version + 2).await;
    assert_eq!(charged.status(), StatusCode::OK);

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

    // Each replica's last restock was decided on what it kept after its
    // own last append to the product, which the other had moved on from:
    // one race lost on each, and counted there.
    assert_eq!(lost_races(&api.client, &api.url("")).await, 1);
    assert_eq!(lost_races(&api.client, &other.url).await, 1);
}

/// End to end with the real orchestrator: a confirmed order cancelled by
/// its customer is refunded and its stock released, because its saga
/// decided to undo those steps.
#[tokio::test]
async fn a_cancelled_confirmed_order_is_still_refunded_and_released() {
    let t = Steps::start().await;
    let steps_url = t.api.internal_url("");
    let _orchestrator = harness::services::saga_orchestrator(&t.api.env, &steps_url, |config| {
        config.step_timeout_ms = 10_000;
        config.retry_base_ms = 50;
        config.retry_max_ms = 400;
        config.poll_ms = 50;
    })
    .await;
    t.api.product("lamp", 2_000, 3).await;
    let customer = t.api.customer(5_000).await;
    let order_id = t.order(&customer, one("lamp"), "FR").await;
    let status_becomes = |status: &'static str| {
        let order_id = order_id.clone();
        let t = &t;
        async move {
            harness::eventually(Duration::from_secs(90), status, || async {
                let state = t.order_state(&order_id).await;
                anyhow::ensure!(state["status"] == status, "{state}");
                Ok(())
            })
            .await;
        }
    };
    status_becomes("confirmed").await;
    let customer_stream = format!("customer-{customer}");
    assert_eq!(
        t.fold::<Customer>(&customer_stream).await.balance_cents,
        3_000
    );

    let cancelled = t
        .api
        .post(
            &format!("/v1/orders/{order_id}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
    status_becomes("cancelled").await;

    assert_eq!(
        t.fold::<Customer>(&customer_stream).await.balance_cents,
        5_000,
        "refunded"
    );
    let product = t.fold::<Product>("product-lamp").await;
    assert_eq!((product.on_hand, product.reserved), (3, 0), "released");
    let types: Vec<String> = t
        .saga_events(&order_id)
        .await
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(types.last().map(String::as_str), Some("SagaCompensated"));
    assert_eq!(
        types.iter().filter(|t| *t == "StepCompensated").count(),
        3,
        "{types:?}"
    );
}
