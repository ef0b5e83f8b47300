//! The gateway (compose/gateway/nginx.conf.template, the real nginx) in
//! front of the platform: one origin that answers every public route as
//! the process serving it does, read from the services' own route tables
//! (so a route added later is tried too); nothing of `/internal/...`; the
//! console's files with a policy against inline scripts; its own health.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use harness::eventually;
use harness::gateway::{Gateway, Upstreams, upstream};
use harness::platform::Platform;
use reqwest::header::{ALLOW, CONTENT_TYPE, ETAG, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use service_kit::auth::Rule;
use uuid::Uuid;

use crate::write_api::address;

/// What a client sees of an answer, everything the gateway must pass on.
#[derive(Debug, PartialEq)]
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    www_authenticate: Option<String>,
    etag: Option<String>,
    body: String,
}

async fn answer(request: RequestBuilder) -> Answer {
    let response = request.send().await.expect("sending a request");
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: response.status(),
        content_type: header(CONTENT_TYPE),
        www_authenticate: header(WWW_AUTHENTICATE),
        etag: header(ETAG),
        body: response.text().await.expect("reading a body"),
    }
}

/// `path` with its parameters filled with values that name nothing.
fn fill(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{sku}" | "{name}" => "nosuch".to_owned(),
            "{stream_id}" => format!("order-{}", Uuid::new_v4()),
            s if s.starts_with('{') => Uuid::new_v4().to_string(),
            s => s.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Each process's public `/v1/...` routes, with its upstream's name in the
/// template and its own URL.
fn tables(platform: &Platform) -> Vec<(&'static str, String, Vec<Rule>)> {
    let v1 = |rules: &[Rule]| -> Vec<Rule> {
        rules
            .iter()
            .filter(|rule| rule.path.starts_with("/v1/"))
            .cloned()
            .collect()
    };
    vec![
        (
            upstream::COMMAND_SERVICE,
            platform.command.url.clone(),
            v1(command_service::routes().rules()),
        ),
        (
            upstream::QUERY_SERVICE,
            platform.query.url.clone(),
            v1(query_service::routes().rules()),
        ),
        (
            upstream::SAGA_ORCHESTRATOR,
            platform.orchestrator_url().to_owned(),
            v1(saga_orchestrator::api::routes().rules()),
        ),
        (
            upstream::PROJECTOR,
            platform.projector.url.clone(),
            v1(projector::api::routes().rules()),
        ),
    ]
}

/// Waits until the access log has `method path` and checks that every such
/// request went to `expected` (empty: answered by the gateway itself).
async fn went_to(gateway: &Gateway, method: &Method, path: &str, expected: &str) {
    let request = format!("\"{method} {path} HTTP/1.1\"");
    eventually(Duration::from_secs(5), "the access log", || async {
        let log = gateway.access_log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&request)).collect();
        anyhow::ensure!(!lines.is_empty(), "{request} is not logged yet");
        for line in lines {
            assert!(
                line.contains(&format!("upstream={expected} ")),
                "{request} should have gone to {expected:?}: {line}"
            );
        }
        Ok(())
    })
    .await;
}

fn allow_set(value: &str) -> BTreeSet<String> {
    value
        .split(',')
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

#[tokio::test]
async fn every_route_of_every_table_reaches_its_process_and_answers_as_it_does() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(&platform).await;
    // No token: every route but the catalogue answers 401 from the guard of
    // the process whose route matched, and nothing is written.
    let anonymous = Client::new();
    let mut methods: BTreeMap<&'static str, (BTreeSet<String>, String)> = BTreeMap::new();
    for (name, url, rules) in tables(&platform) {
        for rule in rules {
            let path = fill(rule.path);
            let through =
                answer(anonymous.request(rule.method.clone(), format!("{}{path}", gateway.url)))
                    .await;
            let direct =
                answer(anonymous.request(rule.method.clone(), format!("{url}{path}"))).await;
            assert_eq!(
                through, direct,
                "{} {} through the gateway",
                rule.method, rule.path
            );
            went_to(&gateway, &rule.method, &path, name).await;

            let (allowed, owner) = methods
                .entry(rule.path)
                .or_insert_with(|| (BTreeSet::new(), url.clone()));
            allowed.insert(rule.method.to_string());
            if rule.method == Method::GET {
                allowed.insert("HEAD".to_owned());
            }
            *owner = url.clone();
        }
    }
    assert!(methods.len() > 10, "the route tables are read: {methods:?}");

    // A path that exists, with a method none of its processes takes: 405,
    // with every method some process takes there, and the services' body.
    for (template, (allowed, owner)) in &methods {
        let method = ["DELETE", "PUT", "PATCH", "POST"]
            .into_iter()
            .find(|m| !allowed.contains(*m))
            .expect("a method the path does not take");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let path = fill(template);
        let response = anonymous
            .request(method.clone(), format!("{}{path}", gateway.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {template}"
        );
        let allow = response.headers().get(ALLOW).expect("an Allow header");
        assert_eq!(
            allow_set(allow.to_str().unwrap()),
            *allowed,
            "{method} {template}"
        );
        let through =
            answer(anonymous.request(method.clone(), format!("{}{path}", gateway.url))).await;
        let direct = answer(anonymous.request(method.clone(), format!("{owner}{path}"))).await;
        assert_eq!(through, direct, "{method} {template}");
    }

    // Unknown paths: 404, the services' problem, with or without a token.
    let admin = &platform.client;
    for path in ["/v1/nothing", "/v1/orders/a/b/c", "/nothing", "/v1/orders/"] {
        for client in [&anonymous, admin] {
            let through = answer(client.get(format!("{}{path}", gateway.url))).await;
            let direct = answer(client.get(format!("{}{path}", platform.query.url))).await;
            assert_eq!(through.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(through, direct, "{path}");
        }
    }
}

#[tokio::test]
async fn an_order_placed_through_the_gateway_reads_back_as_from_the_services() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(&platform).await;
    let admin = &platform.client;
    let at = |path: &str| format!("{}{path}", gateway.url);

    let sku = format!("gw-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let created = answer(
        admin
            .post(at("/v1/products"))
            .json(&json!({"sku": sku, "name": "Lamp", "price_cents": 700, "initial_stock": 5})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let customer = admin
        .post(at("/v1/customers"))
        .json(&json!({"name": "Ada", "email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(customer.status(), StatusCode::CREATED);
    let customer: Value = customer.json().await.unwrap();
    let customer_id = customer["customer_id"].as_str().unwrap().to_owned();
    let deposit = admin
        .post(at(&format!("/v1/customers/{customer_id}/deposits")))
        .json(&json!({"amount_cents": 10_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(deposit.status(), StatusCode::OK);

    // The correlation id goes up and comes back; so does the status.
    let correlation = format!("gateway-{}", Uuid::new_v4());
    let placed = admin
        .post(at("/v1/orders"))
        .header("X-Correlation-Id", &correlation)
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .json(
            &json!({"customer_id": customer_id, "lines": [{"sku": sku, "quantity": 2}],
                      "shipping_address": address("GB")}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::ACCEPTED);
    assert_eq!(placed.headers()["x-correlation-id"], correlation.as_str());
    let placed: Value = placed.json().await.unwrap();
    assert_eq!(placed["status"], "pending");
    let order_id = placed["order_id"].as_str().unwrap().to_owned();

    // Read back through the same origin, from the query-service.
    let confirmed = format!("/v1/orders/{order_id}");
    eventually(
        Duration::from_secs(60),
        "the order is confirmed",
        || async {
            let order: Value = admin
                .get(at(&confirmed))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::ensure!(order["status"] == "confirmed", "{order}");
            Ok(())
        },
    )
    .await;
    let saga = format!("/v1/sagas/{order_id}");
    eventually(Duration::from_secs(60), "the saga is completed", || async {
        let saga: Value = admin
            .get(at(&saga))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(saga["status"] == "completed", "{saga}");
        Ok(())
    })
    .await;

    // Settled: the gateway and each service's own port answer alike, the
    // aggregate's ETag included.
    let reads = [
        (confirmed.clone(), platform.query.url.clone()),
        (saga.clone(), platform.query.url.clone()),
        (
            format!("/v1/orders/{order_id}/trace"),
            platform.command.url.clone(),
        ),
        (
            format!("/v1/orders/{order_id}/state"),
            platform.command.url.clone(),
        ),
        (
            format!("/v1/orders/{}", Uuid::new_v4()),
            platform.query.url.clone(),
        ),
    ];
    for (path, service) in reads {
        let through = answer(admin.get(at(&path))).await;
        let direct = answer(admin.get(format!("{service}{path}"))).await;
        assert_eq!(through, direct, "{path}");
    }
    let order = answer(admin.get(at(&confirmed))).await;
    assert!(order.etag.is_some(), "an order carries its ETag: {order:?}");
    let missing = answer(admin.get(at(&format!("/v1/orders/{}", Uuid::new_v4())))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.content_type.as_deref(),
        Some("application/problem+json")
    );

    // No token: the same 401 and challenge as the service's.
    let through = answer(Client::new().get(at(&confirmed))).await;
    let direct = answer(Client::new().get(format!("{}{confirmed}", platform.query.url))).await;
    assert_eq!(through.status, StatusCode::UNAUTHORIZED);
    assert!(
        through
            .www_authenticate
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer")),
        "{through:?}"
    );
    assert_eq!(through, direct);

    // The projector's list, through the gateway.
    let projections: Value = admin
        .get(at("/v1/projections"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: BTreeSet<&str> = projections
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains("orders") && names.contains("sagas"),
        "{projections}"
    );
}

#[tokio::test]
async fn the_gateway_never_forwards_internal_paths_even_to_a_service_token() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(&platform).await;
    let service = harness::auth::client("service");
    let order = Uuid::new_v4();
    let confirm = format!("/internal/v1/orders/{order}/confirm");
    let through = answer(
        service
            .post(format!("{}{confirm}", gateway.url))
            .header("X-Saga-Version", "1"),
    )
    .await;
    let public = answer(
        service
            .post(format!("{}{confirm}", platform.command.url))
            .header("X-Saga-Version", "1"),
    )
    .await;
    assert_eq!(through.status, StatusCode::NOT_FOUND);
    assert_eq!(through, public, "as command-service's public listener");
    went_to(&gateway, &Method::POST, &confirm, "").await;

    // Spelled with an encoded slash, it is still no route of the gateway's.
    let sneaky = format!("/v1/orders/..%2F..%2Finternal/v1/orders/{order}/confirm");
    let response = service
        .post(format!("{}{sneaky}", gateway.url))
        .header("X-Saga-Version", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_console_and_the_gateways_health_need_no_service() {
    // Nothing listens behind this gateway: the console and the health
    // endpoint are its own, and an API route is a 502 problem.
    let nowhere = || format!("http://127.0.0.1:{}", closed_port());
    let gateway = Gateway::start_for(Upstreams {
        command_service: nowhere(),
        query_service: nowhere(),
        saga_orchestrator: nowhere(),
        projector: nowhere(),
    })
    .await;
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let health = client
        .get(format!("{}/health/gateway", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let console = client
        .get(format!("{}/console/", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), StatusCode::OK);
    let headers = console.headers().clone();
    assert!(
        headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let page = console.text().await.unwrap();
    assert!(page.contains("<html"), "{page}");

    let root = client
        .get(format!("{}/", gateway.url))
        .send()
        .await
        .unwrap();
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(root.headers()[LOCATION], "/console/");

    let missing = answer(client.get(format!("{}/console/no-such-file.js", gateway.url))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.content_type.as_deref(),
        Some("application/problem+json")
    );

    let down = answer(client.get(format!("{}/v1/orders", gateway.url))).await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        down.content_type.as_deref(),
        Some("application/problem+json")
    );
    let problem: Value = serde_json::from_str(&down.body).unwrap();
    assert_eq!(problem["status"], 502);
}

/// A local port with nothing listening on it (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port()
}
