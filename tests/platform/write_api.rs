//! The write API of ../shared/CONTRACT.md over real HTTP: each endpoint's
//! success and error cases, problem documents for bad input, `If-Match`,
//! correlation metadata and time travel.

use harness::TestEnv;
use harness::services::{self, RunningService};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

pub(crate) struct Api {
    pub(crate) client: Client,
    service: RunningService,
    pub(crate) env: TestEnv,
}

impl Api {
    pub(crate) async fn start() -> Self {
        let env = TestEnv::new().await;
        let service = services::command_service(&env).await;
        let api = Self {
            client: harness::auth::admin(),
            service,
            env,
        };
        harness::eventually(
            std::time::Duration::from_secs(30),
            "command-service up",
            || async {
                api.client
                    .get(api.url("/health/live"))
                    .send()
                    .await?
                    .error_for_status()?;
                Ok(())
            },
        )
        .await;
        api
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.service.url)
    }

    /// `path` on the internal listener (the saga's step API).
    pub(crate) fn internal_url(&self, path: &str) -> String {
        let base = self.service.internal_url.as_deref();
        format!("{}{path}", base.expect("an internal listener"))
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub(crate) async fn product(&self, sku: &str, price_cents: i64, stock: i64) -> Value {
        let response = self
            .post("/v1/products", json!({"sku": sku, "name": format!("{sku} name"), "price_cents": price_cents, "initial_stock": stock}))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub(crate) async fn customer(&self, deposit: i64) -> String {
        let response = self
            .post(
                "/v1/customers",
                json!({"name": "Ada", "email": "ada@example.com"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let id = response.json::<Value>().await.unwrap()["customer_id"]
            .as_str()
            .unwrap()
            .to_owned();
        if deposit > 0 {
            let response = self
                .post(
                    &format!("/v1/customers/{id}/deposits"),
                    json!({"amount_cents": deposit}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
        }
        id
    }
}

pub(crate) fn address(country: &str) -> Value {
    json!({"name": "Ada", "line1": "1 Analytical Way", "city": "London", "postal_code": "N1", "country": country})
}

/// Asserts a problem document with the status, slug and (if given) field.
pub(crate) async fn assert_problem(
    response: Response,
    status: StatusCode,
    slug: &str,
    field: Option<&str>,
) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "problems are application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("/problems/{slug}"), "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    if let Some(field) = field {
        assert_eq!(body["errors"][0]["field"], field, "{body}");
        assert!(body["errors"][0]["message"].is_string(), "{body}");
    }
    body
}

#[tokio::test]
async fn products_are_created_once_and_restocked() {
    let api = Api::start().await;
    let response = api
        .post(
            "/v1/products",
            json!({"sku": "mug-1", "name": "Mug", "price_cents": 1200, "initial_stock": 5}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"sku": "mug-1", "name": "Mug", "price_cents": 1200, "on_hand": 5, "reserved": 0, "available": 5, "version": 1})
    );

    let again = api
        .post(
            "/v1/products",
            json!({"sku": "mug-1", "name": "Other", "price_cents": 1}),
        )
        .await;
    // Repeating it will not help, so no `Retry-After`.
    assert!(!again.headers().contains_key("retry-after"));
    assert_problem(again, StatusCode::CONFLICT, "conflict", None).await;

    let restocked = api
        .post("/v1/products/mug-1/restock", json!({"quantity": 3}))
        .await;
    assert_eq!(restocked.status(), StatusCode::OK);
    assert_eq!(restocked.headers()["etag"], "\"2\"");
    let body: Value = restocked.json().await.unwrap();
    assert_eq!(
        (body["on_hand"].as_i64(), body["available"].as_i64()),
        (Some(8), Some(8))
    );

    // initial_stock is optional.
    let bare = api
        .post(
            "/v1/products",
            json!({"sku": "tea", "name": "Tea", "price_cents": 550}),
        )
        .await;
    assert_eq!(bare.json::<Value>().await.unwrap()["on_hand"], 0);
}

/// Commands on one stream in one process take turns (command-service's
/// `warm::Claim`) instead of racing to append: a burst of restocks of one
/// product, far more than a lost race is retried, all succeed, each
/// decided on the state the one before it left.
#[tokio::test]
async fn a_burst_of_commands_on_one_product_all_succeed_one_after_another() {
    const BURST: u64 = 128;
    let api = Api::start().await;
    api.product("hot", 100, 0).await;
    let api = &api;
    let responses = futures::future::join_all((1..=BURST).map(|quantity| async move {
        let response = api
            .post("/v1/products/hot/restock", json!({"quantity": quantity}))
            .await;
        (response.status(), response.json::<Value>().await.unwrap())
    }))
    .await;
    let mut restocks = Vec::new();
    for (status, body) in &responses {
        assert_eq!(*status, StatusCode::OK, "{body}");
        let number = |field: &str| body[field].as_u64().expect(field);
        restocks.push((number("version"), number("on_hand")));
    }
    restocks.sort_unstable();
    let versions: Vec<u64> = restocks.iter().map(|(version, _)| *version).collect();
    assert_eq!(
        versions,
        (2..=BURST + 1).collect::<Vec<_>>(),
        "one event each"
    );
    // Each answer's stock is the one before it plus its own quantity.
    let mut added: Vec<u64> = restocks
        .iter()
        .scan(0, |before, (_, on_hand)| {
            let quantity = on_hand.checked_sub(*before).expect("stock only grows");
            *before = *on_hand;
            Some(quantity)
        })
        .collect();
    added.sort_unstable();
    assert_eq!(added, (1..=BURST).collect::<Vec<_>>(), "each restock once");
    assert_eq!(
        lost_races(&api.client, &api.url("")).await,
        0,
        "no command lost a race to another of the same process"
    );
}

/// `orders_command_lost_races_total` of the command-service at `base`.
pub(crate) async fn lost_races(client: &Client, base: &str) -> u64 {
    let metrics = services::metrics(client, base).await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("orders_command_lost_races_total "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no lost races counted in {metrics}"))
}

#[tokio::test]
async fn a_long_stream_loads_from_its_snapshot_and_stays_right() {
    let api = Api::start().await;
    api.product("popular", 100, 0).await;
    let mut last = Value::Null;
    for _ in 0..250 {
        let response = api
            .post("/v1/products/popular/restock", json!({"quantity": 2}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        last = response.json().await.unwrap();
    }
    assert_eq!(
        (last["on_hand"].as_i64(), last["version"].as_i64()),
        (Some(500), Some(251))
    );

    // A snapshot was taken recently enough that a load replays fewer than
    // SNAPSHOT_EVERY (100) events after it.
    let (version, state_type): (i64, String) = sqlx::query_as(
        "select version, state_type from event_snapshots where stream_id = 'product-popular'",
    )
    .fetch_one(&api.env.pg)
    .await
    .unwrap();
    assert!((152..=251).contains(&version), "snapshot at {version}");
    // Stored under the name the aggregate declares, not a Rust type name.
    assert_eq!(state_type, "product");

    // Loads really start from it: a snapshot changed behind the store's
    // back shows in the next answer (on hand 1000 more than the events say)
    // of a command that loads (`If-Match` always does; others may decide on
    // the state kept from the last append).
    sqlx::query(
        "update event_snapshots
         set state = jsonb_set(state, '{state,on_hand}', ((state #> '{state,on_hand}')::bigint + 1000)::text::jsonb)
         where stream_id = 'product-popular'",
    )
    .execute(&api.env.pg)
    .await
    .unwrap();
    restock_loading(&api, "popular", 251, (1501, 252)).await;
}

/// Restocks one unit with `If-Match: version` (which always loads the
/// product, never a state kept warm) and checks the answer's on hand and
/// version.
async fn restock_loading(api: &Api, sku: &str, version: u64, expected: (i64, i64)) {
    let response = api
        .client
        .post(api.url(&format!("/v1/products/{sku}/restock")))
        .header("if-match", format!("\"{version}\""))
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["on_hand"].as_i64(), body["version"].as_i64()),
        (Some(expected.0), Some(expected.1)),
        "{body}"
    );
}

#[tokio::test]
async fn a_snapshot_stored_under_another_type_name_is_ignored() {
    let api = Api::start().await;
    api.product("legacy", 100, 0).await;
    for _ in 0..3 {
        let response = api
            .post("/v1/products/legacy/restock", json!({"quantity": 2}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // What builds before snapshots were named by the aggregate stored: the
    // state's Rust type name, here with a state the events contradict.
    sqlx::query(
        "insert into event_snapshots (stream_id, version, state_type, schema_version, state)
         values ('product-legacy', 4, 'domain::product::Product', 1,
                 '{\"state\": {\"on_hand\": 1000000}}'::jsonb)",
    )
    .execute(&api.env.pg)
    .await
    .unwrap();
    restock_loading(&api, "legacy", 4, (7, 5)).await;
}

#[tokio::test]
async fn product_commands_reject_bad_input() {
    let api = Api::start().await;
    api.product("mug", 1200, 5).await;
    let cases = [
        (
            json!({"sku": "bad sku!", "name": "x", "price_cents": 1}),
            "sku",
        ),
        (
            json!({"sku": "ok", "name": "x", "price_cents": -1}),
            "price_cents",
        ),
        (
            json!({"sku": "ok", "name": "x", "price_cents": "ten"}),
            "price_cents",
        ),
        (
            json!({"sku": "ok", "name": "x", "price_cents": 1.5}),
            "price_cents",
        ),
        (json!({"sku": "ok", "price_cents": 1}), "body"),
        (json!({"sku": "ok", "name": "", "price_cents": 1}), "name"),
    ];
    for (body, field) in cases {
        let response = api.post("/v1/products", body.clone()).await;
        let problem = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            None,
        )
        .await;
        let named = problem["errors"][0]["field"].as_str().unwrap();
        assert!(
            named == field || (field == "body" && named == "body"),
            "{body} named {named}: {problem}"
        );
    }
    let zero = api
        .post("/v1/products/mug/restock", json!({"quantity": 0}))
        .await;
    assert_problem(
        zero,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        Some("quantity"),
    )
    .await;
    let unknown = api
        .post("/v1/products/nope/restock", json!({"quantity": 1}))
        .await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "not-found", None).await;
    let bad_path = api
        .post("/v1/products/bad%20sku/restock", json!({"quantity": 1}))
        .await;
    assert_problem(bad_path, StatusCode::BAD_REQUEST, "validation", Some("sku")).await;
}

#[tokio::test]
async fn malformed_oversized_or_mistyped_bodies_get_4xx_problems() {
    let api = Api::start().await;
    let send = |body: Vec<u8>, content_type: &'static str| {
        api.client
            .post(api.url("/v1/products"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = send(b"{\"sku\": ".to_vec(), "application/json")
        .await
        .unwrap();
    assert_problem(
        malformed,
        StatusCode::BAD_REQUEST,
        "validation",
        Some("body"),
    )
    .await;
    let not_json = send(b"sku=mug".to_vec(), "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_problem(
        not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "validation",
        None,
    )
    .await;
    let mut huge = b"{\"sku\": \"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1024 * 1024 + 10));
    huge.extend(b"\"}");
    let oversized = send(huge, "application/json").await.unwrap();
    assert_problem(oversized, StatusCode::PAYLOAD_TOO_LARGE, "validation", None).await;
    let array = send(b"[1, 2]".to_vec(), "application/json").await.unwrap();
    assert_problem(array, StatusCode::UNPROCESSABLE_ENTITY, "validation", None).await;

    let no_route = api.get("/v1/nothing-here").await;
    assert_problem(no_route, StatusCode::NOT_FOUND, "not-found", None).await;
    let wrong_method = api.get("/v1/products").await;
    assert_problem(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        None,
    )
    .await;
}

#[tokio::test]
async fn customers_register_and_deposit() {
    let api = Api::start().await;
    let response = api
        .post(
            "/v1/customers",
            json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let id = body["customer_id"].as_str().unwrap();
    assert_eq!(body["balance_cents"], 0);
    assert_eq!(body["version"], 1);

    let deposited = api
        .post(
            &format!("/v1/customers/{id}/deposits"),
            json!({"amount_cents": 2500}),
        )
        .await;
    assert_eq!(deposited.status(), StatusCode::OK);
    assert_eq!(deposited.headers()["etag"], "\"2\"");
    let body: Value = deposited.json().await.unwrap();
    assert_eq!(
        (body["balance_cents"].as_i64(), body["customer_id"].as_str()),
        (Some(2500), Some(id))
    );

    let zero = api
        .post(
            &format!("/v1/customers/{id}/deposits"),
            json!({"amount_cents": 0}),
        )
        .await;
    assert_problem(
        zero,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        Some("amount_cents"),
    )
    .await;
    let bad_email = api
        .post("/v1/customers", json!({"name": "Ada", "email": "nope"}))
        .await;
    assert_problem(
        bad_email,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        Some("email"),
    )
    .await;
    let unknown = api
        .post(
            &format!("/v1/customers/{}/deposits", uuid::Uuid::new_v4()),
            json!({"amount_cents": 1}),
        )
        .await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "not-found", None).await;
    let bad_id = api
        .post(
            "/v1/customers/not-a-uuid/deposits",
            json!({"amount_cents": 1}),
        )
        .await;
    assert_problem(bad_id, StatusCode::BAD_REQUEST, "validation", None).await;
}

#[tokio::test]
async fn an_order_is_placed_at_catalogue_prices_and_can_be_cancelled() {
    let api = Api::start().await;
    api.product("mug", 1200, 5).await;
    api.product("tea", 550, 5).await;
    let customer = api.customer(10_000).await;

    let placed = api
        .post(
            "/v1/orders",
            json!({"customer_id": customer, "lines": [{"sku": "mug", "quantity": 2}, {"sku": "tea", "quantity": 1}], "shipping_address": address("GB")}),
        )
        .await;
    assert_eq!(placed.status(), StatusCode::ACCEPTED);
    let body: Value = placed.json().await.unwrap();
    assert_eq!(body["status"], "pending");
    assert_eq!(body["version"], 1);
    assert!(body["position"].as_i64().unwrap() > 0);
    let order_id = body["order_id"].as_str().unwrap();

    let state: Value = api
        .get(&format!("/v1/orders/{order_id}/state"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(state["total_cents"], 2950);
    assert_eq!(
        state["lines"][0],
        json!({"sku": "mug", "quantity": 2, "unit_price_cents": 1200})
    );
    assert_eq!(state["customer_id"], customer.as_str());

    let cancelled = api
        .post(
            &format!("/v1/orders/{order_id}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::ACCEPTED);
    let body: Value = cancelled.json().await.unwrap();
    assert_eq!(body["order_id"], order_id);
    assert_eq!(body["version"], 2);
    let unknown = api
        .post(
            &format!("/v1/orders/{}/cancel", uuid::Uuid::new_v4()),
            json!({"reason": "x"}),
        )
        .await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "not-found", None).await;
}

#[tokio::test]
async fn placing_an_order_validates_customer_lines_and_country() {
    let api = Api::start().await;
    api.product("mug", 1200, 5).await;
    let customer = api.customer(0).await;
    let order = |customer: &str, lines: Value, country: &str| json!({"customer_id": customer, "lines": lines, "shipping_address": address(country)});
    let cases = [
        (
            order(
                &uuid::Uuid::new_v4().to_string(),
                json!([{"sku": "mug", "quantity": 1}]),
                "GB",
            ),
            "customer_id",
        ),
        (
            order(&customer, json!([{"sku": "nope", "quantity": 1}]), "GB"),
            "lines[0].sku",
        ),
        (order(&customer, json!([]), "GB"), "lines"),
        (
            order(&customer, json!([{"sku": "mug", "quantity": 0}]), "GB"),
            "lines.quantity",
        ),
        (
            order(&customer, json!([{"sku": "mug", "quantity": -2}]), "GB"),
            "lines.quantity",
        ),
        (
            order(&customer, json!([{"sku": "mug", "quantity": 1}]), "Britain"),
            "shipping_address.country",
        ),
        (
            order(&customer, json!([{"sku": "mug", "quantity": "one"}]), "GB"),
            "lines[0].quantity",
        ),
    ];
    for (body, field) in cases {
        let response = api.post("/v1/orders", body.clone()).await;
        let problem = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            None,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
}

#[tokio::test]
async fn a_stale_if_match_gets_412_and_writes_nothing() {
    let api = Api::start().await;
    api.product("mug", 1200, 5).await;
    let stale = api
        .client
        .post(api.url("/v1/products/mug/restock"))
        .header("if-match", "\"7\"")
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(
        stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
        None,
    )
    .await;
    let events: Value = api
        .get("/v1/streams/product-mug/events")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        events["events"].as_array().unwrap().len(),
        1,
        "nothing written"
    );

    let current = api
        .client
        .post(api.url("/v1/products/mug/restock"))
        .header("if-match", "\"1\"")
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(current.status(), StatusCode::OK);
    assert_eq!(current.headers()["etag"], "\"2\"");
}

#[tokio::test]
async fn events_carry_correlation_causation_and_trace_context() {
    let api = Api::start().await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = api
        .client
        .post(api.url("/v1/products"))
        .header("x-correlation-id", "checkout-42")
        .header("traceparent", traceparent)
        .json(&json!({"sku": "mug", "name": "Mug", "price_cents": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-correlation-id"], "checkout-42");
    let generated = api
        .post(
            "/v1/products",
            json!({"sku": "tea", "name": "Tea", "price_cents": 1}),
        )
        .await;
    assert!(
        !generated.headers()["x-correlation-id"].is_empty(),
        "one is made when none is sent"
    );

    let events: Value = api
        .get("/v1/streams/product-mug/events")
        .await
        .json()
        .await
        .unwrap();
    let event = &events["events"][0];
    assert_eq!(event["type"], "ProductCreated");
    assert_eq!(event["stream_id"], "product-mug");
    assert_eq!(event["version"], 1);
    assert_eq!(event["schema_version"], 1);
    assert!(event["position"].as_i64().unwrap() > 0);
    assert!(event["event_id"].is_string() && event["recorded_at"].is_string());
    assert_eq!(event["data"]["price_cents"], 1);
    assert_eq!(event["metadata"]["correlation_id"], "checkout-42");
    assert!(
        event["metadata"]["causation_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    // The stored context is the span that appended the event (so consumers
    // have something to link to), in the caller's trace: a child of the
    // caller's span.
    let stored = event["metadata"]["traceparent"].as_str().unwrap();
    let (caller, stored): (Vec<&str>, Vec<&str>) = (
        traceparent.split('-').collect(),
        stored.split('-').collect(),
    );
    assert_eq!(stored.len(), 4, "{stored:?}");
    assert_eq!(stored[..2], caller[..2], "the caller's trace");
    // (Unless a `RUST_LOG` given to the tests turns request spans off.)
    if tracing::span_enabled!(target: "service_kit::http::trace", tracing::Level::INFO) {
        assert_ne!(stored[2], caller[2], "the server's own span");
    }
}

#[tokio::test]
async fn stream_events_page_by_version() {
    let api = Api::start().await;
    api.product("mug", 1, 0).await;
    for _ in 0..4 {
        api.post("/v1/products/mug/restock", json!({"quantity": 1}))
            .await;
    }
    let page: Value = api
        .get("/v1/streams/product-mug/events?from_version=2&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let versions: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 3]);
    let unknown = api.get("/v1/streams/product-nope/events").await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "not-found", None).await;
    let bad_limit = api.get("/v1/streams/product-mug/events?limit=0").await;
    assert_problem(
        bad_limit,
        StatusCode::BAD_REQUEST,
        "validation",
        Some("limit"),
    )
    .await;
    let bad_type = api.get("/v1/streams/product-mug/events?limit=many").await;
    assert_problem(bad_type, StatusCode::BAD_REQUEST, "validation", None).await;
}

#[tokio::test]
async fn order_state_can_be_read_as_of_a_version_or_a_time() {
    let api = Api::start().await;
    api.product("mug", 1200, 5).await;
    let customer = api.customer(0).await;
    let placed: Value = api
        .post(
            "/v1/orders",
            json!({"customer_id": customer, "lines": [{"sku": "mug", "quantity": 1}], "shipping_address": address("GB")}),
        )
        .await
        .json()
        .await
        .unwrap();
    let order_id = placed["order_id"].as_str().unwrap();
    let first: Value = api
        .get(&format!("/v1/orders/{order_id}/state"))
        .await
        .json()
        .await
        .unwrap();
    let placed_at = first["updated_at"].as_str().unwrap().to_owned();
    // Make sure the cancellation is recorded strictly later.
    harness::eventually(
        std::time::Duration::from_secs(5),
        "the clock moves",
        || async {
            anyhow::ensure!(chrono::Utc::now().to_rfc3339() > placed_at);
            Ok(())
        },
    )
    .await;
    api.post(
        &format!("/v1/orders/{order_id}/cancel"),
        json!({"reason": "x"}),
    )
    .await;

    let at_v1: Value = api
        .get(&format!("/v1/orders/{order_id}/state?as_of_version=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (at_v1["version"].as_i64(), at_v1["status"].as_str()),
        (Some(1), Some("pending"))
    );
    let now: Value = api
        .get(&format!("/v1/orders/{order_id}/state"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["version"], 2);

    let encoded = placed_at.replace('+', "%2B");
    let at_time: Value = api
        .get(&format!("/v1/orders/{order_id}/state?as_of={encoded}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(at_time["version"], 1, "{at_time}");

    let before = api
        .get(&format!(
            "/v1/orders/{order_id}/state?as_of=2000-01-01T00:00:00Z"
        ))
        .await;
    assert_problem(before, StatusCode::NOT_FOUND, "not-found", None).await;
    let beyond = api
        .get(&format!("/v1/orders/{order_id}/state?as_of_version=9"))
        .await;
    assert_problem(beyond, StatusCode::NOT_FOUND, "not-found", None).await;
    let bad = api
        .get(&format!("/v1/orders/{order_id}/state?as_of=yesterday"))
        .await;
    assert_problem(bad, StatusCode::BAD_REQUEST, "validation", None).await;
}

async fn post_with_key(api: &Api, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let response = api
        .client
        .post(api.url(path))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_response_and_writes_nothing() {
    let api = Api::start().await;
    api.product("mug", 1200, 5).await;
    let customer = api.customer(1000).await;
    let order = json!({"customer_id": customer, "lines": [{"sku": "mug", "quantity": 1}], "shipping_address": address("GB")});

    let first = post_with_key(&api, "/v1/orders", "order-key-1", order.clone()).await;
    let again = post_with_key(&api, "/v1/orders", "order-key-1", order.clone()).await;
    assert_eq!(first.0, StatusCode::ACCEPTED);
    assert_eq!(first, again, "same status, same body");

    let deposit = format!("/v1/customers/{customer}/deposits");
    let first = post_with_key(&api, &deposit, "deposit-key", json!({"amount_cents": 250})).await;
    let again = post_with_key(&api, &deposit, "deposit-key", json!({"amount_cents": 250})).await;
    assert_eq!(first, again);
    assert_eq!(first.1["balance_cents"], 1250);
    let events: Value = api
        .get(&format!("/v1/streams/customer-{customer}/events"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        events["events"].as_array().unwrap().len(),
        3,
        "registered, 1000, 250: nothing twice"
    );

    let reused = api
        .client
        .post(api.url(&deposit))
        .header("idempotency-key", "deposit-key")
        .json(&json!({"amount_cents": 999}))
        .send()
        .await
        .unwrap();
    assert_problem(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        None,
    )
    .await;
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_apply_once() {
    let api = Api::start().await;
    let customer = api.customer(0).await;
    let deposit = format!("/v1/customers/{customer}/deposits");
    let responses = futures::future::join_all(
        (0..12).map(|_| post_with_key(&api, &deposit, "same-key", json!({"amount_cents": 100}))),
    )
    .await;
    for response in &responses {
        assert_eq!(
            response, &responses[0],
            "every duplicate sees the first response"
        );
    }
    assert_eq!(responses[0].0, StatusCode::OK);
    assert_eq!(responses[0].1["balance_cents"], 100, "deposited once");
}

#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let api = Api::start().await;
    let response = api.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/products",
        "/v1/products/{sku}/restock",
        "/v1/customers",
        "/v1/customers/{id}/deposits",
        "/v1/orders",
        "/v1/orders/{id}/cancel",
        "/v1/orders/{id}/state",
        "/v1/streams/{stream_id}/events",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys()
        );
    }
    assert!(doc["components"]["schemas"]["ProblemBody"].is_object());
    // The step API is the internal listener's, and so is its document.
    assert!(paths.keys().all(|path| !path.starts_with("/internal/")));
    let internal = api
        .service
        .internal_url
        .clone()
        .expect("an internal listener");
    let doc: Value = reqwest::get(format!("{internal}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/internal/v1/orders/{id}/reserve-inventory",
        "/internal/v1/orders/{id}/mark-cancelled",
    ] {
        assert!(doc["paths"][path]["post"].is_object(), "{path}");
    }
}
