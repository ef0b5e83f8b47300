//! The order fulfilment saga end to end: the whole platform in-process
//! (command-service behind a fault-injecting proxy, the orchestrator, the
//! projector and the query-service) over real PostgreSQL and the broker.
//! What a user sees is asserted through the query-service's views; what
//! must never happen (a double charge, negative stock) through the event
//! store itself.

use std::collections::HashMap;
use std::time::Duration;

use domain::Aggregate;
use domain::Event;
use domain::customer::CustomerEvent;
use domain::product::{Product, ProductEvent};
use event_relay::MessageFormat;
use harness::eventually;
use harness::platform::{self, fast_retries};
use harness::services;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::write_api::{address, assert_problem};

const SETTLE: Duration = Duration::from_secs(90);

/// The whole platform, with what these tests (and the metrics' and
/// traces' tests) ask of it.
pub(crate) struct Platform(pub(crate) platform::Platform);

impl std::ops::Deref for Platform {
    type Target = platform::Platform;

    fn deref(&self) -> &platform::Platform {
        &self.0
    }
}

impl std::ops::DerefMut for Platform {
    fn deref_mut(&mut self) -> &mut platform::Platform {
        &mut self.0
    }
}

impl Platform {
    /// Each event in a saga's stream: its type and the step it is about.
    async fn transitions(&self, order: &str) -> Vec<(String, Value)> {
        self.stream(&format!("{}{order}", domain::stream::SAGA))
            .await
            .into_iter()
            .map(|(kind, data)| (kind, data["step"].clone()))
            .collect()
    }

    /// The step attempts an orchestrator instance has counted so far.
    async fn step_attempts(&self, url: &str) -> u64 {
        let metrics = services::metrics(&self.client, url).await;
        // One series per step and direction.
        let counts: Vec<u64> = metrics
            .lines()
            .filter(|line| line.starts_with("orders_saga_step_attempts_total{"))
            .filter_map(|line| line.rsplit_once(' ')?.1.trim().parse().ok())
            .collect();
        // An instance that has called no step has no series yet (the
        // metrics test checks the name).
        counts.into_iter().sum()
    }

    async fn start() -> Self {
        Self(platform::Platform::start().await)
    }

    pub(crate) async fn start_with(adjust: impl FnOnce(&mut saga_orchestrator::Config)) -> Self {
        Self(platform::Platform::start_with(adjust).await)
    }

    async fn start_relaying(
        format: MessageFormat,
        adjust: impl FnOnce(&mut saga_orchestrator::Config),
    ) -> Self {
        Self(platform::Platform::start_relaying(format, adjust).await)
    }

    async fn command_get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.command.url))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
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

    pub(crate) async fn product(&self, sku: &str, price_cents: i64, stock: i64) {
        let (status, body) = self
            .command(
                "/v1/products",
                json!({"sku": sku, "name": sku, "price_cents": price_cents, "initial_stock": stock}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    pub(crate) async fn customer(&self, deposit: i64) -> String {
        let (status, body) = self
            .command(
                "/v1/customers",
                json!({"name": "Ada", "email": "ada@example.com"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["customer_id"].as_str().unwrap().to_owned();
        if deposit > 0 {
            let (status, _) = self
                .command(
                    &format!("/v1/customers/{id}/deposits"),
                    json!({"amount_cents": deposit}),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
        }
        id
    }

    pub(crate) async fn place(
        &self,
        customer: &str,
        sku: &str,
        quantity: i64,
        country: &str,
    ) -> String {
        let (status, body) = self
            .command(
                "/v1/orders",
                json!({"customer_id": customer, "lines": [{"sku": sku, "quantity": quantity}],
                       "shipping_address": address(country)}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["order_id"].as_str().unwrap().to_owned()
    }

    async fn cancel(&self, order_id: &str) {
        let (status, body) = self
            .command(
                &format!("/v1/orders/{order_id}/cancel"),
                json!({"reason": "changed my mind"}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    /// Waits until the order has `status` in the read model; returns it.
    async fn order_becomes(&self, order_id: &str, status: &str) -> Value {
        eventually(SETTLE, &format!("order {order_id} {status}"), || async {
            let (code, order) = self.query(&format!("/v1/orders/{order_id}")).await;
            anyhow::ensure!(code == StatusCode::OK, "{code}");
            anyhow::ensure!(order["status"] == status, "order is {}", order["status"]);
            Ok(order)
        })
        .await
    }

    /// Waits until the saga's view satisfies `check`; returns it.
    async fn saga_where(
        &self,
        order_id: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(SETTLE, &format!("saga {order_id}: {what}"), || async {
            let (code, saga) = self.query(&format!("/v1/sagas/{order_id}")).await;
            anyhow::ensure!(code == StatusCode::OK, "{code}");
            anyhow::ensure!(check(&saga), "{saga}");
            Ok(saga)
        })
        .await
    }

    pub(crate) async fn saga_becomes(&self, order_id: &str, status: &str) -> Value {
        self.saga_where(order_id, status, |saga| saga["status"] == status)
            .await
    }

    /// Waits until the product's read model shows (on_hand, reserved).
    async fn stock_becomes(&self, sku: &str, on_hand: i64, reserved: i64) {
        eventually(SETTLE, &format!("stock of {sku}"), || async {
            let (_, product) = self.query(&format!("/v1/products/{sku}")).await;
            anyhow::ensure!(
                product["on_hand"] == on_hand
                    && product["reserved"] == reserved
                    && product["available"] == on_hand - reserved,
                "{product}"
            );
            Ok(())
        })
        .await;
    }

    async fn balance_becomes(&self, customer: &str, balance: i64) {
        eventually(SETTLE, &format!("balance of {customer}"), || async {
            let (_, body) = self.query(&format!("/v1/customers/{customer}")).await;
            anyhow::ensure!(body["balance_cents"] == balance, "{body}");
            Ok(())
        })
        .await;
    }

    /// How many times the customer was charged, from the event store.
    async fn charges(&self, customer: &str) -> usize {
        self.stream(&format!("customer-{customer}"))
            .await
            .into_iter()
            .filter(|(kind, _)| kind == "PaymentCharged")
            .count()
    }

    /// Events of a stream in the event store, as (type, data).
    async fn stream(&self, stream_id: &str) -> Vec<(String, Value)> {
        let store = self.env.event_store().await;
        store
            .read_stream(stream_id, 1, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.event_type, e.data))
            .collect()
    }
}

fn step<'a>(saga: &'a Value, name: &str) -> &'a Value {
    saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

fn step_statuses(saga: &Value) -> Vec<String> {
    saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_placed_order_is_reserved_charged_shipped_and_confirmed() {
    let platform = Platform::start().await;
    platform.product("widget", 500, 10).await;
    let customer = platform.customer(10_000).await;
    let order = platform.place(&customer, "widget", 2, "GB").await;

    let confirmed = platform.order_becomes(&order, "confirmed").await;
    assert!(confirmed["tracking_number"].is_string(), "{confirmed}");
    assert_eq!(confirmed["rejection_reason"], Value::Null);
    let saga = platform.saga_becomes(&order, "completed").await;
    assert_eq!(step_statuses(&saga), ["succeeded"; 3]);
    assert_eq!(step(&saga, "charge_payment")["attempts"], 1);
    assert_eq!(saga["current_step"], Value::Null);
    assert!(saga["finished_at"].is_string());
    platform.stock_becomes("widget", 10, 2).await;
    platform.balance_becomes(&customer, 9_000).await;

    // Every transition is in the saga's stream, in order, even though a
    // step's success is recorded together with the next transition.
    assert_eq!(
        platform.transitions(&order).await,
        untroubled_transitions(),
        "{:#}",
        saga["history"]
    );
}

/// A saga's transitions when nothing went wrong: each step started once
/// and succeeded.
fn untroubled_transitions() -> Vec<(String, Value)> {
    [
        ("SagaStarted", Value::Null),
        ("StepStarted", json!("reserve_inventory")),
        ("StepSucceeded", json!("reserve_inventory")),
        ("StepStarted", json!("charge_payment")),
        ("StepSucceeded", json!("charge_payment")),
        ("StepStarted", json!("create_shipment")),
        ("StepSucceeded", json!("create_shipment")),
        ("SagaCompleted", Value::Null),
    ]
    .into_iter()
    .map(|(kind, step)| (kind.to_owned(), step))
    .collect()
}

#[tokio::test]
async fn sagas_started_while_the_executor_claims_due_ones_run_their_first_attempt() {
    // The executor looks for due sagas every 50 ms (`fast_retries`), so
    // many of forty placements at once are started while it does. Each new
    // saga must still go straight to the executor, its first step called
    // on the attempt the intake recorded, not queued as due and its first
    // step started again.
    let platform = Platform::start().await;
    platform.product("pencil", 100, 1_000).await;
    let customer = platform.customer(1_000_000).await;
    let orders =
        futures::future::join_all((0..40).map(|_| platform.place(&customer, "pencil", 1, "GB")))
            .await;
    for order in &orders {
        let saga = platform.saga_becomes(order, "completed").await;
        assert_eq!(
            step(&saga, "reserve_inventory")["attempts"],
            1,
            "{order}: {:#}",
            saga["history"]
        );
    }
}

#[tokio::test]
async fn a_step_call_that_outlasts_the_lease_is_made_once() {
    // Leases of 2 s (`fast_retries`), and a charge that takes 2.5 of them
    // to answer, well within the call's timeout of 10 s.
    let platform = Platform::start().await;
    platform.product("clock", 2_500, 4).await;
    let customer = platform.customer(10_000).await;
    platform
        .proxy
        .slow_down(&["charge-payment"], Duration::from_secs(5));
    let order = platform.place(&customer, "clock", 1, "SE").await;

    platform.order_becomes(&order, "confirmed").await;
    platform.saga_becomes(&order, "completed").await;
    assert_eq!(platform.transitions(&order).await, untroubled_transitions());
    assert_eq!(
        platform.step_attempts(platform.orchestrator_url()).await,
        3,
        "each step called once"
    );
    assert_eq!(platform.charges(&customer).await, 1);
    platform.balance_becomes(&customer, 7_500).await;
}

#[tokio::test]
async fn each_business_failure_compensates_what_was_done_and_rejects_the_order() {
    let platform = Platform::start().await;
    platform.product("scarce", 300, 1).await;
    platform.product("plenty", 300, 100).await;
    let rich = platform.customer(100_000).await;
    let poor = platform.customer(100).await;

    // Not enough stock: nothing was done, nothing to undo.
    let short = platform.place(&rich, "scarce", 2, "GB").await;
    // Not enough money: the reservation is released.
    let declined = platform.place(&poor, "plenty", 1, "GB").await;
    // Not a served country: the charge is refunded and the reservation
    // released.
    let unshippable = platform.place(&rich, "plenty", 3, "BR").await;

    let order = platform.order_becomes(&short, "rejected").await;
    assert_eq!(order["rejection_reason"], "insufficient_stock");
    let saga = platform.saga_becomes(&short, "compensated").await;
    assert_eq!(saga["failure_reason"], "insufficient_stock");
    assert_eq!(step_statuses(&saga), ["failed", "pending", "pending"]);

    let order = platform.order_becomes(&declined, "rejected").await;
    assert_eq!(order["rejection_reason"], "payment_declined");
    let saga = platform.saga_becomes(&declined, "compensated").await;
    assert_eq!(step_statuses(&saga), ["compensated", "failed", "pending"]);

    let order = platform.order_becomes(&unshippable, "rejected").await;
    assert_eq!(order["rejection_reason"], "shipping_unavailable");
    let saga = platform.saga_becomes(&unshippable, "compensated").await;
    assert_eq!(
        step_statuses(&saga),
        ["compensated", "compensated", "failed"]
    );
    let compensations: Vec<&str> = saga["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == "step_compensated")
        .map(|h| h["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        compensations,
        ["charge_payment", "reserve_inventory"],
        "reverse order"
    );

    platform.stock_becomes("scarce", 1, 0).await;
    platform.stock_becomes("plenty", 100, 0).await;
    platform.balance_becomes(&rich, 100_000).await;
    platform.balance_becomes(&poor, 100).await;
}

#[tokio::test]
async fn cancelling_a_confirmed_order_undoes_every_step() {
    let platform = Platform::start().await;
    platform.product("lamp", 2_000, 5).await;
    let customer = platform.customer(5_000).await;
    let order = platform.place(&customer, "lamp", 2, "DE").await;
    platform.order_becomes(&order, "confirmed").await;
    platform.balance_becomes(&customer, 1_000).await;

    platform.cancel(&order).await;
    platform.order_becomes(&order, "cancelled").await;
    let saga = platform.saga_becomes(&order, "compensated").await;
    assert_eq!(saga["failure_reason"], "cancelled");
    assert_eq!(step_statuses(&saga), ["compensated"; 3]);
    platform.stock_becomes("lamp", 5, 0).await;
    platform.balance_becomes(&customer, 5_000).await;
    let shipment = platform.stream(&format!("shipment-{order}")).await;
    assert_eq!(shipment.last().unwrap().0, "ShipmentCancelled");
}

#[tokio::test]
async fn cancelling_an_order_mid_saga_undoes_the_steps_done_so_far() {
    let platform = Platform::start().await;
    platform.product("chair", 1_000, 5).await;
    let customer = platform.customer(5_000).await;
    // Shipments keep failing, so the saga is stuck retrying its last step.
    platform.proxy.fail(&["create-shipment"]);
    let order = platform.place(&customer, "chair", 1, "FR").await;
    platform
        .saga_where(&order, "retrying the shipment", |saga| {
            step(saga, "create_shipment")["attempts"].as_u64() >= Some(2)
        })
        .await;

    platform.cancel(&order).await;
    platform.order_becomes(&order, "cancelled").await;
    let saga = platform.saga_becomes(&order, "compensated").await;
    assert_eq!(step(&saga, "reserve_inventory")["status"], "compensated");
    assert_eq!(step(&saga, "charge_payment")["status"], "compensated");
    platform.stock_becomes("chair", 5, 0).await;
    platform.balance_becomes(&customer, 5_000).await;
}

#[tokio::test]
async fn an_orchestrator_killed_mid_saga_is_succeeded_and_nothing_is_applied_twice() {
    let mut platform = Platform::start().await;
    platform.product("desk", 7_000, 3).await;
    let customer = platform.customer(10_000).await;
    platform.proxy.fail(&["create-shipment"]);
    let order = platform.place(&customer, "desk", 1, "NL").await;
    platform
        .saga_where(&order, "charged, shipment failing", |saga| {
            step(saga, "charge_payment")["status"] == "succeeded"
                && step(saga, "create_shipment")["attempts"].as_u64() >= Some(1)
        })
        .await;

    platform.orchestrator.take().unwrap().kill().await;
    platform.proxy.heal();
    platform.restart_orchestrator().await;

    platform.order_becomes(&order, "confirmed").await;
    platform.saga_becomes(&order, "completed").await;
    let charges = platform.charges(&customer).await;
    assert_eq!(charges, 1, "charged exactly once");
    platform.balance_becomes(&customer, 3_000).await;
    platform.stock_becomes("desk", 3, 1).await;
}

#[tokio::test]
async fn two_orchestrators_share_the_sagas_and_each_runs_once() {
    // Two sagas at a time each, so most sagas wait in the table for
    // whichever instance claims them first, instead of all going to the
    // instance whose intake read their placement.
    fn two_at_a_time(config: &mut saga_orchestrator::Config) {
        fast_retries(config);
        config.concurrency = 2;
    }
    let platform = Platform::start_with(two_at_a_time).await;
    let second =
        services::saga_orchestrator(&platform.env, &platform.proxy.url, two_at_a_time).await;
    platform.product("lamp", 300, 100).await;
    let customer = platform.customer(100_000).await;
    // Every step call fails until both instances have tried one: each holds
    // at most two sagas, so the rest wait in the table for whichever
    // instance claims them, and the other instance must claim some. Without
    // this, on a fast machine the instance whose intake reads the placements
    // can finish each saga before the next one arrives and run them all.
    platform.proxy.fail(&[""]);
    let orders =
        futures::future::join_all((0..40).map(|_| platform.place(&customer, "lamp", 1, "GB")))
            .await;
    let urls = [platform.orchestrator_url().to_owned(), second.url.clone()];
    eventually(
        Duration::from_secs(60),
        "both instances calling steps",
        || async {
            let mut attempts = Vec::new();
            for url in &urls {
                attempts.push(platform.step_attempts(url).await);
            }
            anyhow::ensure!(
                attempts.iter().all(|&n| n > 0),
                "attempts per instance {attempts:?}"
            );
            Ok(())
        },
    )
    .await;
    platform.proxy.heal();

    for order in &orders {
        platform.order_becomes(order, "confirmed").await;
        let saga = platform.saga_becomes(order, "completed").await;
        assert_eq!(step_statuses(&saga), ["succeeded"; 3], "{saga}");
    }
    let charges = platform.charges(&customer).await;
    assert_eq!(charges, 40, "each order charged exactly once");
    platform.stock_becomes("lamp", 100, 40).await;
    platform
        .balance_becomes(&customer, 100_000 - 40 * 300)
        .await;
}

#[tokio::test]
async fn a_command_service_unavailable_for_a_while_is_retried_until_it_is_back() {
    let platform = Platform::start().await;
    platform.product("pen", 100, 50).await;
    let customer = platform.customer(1_000).await;
    platform.proxy.fail(&[""]);
    let order = platform.place(&customer, "pen", 3, "SE").await;
    let failing = platform
        .saga_where(&order, "retrying the reservation", |saga| {
            step(saga, "reserve_inventory")["attempts"].as_u64() >= Some(3)
        })
        .await;
    assert_eq!(failing["status"], "running");
    assert!(
        step(&failing, "reserve_inventory")["last_error"]
            .as_str()
            .unwrap()
            .contains("503")
    );

    platform.proxy.heal();
    platform.order_becomes(&order, "confirmed").await;
    let saga = platform.saga_becomes(&order, "completed").await;
    let history: Vec<&str> = saga["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert!(history.contains(&"retry_scheduled"), "{history:?}");
    platform.balance_becomes(&customer, 700).await;
}

#[tokio::test]
async fn a_refused_service_credential_is_retried_and_read_again_once_renewed() {
    // The orchestrator's token file holds an expired service token: every
    // step call is 401, which is the platform's set-up and not the
    // business's answer, so the saga waits instead of compensating; once
    // the file is renewed (renamed over, as a projected token is), the
    // orchestrator reads it again after the next 401 and the saga goes on.
    let dir = std::env::temp_dir().join(format!("orders-token-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("service.jwt");
    let now = chrono::Utc::now().timestamp();
    let expired = harness::auth::signing_key()
        .mint_raw(&json!({
            "iss": service_kit::auth::PLATFORM_ISSUER,
            "aud": service_kit::auth::PLATFORM_AUDIENCE,
            "sub": "saga-orchestrator",
            "roles": ["service"],
            "iat": now - 7_200,
            "exp": now - 3_600,
        }))
        .unwrap();
    std::fs::write(&token_file, expired).unwrap();
    let file = token_file.clone();
    let platform = Platform::start_with(move |config| {
        fast_retries(config);
        config.service_token_file = Some(file);
    })
    .await;
    platform.product("stamp", 100, 10).await;
    let customer = platform.customer(1_000).await;
    let order = platform.place(&customer, "stamp", 2, "FR").await;
    let waiting = platform
        .saga_where(&order, "retrying the reservation", |saga| {
            step(saga, "reserve_inventory")["attempts"].as_u64() >= Some(3)
        })
        .await;
    assert_eq!(waiting["status"], "running", "{waiting}");
    let error = step(&waiting, "reserve_inventory")["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("401"), "{error}");
    // Nothing was reserved meanwhile.
    platform.stock_becomes("stamp", 10, 0).await;

    let renewed = dir.join("service.jwt.new");
    std::fs::write(
        &renewed,
        harness::auth::token("service", "saga-orchestrator"),
    )
    .unwrap();
    std::fs::rename(&renewed, &token_file).unwrap();
    platform.order_becomes(&order, "confirmed").await;
    platform.saga_becomes(&order, "completed").await;
    platform.balance_becomes(&customer, 800).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_step_past_its_deadline_is_failed_and_compensated() {
    let env_platform = Platform::start().await;
    // A second orchestrator is not wanted here: replace it with one whose
    // deadline is short.
    let mut platform = env_platform;
    platform.orchestrator.take().unwrap().stop().await.unwrap();
    let orchestrator = services::saga_orchestrator(&platform.env, &platform.proxy.url, |config| {
        fast_retries(config);
        config.step_deadline_ms = 1_500;
    })
    .await;
    platform.orchestrator = Some(orchestrator);
    platform.product("cup", 250, 10).await;
    let customer = platform.customer(1_000).await;
    platform.proxy.fail(&["charge-payment"]);
    let order = platform.place(&customer, "cup", 2, "GB").await;

    let order_view = platform.order_becomes(&order, "rejected").await;
    assert_eq!(order_view["rejection_reason"], "payment_declined");
    let saga = platform.saga_becomes(&order, "compensated").await;
    let charge = step(&saga, "charge_payment");
    assert!(
        charge["last_error"].as_str().unwrap().contains("deadline"),
        "{charge}"
    );
    platform.stock_becomes("cup", 10, 0).await;
    platform.balance_becomes(&customer, 1_000).await;
}

#[tokio::test]
async fn a_compensation_that_keeps_failing_fails_the_saga_until_an_operator_retries() {
    let platform = Platform::start().await;
    platform.product("vase", 1_500, 4).await;
    let customer = platform.customer(3_000).await;
    platform.proxy.fail(&["refund-payment"]);
    // Brazil is not served: the refund must run, and keeps failing.
    let order = platform.place(&customer, "vase", 1, "BR").await;
    let failed = platform.saga_becomes(&order, "failed").await;
    assert_eq!(
        step(&failed, "charge_payment")["status"],
        "compensation_failed"
    );
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("refund-payment"),
        "{failed}"
    );
    let history_len = failed["history"].as_array().unwrap().len();

    let retry = |path: String| {
        let client = platform.client.clone();
        async move { client.post(path).send().await.unwrap() }
    };
    let url = platform.orchestrator_url().to_owned();
    let unknown = uuid::Uuid::new_v4();
    assert_problem(
        retry(format!("{url}/v1/sagas/{unknown}/retry")).await,
        StatusCode::NOT_FOUND,
        "not-found",
        None,
    )
    .await;

    // A writer may not retry; nothing is recorded.
    let writer = harness::auth::client("writer")
        .post(format!("{url}/v1/sagas/{order}/retry"))
        .send()
        .await
        .unwrap();
    assert_problem(writer, StatusCode::FORBIDDEN, "forbidden", None).await;

    platform.proxy.heal();
    let response = retry(format!("{url}/v1/sagas/{order}/retry")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // The retry says who asked: the admin client's subject.
    let store = platform.env.event_store().await;
    let retries: Vec<_> = store
        .read_stream(&format!("saga-{order}"), 1, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "SagaRetryRequested")
        .collect();
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].metadata["actor"], "test-admin");
    let saga = platform.saga_becomes(&order, "compensated").await;
    assert!(saga["history"].as_array().unwrap().len() > history_len);
    let order_view = platform.order_becomes(&order, "rejected").await;
    assert_eq!(order_view["rejection_reason"], "shipping_unavailable");
    platform.balance_becomes(&customer, 3_000).await;
    platform.stock_becomes("vase", 4, 0).await;

    assert_problem(
        retry(format!("{url}/v1/sagas/{order}/retry")).await,
        StatusCode::CONFLICT,
        "conflict",
        None,
    )
    .await;
}

#[tokio::test]
async fn after_two_hundred_mixed_orders_the_invariants_hold() {
    // With the relay batching events into messages, which the intake and
    // the projector must take apart (every other test relays one event per
    // message, with the CloudEvents headers).
    let platform = Platform::start_relaying(MessageFormat::Batch, fast_retries).await;
    let skus = ["a", "b", "c", "d", "e"];
    for (i, sku) in skus.iter().enumerate() {
        platform
            .product(sku, 100 * (i as i64 + 1), 30 + 10 * i as i64)
            .await;
    }
    let mut customers = Vec::new();
    for i in 0..20 {
        customers.push(
            platform
                .customer(if i % 4 == 0 { 150 } else { 4_000 })
                .await,
        );
    }
    let countries = ["GB", "US", "DE", "BR", "JP", "FR", "CA"];
    let mut orders = Vec::new();
    for i in 0..200usize {
        let order = platform
            .place(
                &customers[i % customers.len()],
                skus[i % skus.len()],
                1 + (i % 3) as i64,
                countries[i % countries.len()],
            )
            .await;
        if i % 9 == 0 {
            platform.cancel(&order).await;
        }
        orders.push(order);
    }

    // Every saga ends: read in one query, so a saga that starts late
    // cannot slip between a look at the running and one at the rest.
    eventually(Duration::from_secs(240), "every saga ends", || async {
        let (_, all) = platform.query("/v1/sagas?limit=200").await;
        let items = all["items"].as_array().cloned().unwrap_or_default();
        let unfinished: Vec<&Value> = items
            .iter()
            .filter(|saga| ["running", "compensating"].contains(&saga["status"].as_str().unwrap()))
            .collect();
        anyhow::ensure!(
            unfinished.is_empty() && items.len() == 200,
            "{} unfinished, {} seen; the first unfinished: {:?}",
            unfinished.len(),
            items.len(),
            unfinished.first()
        );
        Ok(())
    })
    .await;
    let (_, failed) = platform.query("/v1/sagas?status=failed").await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 0, "{failed}");

    // Products: on hand = reserved + available, nothing negative, from the
    // event store itself.
    for sku in skus {
        let product = platform
            .stream(&format!("product-{sku}"))
            .await
            .iter()
            .map(|(kind, data)| ProductEvent::decode(kind, data).unwrap())
            .fold(Product::default(), |state, event| {
                <Product as Aggregate>::evolve(state, &event)
            });
        assert!(product.reserved >= 0 && product.available() >= 0, "{sku}");
        assert_eq!(product.on_hand, product.reserved + product.available());
        let (_, view) = platform.query(&format!("/v1/products/{sku}")).await;
        assert_eq!(view["reserved"], product.reserved, "{sku}: read model");
    }

    // Customers: balance = deposits − charges + refunds ≥ 0; no order
    // charged twice.
    let mut charged: HashMap<String, usize> = HashMap::new();
    for customer in &customers {
        let mut balance = 0i64;
        for (kind, data) in platform.stream(&format!("customer-{customer}")).await {
            match CustomerEvent::decode(&kind, &data).unwrap() {
                CustomerEvent::FundsDeposited { amount_cents, .. } => balance += amount_cents,
                CustomerEvent::PaymentCharged {
                    amount_cents,
                    order_id,
                    ..
                } => {
                    balance -= amount_cents;
                    *charged.entry(order_id.to_string()).or_default() += 1;
                }
                CustomerEvent::PaymentRefunded { amount_cents, .. } => balance += amount_cents,
                CustomerEvent::CustomerRegistered { .. } => {}
            }
            assert!(balance >= 0, "{customer} went below zero");
        }
        let (_, view) = platform.query(&format!("/v1/customers/{customer}")).await;
        assert_eq!(view["balance_cents"], balance, "{customer}: read model");
    }
    assert!(charged.values().all(|n| *n == 1), "an order charged twice");

    // Orders: each ended confirmed, rejected or cancelled, as its saga did.
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for order in &orders {
        let (_, view) = platform.query(&format!("/v1/orders/{order}")).await;
        let (_, saga) = platform.query(&format!("/v1/sagas/{order}")).await;
        let status = view["status"].as_str().unwrap().to_owned();
        let expected_saga = if status == "confirmed" {
            "completed"
        } else {
            "compensated"
        };
        assert_eq!(saga["status"], expected_saga, "{order}: {status}");
        *by_status.entry(status).or_default() += 1;
    }
    assert_eq!(by_status.get("pending"), None, "{by_status:?}");
    for status in ["confirmed", "rejected", "cancelled"] {
        assert!(
            by_status.get(status).copied().unwrap_or(0) > 0,
            "{by_status:?}"
        );
    }
}

impl Platform {
    /// Places an order under the client's own correlation id.
    async fn place_correlated(&self, customer: &str, sku: &str, correlation_id: &str) -> String {
        let response = self
            .client
            .post(format!("{}/v1/orders", self.command.url))
            .header("x-correlation-id", correlation_id)
            .json(
                &json!({"customer_id": customer, "lines": [{"sku": sku, "quantity": 1}],
                          "shipping_address": address("GB")}),
            )
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["order_id"].as_str().unwrap().to_owned()
    }

    /// `GET /v1/orders/{id}/trace` as `client` sees it.
    async fn trace_as(&self, client: &Client, order_id: &str) -> (StatusCode, Value) {
        let response = client
            .get(format!("{}/v1/orders/{order_id}/trace", self.command.url))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// (stream category, type) of each event of a trace, in its order.
fn traced(trace: &Value) -> Vec<(String, String)> {
    trace["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            let stream = event["stream_id"].as_str().unwrap();
            let category = stream.split('-').next().unwrap().to_owned();
            (category, event["type"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn an_orders_trace_is_every_event_its_placement_caused_in_one_unbroken_chain() {
    let platform = Platform::start().await;
    platform.product("kettle", 2_500, 10).await;
    let customer = platform.customer(10_000).await;
    let order = platform
        .place_correlated(&customer, "kettle", "my-own-correlation")
        .await;
    platform.saga_becomes(&order, "completed").await;
    // Another order under the same client-chosen correlation id, cancelled:
    // none of it may join the first order's trace.
    let other = platform
        .place_correlated(&customer, "kettle", "my-own-correlation")
        .await;
    platform.saga_becomes(&other, "completed").await;
    platform.cancel(&other).await;
    platform.saga_becomes(&other, "compensated").await;

    let (status, trace) = platform.trace_as(&platform.client, &order).await;
    assert_eq!(status, StatusCode::OK, "{trace}");
    let events = trace["events"].as_array().unwrap();
    let kinds = traced(&trace);
    assert_eq!(
        kinds[0],
        ("order".into(), "OrderPlaced".into()),
        "{kinds:?}"
    );
    for expected in [
        ("saga", "SagaStarted"),
        ("product", "InventoryReserved"),
        ("customer", "PaymentCharged"),
        ("shipment", "ShipmentCreated"),
        ("order", "OrderConfirmed"),
        ("saga", "SagaCompleted"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(
            kinds.contains(&expected),
            "{expected:?} missing from {kinds:?}"
        );
    }
    // In global order, each with its cause, all in the placement's chain.
    let positions: Vec<i64> = events
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    for event in &events[1..] {
        assert_eq!(event["correlation_id"], "my-own-correlation", "{event}");
        let cause = event["causation_id"].as_str().unwrap();
        let of_the_order = event["stream_id"] == format!("order-{order}");
        assert!(
            of_the_order || ids.contains(&cause),
            "{} caused by {cause}, which is not in the trace",
            event["type"]
        );
    }
    // Nothing of the other order, which shares the correlation id.
    let other_streams = [
        format!("order-{other}"),
        format!("saga-{other}"),
        format!("shipment-{other}"),
    ];
    assert!(
        events
            .iter()
            .all(|e| !other_streams.iter().any(|s| e["stream_id"] == s.as_str())),
        "{kinds:?}"
    );
    // The cancelled order's trace shows its compensation too.
    let (_, cancelled) = platform.trace_as(&platform.client, &other).await;
    let kinds = traced(&cancelled);
    for expected in [
        ("saga", "CompensationStarted"),
        ("customer", "PaymentRefunded"),
        ("product", "InventoryReleased"),
        ("order", "OrderCancelled"),
        ("saga", "SagaCompensated"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(
            kinds.contains(&expected),
            "{expected:?} missing from {kinds:?}"
        );
    }

    let (status, _) = platform
        .trace_as(&platform.client, &uuid::Uuid::new_v4().to_string())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let customer_client = harness::auth::customer_token(customer.parse().unwrap());
    let (status, _) = platform
        .trace_as(&harness::auth::client_with(&customer_client), &order)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a trace is for readers");
}

/// The order ids a saga list shows.
fn listed(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|item| item["order_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_saga_list_filters_by_failure_attempts_stuck_time_and_placement_time() {
    let mut platform = Platform::start().await;
    let placed_before = chrono::Utc::now() - chrono::Duration::seconds(1);
    platform.product("clock", 1_000, 10).await;
    let rich = platform.customer(10_000).await;
    let poor = platform.customer(0).await;
    let completed = platform.place(&rich, "clock", 1, "GB").await;
    platform.saga_becomes(&completed, "completed").await;
    let declined = platform.place(&poor, "clock", 1, "GB").await;
    platform.saga_becomes(&declined, "compensated").await;
    // A charge that keeps failing, then an orchestrator that stops: the
    // saga is left running, with several attempts, and makes no progress.
    platform.proxy.fail(&["charge-payment"]);
    let stuck = platform.place(&rich, "clock", 1, "GB").await;
    platform
        .saga_where(&stuck, "charge retried", |saga| {
            step(saga, "charge_payment")["attempts"].as_u64() >= Some(3)
        })
        .await;
    platform.orchestrator.take().unwrap().kill().await;
    let placed_after = chrono::Utc::now() + chrono::Duration::hours(1);

    let list = |query: String| {
        let platform = &platform;
        async move {
            let (status, body) = platform.query(&format!("/v1/sagas?{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            listed(&body)
        }
    };
    assert_eq!(
        list("failure=PAYMENT_declined".into()).await,
        std::slice::from_ref(&declined)
    );
    assert_eq!(
        list("failure=503".into()).await,
        std::slice::from_ref(&stuck)
    );
    assert_eq!(
        list("min_attempts=3".into()).await,
        std::slice::from_ref(&stuck)
    );
    assert_eq!(
        list("status=compensated&failure=declined".into()).await,
        std::slice::from_ref(&declined)
    );
    eventually(SETTLE, "the stuck saga listed as stuck", || async {
        let (_, body) = platform.query("/v1/sagas?stuck_for=2").await;
        anyhow::ensure!(listed(&body) == std::slice::from_ref(&stuck), "{body}");
        Ok(())
    })
    .await;
    let stamp =
        |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(
        list(format!("placed_from={}", stamp(placed_before))).await,
        [stuck.clone(), declined.clone(), completed.clone()],
        "newest first"
    );
    assert!(
        list(format!("placed_from={}", stamp(placed_after)))
            .await
            .is_empty()
    );
    assert!(
        list(format!("placed_to={}", stamp(placed_before)))
            .await
            .is_empty()
    );
    // Paging through a filter keeps to it.
    let (_, first) = platform
        .query(&format!(
            "/v1/sagas?placed_from={}&limit=2",
            stamp(placed_before)
        ))
        .await;
    assert_eq!(listed(&first), [stuck.clone(), declined.clone()]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = platform
        .query(&format!(
            "/v1/sagas?placed_from={}&limit=2&cursor={cursor}",
            stamp(placed_before)
        ))
        .await;
    assert_eq!(listed(&second), std::slice::from_ref(&completed));
    assert!(second["next_cursor"].is_null());

    for bad in [
        "failure=".to_owned(),
        "min_attempts=-1".into(),
        "stuck_for=lots".into(),
        format!(
            "placed_from={}&placed_to={}",
            stamp(placed_after),
            stamp(placed_before)
        ),
        "status=stuck".into(),
    ] {
        let (status, body) = platform.query(&format!("/v1/sagas?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["type"], "/problems/validation", "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_bulk_retry_shows_a_dry_run_then_retries_every_failed_saga_it_selects_as_a_job() {
    let platform = Platform::start().await;
    platform.product("vase", 1_500, 10).await;
    let customer = platform.customer(10_000).await;
    let completed = platform.place(&customer, "vase", 1, "GB").await;
    platform.saga_becomes(&completed, "completed").await;
    // Brazil is not served: each refund must run, and keeps failing.
    platform.proxy.fail(&["refund-payment"]);
    let mut failed = Vec::new();
    for _ in 0..3 {
        failed.push(platform.place(&customer, "vase", 1, "BR").await);
    }
    for order in &failed {
        platform.saga_becomes(order, "failed").await;
    }
    let url = format!("{}/v1/sagas/retry", platform.orchestrator_url());
    let operator = harness::auth::client("operator");
    let ask = |client: &Client, body: Value| {
        let request = client.post(&url).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let location = response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned());
            (
                status,
                location,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // A dry run counts every failed saga the filter selects, and changes nothing.
    let (status, _, dry) = ask(&operator, json!({"filter": {}, "dry_run": true})).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["count"], 3, "{dry}");
    let mut sampled: Vec<String> = dry["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["order_id"].as_str().unwrap().to_owned())
        .collect();
    sampled.sort();
    let mut expected = failed.clone();
    expected.sort();
    assert_eq!(sampled, expected);
    let (_, _, none) = ask(
        &operator,
        json!({"filter": {"failure": "no such error"}, "dry_run": true}),
    )
    .await;
    assert_eq!(none["count"], 0, "{none}");
    // Only failed sagas are retried; only operators retry.
    let (status, _, body) = ask(&operator, json!({"filter": {"status": "completed"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = ask(&operator, json!({"filter": {"stauts": "failed"}})).await;
    assert!(status.is_client_error(), "{status} {body}");
    let (status, _, _) = ask(&harness::auth::client("writer"), json!({"filter": {}})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for order in &failed {
        platform.saga_becomes(order, "failed").await;
    }

    platform.proxy.heal();
    let (status, location, started) = ask(&operator, json!({"filter": {}})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["count"], 3, "{started}");
    let job_id = started["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        location.as_deref(),
        Some(format!("/v1/sagas/retry/{job_id}").as_str())
    );
    let job_url = format!("{}/v1/sagas/retry/{job_id}", platform.orchestrator_url());
    let job = eventually(
        SETTLE,
        "the job done and every saga out of failed",
        || async {
            let job: Value = harness::auth::client("reader")
                .get(&job_url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::ensure!(job["status"] == "done" && job["left_failed"] == 3, "{job}");
            Ok(job)
        },
    )
    .await;
    assert_eq!(job["retried"], 3, "{job}");
    assert_eq!(job["requested_by"], "test-operator", "{job}");
    for order in &failed {
        platform.saga_becomes(order, "compensated").await;
        let (_, events) = platform
            .command_get(&format!("/v1/streams/saga-{order}/events?limit=1000"))
            .await;
        let retried: Vec<&Value> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "SagaRetryRequested")
            .collect();
        assert_eq!(retried.len(), 1, "{events}");
        assert_eq!(retried[0]["metadata"]["actor"], "test-operator");
        assert_eq!(retried[0]["metadata"]["job_id"], job_id.as_str());
    }
    // The completed saga was never part of it.
    platform.saga_becomes(&completed, "completed").await;
    let (status, _, _) = ask(&operator, json!({"filter": {}, "dry_run": true})).await;
    assert_eq!(status, StatusCode::OK);
    let unknown = format!(
        "{}/v1/sagas/retry/{}",
        platform.orchestrator_url(),
        uuid::Uuid::new_v4()
    );
    let response = operator.get(unknown).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// What `saga-orchestrator sagas ...` prints with `args`, as `role`.
async fn sagas_cli(platform: &Platform, role: &str, args: &[&str]) -> anyhow::Result<String> {
    let token = harness::auth::token(role, &format!("test-{role}"));
    let mut command = vec![
        "saga-orchestrator".to_owned(),
        "sagas".to_owned(),
        "--query-url".to_owned(),
        platform.query.url.clone(),
        "--orchestrator-url".to_owned(),
        platform.orchestrator_url().to_owned(),
        "--token".to_owned(),
        token,
    ];
    command.extend(args.iter().map(|arg| (*arg).to_owned()));
    let mut out = Vec::new();
    saga_orchestrator::cli::run(command, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn operators_list_show_and_retry_sagas_from_the_command_line_with_their_roles() {
    let platform = Platform::start().await;
    platform.product("lamp", 1_500, 10).await;
    let customer = platform.customer(10_000).await;
    platform.proxy.fail(&["refund-payment"]);
    // Brazil is not served: the refund must run, and keeps failing.
    let order = platform.place(&customer, "lamp", 1, "BR").await;
    platform.saga_becomes(&order, "failed").await;

    let listed = sagas_cli(&platform, "reader", &["list", "--status", "failed"])
        .await
        .unwrap();
    assert!(listed.contains(&order), "{listed}");
    assert!(listed.contains("1 sagas"), "{listed}");
    let none = sagas_cli(&platform, "reader", &["list", "--status", "running"])
        .await
        .unwrap();
    assert!(!none.contains(&order), "{none}");
    let shown = sagas_cli(&platform, "reader", &["show", &order])
        .await
        .unwrap();
    assert!(shown.contains("failed"), "{shown}");
    assert!(shown.contains("charge_payment"), "{shown}");
    assert!(shown.contains("refund-payment"), "{shown}");
    let dry = sagas_cli(
        &platform,
        "operator",
        &["retry", "--status", "failed", "--dry-run"],
    )
    .await
    .unwrap();
    assert!(dry.contains("1 sagas would be retried"), "{dry}");
    assert!(dry.contains(&order), "{dry}");
    // A reader may look but not retry; nothing changes.
    let refused = sagas_cli(&platform, "reader", &["retry", &order])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");
    platform.saga_becomes(&order, "failed").await;

    platform.proxy.heal();
    let retried = sagas_cli(&platform, "operator", &["retry", &order])
        .await
        .unwrap();
    assert!(retried.contains(&order), "{retried}");
    platform.saga_becomes(&order, "compensated").await;
}
