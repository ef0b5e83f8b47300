//! What a user sees once bearer tokens are in force (the contract's
//! "Security" section), over real HTTP against the running services: a
//! customer registers themselves once and reaches only their own data,
//! idempotency keys belong to their caller, and every write records who
//! asked (`actor`).

use std::time::Duration;

use event_store::Checkpoint;
use harness::proxy::FaultProxy;
use harness::services::{self, RunningService};
use harness::{TestEnv, eventually};
use harness::{auth, platform};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::write_api::{address, assert_problem};

/// How long the read side or a saga may take to show a write (the
/// projector's consumer joins its group first, which takes seconds).
const SETTLE: Duration = Duration::from_secs(90);

/// The services under test on one [`TestEnv`]: the command-service alone,
/// or the whole platform with the orchestrator calling the step API
/// through a fault-injecting proxy.
struct Platform {
    env: TestEnv,
    admin: Client,
    command: RunningService,
    read_side: Option<ReadSide>,
}

/// The rest of the whole platform.
struct ReadSide {
    query: RunningService,
    projector: RunningService,
    orchestrator: RunningService,
    proxy: FaultProxy,
}

impl Platform {
    /// The command-service alone.
    async fn command_only() -> Self {
        let env = TestEnv::new().await;
        let command = services::command_service(&env).await;
        let admin = auth::admin();
        let url = format!("{}/health/ready", command.url);
        eventually(Duration::from_secs(60), "command-service ready", || async {
            admin.get(&url).send().await?.error_for_status()?;
            Ok(())
        })
        .await;
        Self {
            env,
            admin,
            command,
            read_side: None,
        }
    }

    /// Command-service, projector, query-service and saga-orchestrator.
    async fn whole() -> Self {
        let whole = platform::Platform::start().await;
        Self {
            env: whole.env,
            admin: whole.client,
            command: whole.command,
            read_side: Some(ReadSide {
                query: whole.query,
                projector: whole.projector,
                orchestrator: whole.orchestrator.expect("running"),
                proxy: whole.proxy,
            }),
        }
    }

    fn side(&self) -> &ReadSide {
        self.read_side.as_ref().expect("the whole platform")
    }

    fn command_url(&self, path: &str) -> String {
        format!("{}{path}", self.command.url)
    }

    fn query_url(&self, path: &str) -> String {
        format!("{}{path}", self.side().query.url)
    }

    fn orchestrator_url(&self, path: &str) -> String {
        format!("{}{path}", self.side().orchestrator.url)
    }

    fn projector_url(&self, path: &str) -> String {
        format!("{}{path}", self.side().projector.url)
    }

    /// A stream's events as the write API shows them to an admin.
    async fn events(&self, stream_id: &str) -> Vec<Value> {
        let (status, body) = send(
            self.admin
                .get(self.command_url(&format!("/v1/streams/{stream_id}/events?limit=1000"))),
        )
        .await;
        if status == StatusCode::NOT_FOUND {
            return Vec::new();
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        body["events"].as_array().unwrap().clone()
    }

    /// The types of a stream's events.
    async fn event_types(&self, stream_id: &str) -> Vec<String> {
        self.events(stream_id)
            .await
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn product(&self, sku: &str, price_cents: i64, stock: i64) {
        let (status, body) = send(self.admin.post(self.command_url("/v1/products")).json(
            &json!({"sku": sku, "name": sku, "price_cents": price_cents, "initial_stock": stock}),
        ))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// `as_customer` registers themselves and deposits `amount_cents`;
    /// returns the version of their stream after the deposit.
    async fn register_and_deposit(&self, as_customer: &Client, id: Uuid, amount_cents: i64) -> u64 {
        let (status, body) = send(
            as_customer
                .post(self.command_url("/v1/customers"))
                .json(&json!({"name": "Ada", "email": "ada@example.com"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["customer_id"], id.to_string());
        let (status, body) = send(
            as_customer
                .post(self.command_url(&format!("/v1/customers/{id}/deposits")))
                .json(&json!({"amount_cents": amount_cents})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["balance_cents"], amount_cents);
        body["version"].as_u64().unwrap()
    }

    /// `client` places an order for `customer`; returns the 202's body.
    async fn place(&self, client: &Client, customer: Uuid, sku: &str, country: &str) -> Value {
        let (status, body) = send(
            client
                .post(self.command_url("/v1/orders"))
                .json(&order_body(customer, sku, country)),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body
    }

    /// Waits until `client`'s `GET path` on the query-service satisfies
    /// `check`; returns the body.
    async fn query_until(
        &self,
        client: &Client,
        path: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let url = self.query_url(path);
        eventually(SETTLE, what, || async {
            let (status, body) = send(client.get(&url)).await;
            anyhow::ensure!(status == StatusCode::OK, "{status}: {body}");
            anyhow::ensure!(check(&body), "{body}");
            Ok(body)
        })
        .await
    }

    /// Waits until the saga (as an admin sees it) has `status`.
    async fn saga_becomes(&self, order_id: &str, status: &str) -> Value {
        self.query_until(
            &self.admin,
            &format!("/v1/sagas/{order_id}"),
            &format!("saga {order_id} {status}"),
            |saga| saga["status"] == status,
        )
        .await
    }
}

fn order_body(customer: Uuid, sku: &str, country: &str) -> Value {
    json!({"customer_id": customer, "lines": [{"sku": sku, "quantity": 2}],
           "shipping_address": address(country)})
}

/// Sends the request; its status and JSON body (null if none).
async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn response(request: RequestBuilder) -> Response {
    request.send().await.unwrap()
}

/// A new customer id and a client holding that customer's token.
fn new_customer() -> (Uuid, Client) {
    let id = Uuid::new_v4();
    (id, auth::client_with(&auth::customer_token(id)))
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["order_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_customer_registers_themselves_once() {
    let platform = Platform::command_only().await;
    let (a, as_a) = new_customer();
    let register = |name: &'static str| {
        as_a.post(platform.command_url("/v1/customers"))
            .json(&json!({"name": name, "email": "ada@example.com"}))
    };

    let (status, body) = send(register("Ada")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["customer_id"],
        a.to_string(),
        "the id is the token's sub"
    );
    assert_eq!(body["balance_cents"], 0);
    assert_eq!(body["version"], 1);

    // Once: a second registration, even with another name, is a conflict
    // and appends nothing.
    assert_problem(
        response(register("Ada Lovelace")).await,
        StatusCode::CONFLICT,
        "conflict",
        None,
    )
    .await;
    let events = platform.events(&format!("customer-{a}")).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "CustomerRegistered");
    assert_eq!(events[0]["data"]["customer_id"], a.to_string());
    assert_eq!(events[0]["data"]["name"], "Ada");
    assert_eq!(events[0]["metadata"]["actor"], a.to_string(), "who asked");

    // A customer token whose subject is not a customer id may not write.
    let not_an_id = auth::client_with(&auth::token("customer", "ada"));
    assert_problem(
        response(
            not_an_id
                .post(platform.command_url("/v1/customers"))
                .json(&json!({"name": "Ada", "email": "ada@example.com"})),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_customer_reaches_only_their_own_account_orders_and_sagas() {
    let platform = Platform::whole().await;
    platform.product("widget", 500, 10).await;
    let (a, as_a) = new_customer();
    let (b, as_b) = new_customer();
    let a_version = platform.register_and_deposit(&as_a, a, 10_000).await;
    let b_version = platform.register_and_deposit(&as_b, b, 3_000).await;

    // Another's account: a deposit is 404 and moves nothing.
    assert_problem(
        response(
            as_a.post(platform.command_url(&format!("/v1/customers/{b}/deposits")))
                .json(&json!({"amount_cents": 1_000})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
        None,
    )
    .await;
    assert_eq!(
        platform.event_types(&format!("customer-{b}")).await,
        ["CustomerRegistered", "FundsDeposited"]
    );
    let (status, seen) = send(
        platform
            .admin
            .get(platform.query_url(&format!("/v1/customers/{b}?min_version={b_version}"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["balance_cents"], 3_000);

    // Reading customers: one's own, not another's.
    let (status, own) =
        send(as_a.get(platform.query_url(&format!("/v1/customers/{a}?min_version={a_version}"))))
            .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["balance_cents"], 10_000);
    assert_problem(
        response(
            as_a.get(platform.query_url(&format!("/v1/customers/{b}?min_version={b_version}"))),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
        None,
    )
    .await;

    // An order for another customer: 403, and no order is placed.
    assert_problem(
        response(
            as_a.post(platform.command_url("/v1/orders"))
                .json(&order_body(b, "widget", "GB")),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    )
    .await;

    // An order for oneself.
    let placed = platform.place(&as_a, a, "widget", "GB").await;
    let order = placed["order_id"].as_str().unwrap().to_owned();
    let order_version = placed["version"].as_u64().unwrap();
    // A third customer's order, which A and B must not see either.
    let (c, as_c) = new_customer();
    platform.register_and_deposit(&as_c, c, 5_000).await;
    let others = platform.place(&as_c, c, "widget", "GB").await["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, seen) = send(
        as_a.get(platform.query_url(&format!("/v1/orders/{order}?min_version={order_version}"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["customer_id"], a.to_string());
    // Another customer sees no such order, though it is in the read model.
    assert_problem(
        response(
            as_b.get(
                platform.query_url(&format!("/v1/orders/{order}?min_version={order_version}")),
            ),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
        None,
    )
    .await;

    // Nor may they cancel it: 404, and no cancellation is requested.
    assert_problem(
        response(
            as_b.post(platform.command_url(&format!("/v1/orders/{order}/cancel")))
                .json(&json!({"reason": "not mine"})),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
        None,
    )
    .await;
    let confirmed = platform
        .query_until(
            &as_a,
            &format!("/v1/orders/{order}"),
            &format!("order {order} confirmed"),
            |order| order["status"] == "confirmed",
        )
        .await;
    assert_eq!(confirmed["customer_id"], a.to_string());
    let order_events = platform.event_types(&format!("order-{order}")).await;
    assert!(
        !order_events.iter().any(|t| t.contains("Cancel")),
        "{order_events:?}"
    );

    // Lists: each customer sees only their own orders, whatever the filter
    // (C's order is in the read model by now).
    platform
        .query_until(
            &platform.admin,
            &format!("/v1/orders/{others}"),
            "C's order in the read model",
            |_| true,
        )
        .await;
    let (status, mine) = send(as_a.get(platform.query_url("/v1/orders"))).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(ids(&mine), [order.as_str()]);
    let (status, mine) =
        send(as_a.get(platform.query_url(&format!("/v1/orders?customer_id={a}")))).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(ids(&mine), [order.as_str()]);
    for path in [
        "/v1/orders".to_owned(),
        format!("/v1/orders?customer_id={a}"),
    ] {
        let (status, theirs) = send(as_b.get(platform.query_url(&path))).await;
        assert_eq!(status, StatusCode::OK, "{path}: {theirs}");
        assert_eq!(ids(&theirs), Vec::<String>::new(), "{path}");
    }
    // The order A tried to place for B does not exist anywhere: not in the
    // read model (which has A's later order by now) ...
    let (status, bs) = send(
        platform
            .admin
            .get(platform.query_url(&format!("/v1/orders?customer_id={b}"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{bs}");
    assert_eq!(ids(&bs), Vec::<String>::new());
    // ... nor in the event log.
    let placed_for_b = platform
        .env
        .event_store()
        .await
        .read_all(Checkpoint::START, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "OrderPlaced" && e.data["customer_id"] == b.to_string())
        .count();
    assert_eq!(placed_for_b, 0);

    // Sagas: one's own order's saga, not another's.
    let saga = platform
        .query_until(
            &as_a,
            &format!("/v1/sagas/{order}"),
            &format!("saga of {order} visible to its customer"),
            |saga| saga["status"] == "completed",
        )
        .await;
    assert_eq!(saga["order_id"], order.as_str(), "{saga}");
    assert_problem(
        response(as_b.get(platform.query_url(&format!("/v1/sagas/{order}")))).await,
        StatusCode::NOT_FOUND,
        "not-found",
        None,
    )
    .await;
    // The saga list shows a customer the sagas of their own orders only.
    platform.saga_becomes(&others, "completed").await;
    let (status, all) = send(platform.admin.get(platform.query_url("/v1/sagas"))).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let mut every = ids(&all);
    every.sort();
    let mut both = [order.clone(), others.clone()];
    both.sort();
    assert_eq!(every, both);
    let (status, mine) = send(as_a.get(platform.query_url("/v1/sagas"))).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(ids(&mine), [order.as_str()]);
    let (status, theirs) = send(as_b.get(platform.query_url("/v1/sagas"))).await;
    assert_eq!(status, StatusCode::OK, "{theirs}");
    assert_eq!(ids(&theirs), Vec::<String>::new());

    // Event streams, time travel, operator actions: 403 to a customer, even
    // for their own data.
    for forbidden in [
        as_a.get(platform.command_url(&format!("/v1/streams/customer-{a}/events"))),
        as_a.get(platform.command_url(&format!("/v1/orders/{order}/state"))),
        as_a.post(platform.orchestrator_url(&format!("/v1/sagas/{order}/retry"))),
        as_a.post(platform.projector_url("/v1/projections/orders/rebuild")),
    ] {
        assert_problem(
            response(forbidden).await,
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        )
        .await;
    }

    // The balances: A paid for their order, B was never touched.
    platform
        .query_until(
            &as_a,
            &format!("/v1/customers/{a}"),
            "A charged once",
            |c| c["balance_cents"] == 9_000,
        )
        .await;
    let (status, seen) = send(as_b.get(platform.query_url(&format!("/v1/customers/{b}")))).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    assert_eq!(seen["balance_cents"], 3_000);
}

#[tokio::test]
async fn idempotency_keys_belong_to_their_caller() {
    let platform = Platform::command_only().await;
    let writer = |sub: &str| auth::client_with(&auth::token("writer", sub));
    let (w1, w2) = (writer("writer-1"), writer("writer-2"));
    let x = json!({"name": "Ada", "email": "ada@example.com"});
    let y = json!({"name": "Grace", "email": "grace@example.com"});
    let register = |client: &Client, key: &str, body: &Value| {
        client
            .post(platform.command_url("/v1/customers"))
            .header("Idempotency-Key", key)
            .json(body)
    };

    // The same caller repeating a request gets the first response.
    let (status, first) = send(register(&w1, "k1", &x)).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id1 = first["customer_id"].as_str().unwrap().to_owned();
    let (status, again) = send(register(&w1, "k1", &x)).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again, first, "replayed");
    assert_eq!(platform.events(&format!("customer-{id1}")).await.len(), 1);

    // Another caller's same key and body: a new request, a new customer.
    let (status, other) = send(register(&w2, "k1", &x)).await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let id2 = other["customer_id"].as_str().unwrap().to_owned();
    assert_ne!(id2, id1, "ids derive from (sub, key)");
    assert_eq!(platform.events(&format!("customer-{id2}")).await.len(), 1);
    assert_eq!(platform.events(&format!("customer-{id1}")).await.len(), 1);

    // Each caller's key is bound to that caller's first request.
    for client in [&w1, &w2] {
        assert_problem(
            response(register(client, "k1", &y)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            None,
        )
        .await;
    }
    // And replays still go to each their own.
    let (_, again) = send(register(&w2, "k1", &x)).await;
    assert_eq!(again, other);

    // Deposits: a customer's repeat replays, the money moves once.
    let (a, as_a) = new_customer();
    let (b, as_b) = new_customer();
    for (id, client) in [(a, &as_a), (b, &as_b)] {
        let (status, body) =
            send(client.post(platform.command_url("/v1/customers")).json(&x)).await;
        assert_eq!(status, StatusCode::CREATED, "{id}: {body}");
    }
    let deposit = |client: &Client, to: Uuid| {
        client
            .post(platform.command_url(&format!("/v1/customers/{to}/deposits")))
            .header("Idempotency-Key", "deposit-1")
            .json(&json!({"amount_cents": 700}))
    };
    let (status, first) = send(deposit(&as_a, a)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["balance_cents"], 700);
    let (status, again) = send(deposit(&as_a, a)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first, "replayed");
    assert_eq!(
        platform.event_types(&format!("customer-{a}")).await,
        ["CustomerRegistered", "FundsDeposited"],
        "deposited once"
    );

    // B using A's key on B's own account: a new deposit.
    let (status, bs) = send(deposit(&as_b, b)).await;
    assert_eq!(status, StatusCode::OK, "{bs}");
    assert_eq!(bs["customer_id"], b.to_string());
    assert_eq!(bs["balance_cents"], 700);
    let (_, again) = send(deposit(&as_b, b)).await;
    assert_eq!(again, bs, "B's own repeat replays B's response");
    assert_eq!(
        platform.event_types(&format!("customer-{b}")).await,
        ["CustomerRegistered", "FundsDeposited"]
    );
    assert_eq!(
        platform.event_types(&format!("customer-{a}")).await,
        ["CustomerRegistered", "FundsDeposited"],
        "A's account untouched"
    );

    // A third customer sending A's very request (key, path and body) is
    // not given A's stored response: it is their own request, for an
    // account they cannot see.
    let (_, as_c) = new_customer();
    assert_problem(
        response(deposit(&as_c, a)).await,
        StatusCode::NOT_FOUND,
        "not-found",
        None,
    )
    .await;
    assert_eq!(
        platform.event_types(&format!("customer-{a}")).await,
        ["CustomerRegistered", "FundsDeposited"]
    );
}

#[tokio::test]
async fn every_write_records_its_actor_and_only_operators_retry_sagas() {
    let platform = Platform::whole().await;
    let writer = auth::client("writer");
    let operator = auth::client_with(&auth::token("operator", "ops-alice"));
    platform.product("vase", 1_500, 4).await;

    // Written by `test-writer`: every event of each first append says so.
    let (status, registered) = send(
        writer
            .post(platform.command_url("/v1/customers"))
            .json(&json!({"name": "Ada", "email": "ada@example.com"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let customer: Uuid = registered["customer_id"].as_str().unwrap().parse().unwrap();
    let (status, deposited) = send(
        writer
            .post(platform.command_url(&format!("/v1/customers/{customer}/deposits")))
            .json(&json!({"amount_cents": 10_000})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{deposited}");
    for event in platform.events(&format!("customer-{customer}")).await {
        assert_eq!(event["metadata"]["actor"], "test-writer", "{event}");
    }
    let placed = platform.place(&writer, customer, "vase", "GB").await;
    let order = placed["order_id"].as_str().unwrap().to_owned();
    let first_append = placed["version"].as_u64().unwrap();
    let events = platform.events(&format!("order-{order}")).await;
    let firsts: Vec<&Value> = events
        .iter()
        .filter(|e| e["version"].as_u64().unwrap() <= first_append)
        .collect();
    assert_eq!(firsts.len() as u64, first_append, "{events:?}");
    assert_eq!(firsts[0]["type"], "OrderPlaced");
    for event in firsts {
        assert_eq!(event["metadata"]["actor"], "test-writer", "{event}");
    }

    // A saga that is not failed: a writer may not retry it, an operator is
    // told it cannot be retried.
    platform.saga_becomes(&order, "completed").await;
    let retry = |client: &Client, order: &str| {
        client.post(platform.orchestrator_url(&format!("/v1/sagas/{order}/retry")))
    };
    assert_problem(
        response(retry(&writer, &order)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    )
    .await;
    assert_problem(
        response(retry(&operator, &order)).await,
        StatusCode::CONFLICT,
        "conflict",
        None,
    )
    .await;

    // A failed saga (its refund keeps failing; Brazil is not served) is
    // retried by an operator, who is recorded as the retry's actor.
    let proxy = &platform.side().proxy;
    proxy.fail(&["refund-payment"]);
    let failing = platform.place(&writer, customer, "vase", "BR").await;
    let failing = failing["order_id"].as_str().unwrap().to_owned();
    platform.saga_becomes(&failing, "failed").await;
    assert_problem(
        response(retry(&writer, &failing)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    )
    .await;
    let (_, as_someone) = new_customer();
    assert_problem(
        response(retry(&as_someone, &failing)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    )
    .await;
    assert!(
        !platform
            .event_types(&format!("saga-{failing}"))
            .await
            .iter()
            .any(|t| t == "SagaRetryRequested"),
        "refused retries record nothing"
    );
    proxy.heal();
    let (status, body) = send(retry(&operator, &failing)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    platform.saga_becomes(&failing, "compensated").await;
    let retries: Vec<Value> = platform
        .events(&format!("saga-{failing}"))
        .await
        .into_iter()
        .filter(|e| e["type"] == "SagaRetryRequested")
        .collect();
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert_eq!(retries[0]["metadata"]["actor"], "ops-alice");
}
