//! The contract's "Security" section over real HTTP, on every listener of
//! every process:
//!
//! - the route × role × method matrix, read from the services' own route
//!   tables (so a route added later is tried too), checked against the
//!   roles each rule admits and, independently, against a hard-coded
//!   summary of the contract's role table, so a wrong rule in a table
//!   fails here instead of being trusted;
//! - unknown paths are 404 with or without a token, and the public
//!   listener has no step API even for a `service` token;
//! - forged, expired, misaddressed and otherwise invalid tokens are 401 on
//!   every listener, with a problem document and a `Bearer` challenge,
//!   and write nothing.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::join_all;
use harness::TestEnv;
use harness::auth::signing_key;
use harness::services::{self, RunningService};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use service_kit::auth::keys::{Claims, SigningKey};
use service_kit::auth::{Access, PLATFORM_AUDIENCE, PLATFORM_ISSUER, Role, Rule};
use uuid::Uuid;

const COMMAND: &str = "command-service";
const INTERNAL: &str = "command-service (internal)";
const QUERY: &str = "query-service";
const PROJECTOR: &str = "projector";
const ORCHESTRATOR: &str = "saga-orchestrator";

/// One listener: where it is and the rules its route table declares.
struct Listener {
    name: &'static str,
    url: String,
    rules: Vec<Rule>,
}

/// Every process of the platform on one test environment.
struct Platform {
    listeners: Vec<Listener>,
    _services: Vec<RunningService>,
    _env: TestEnv,
}

impl Platform {
    async fn start() -> Self {
        let env = TestEnv::new().await;
        let command = services::command_service(&env).await;
        let internal_url = command.internal_url.clone().expect("an internal listener");
        let query = services::query_service(&env).await;
        let projector = services::projector(&env).await;
        let orchestrator = services::saga_orchestrator(&env, &internal_url, |_| {}).await;

        // The operational endpoints are on every public listener, public.
        let with_ops = |mut rules: Vec<Rule>| {
            rules.extend(service_kit::ops::PATHS.iter().map(|path| Rule {
                method: Method::GET,
                path,
                access: Access::Public,
            }));
            rules
        };
        let listeners = vec![
            Listener {
                name: COMMAND,
                url: command.url.clone(),
                rules: with_ops(command_service::routes().rules().to_vec()),
            },
            Listener {
                name: INTERNAL,
                url: internal_url,
                rules: command_service::internal_routes().rules().to_vec(),
            },
            Listener {
                name: QUERY,
                url: query.url.clone(),
                rules: with_ops(query_service::routes().rules().to_vec()),
            },
            Listener {
                name: PROJECTOR,
                url: projector.url.clone(),
                rules: with_ops(projector::api::routes().rules().to_vec()),
            },
            Listener {
                name: ORCHESTRATOR,
                url: orchestrator.url.clone(),
                rules: with_ops(saga_orchestrator::api::routes().rules().to_vec()),
            },
        ];
        let platform = Self {
            listeners,
            _services: vec![command, query, projector, orchestrator],
            _env: env,
        };
        // Every listener answers (an unknown path: 404) before the test.
        let client = Client::new();
        for listener in &platform.listeners {
            harness::eventually(Duration::from_secs(30), listener.name, || async {
                let response = client
                    .get(format!("{}/no-such-path", listener.url))
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == StatusCode::NOT_FOUND);
                Ok(())
            })
            .await;
        }
        platform
    }

    fn url(&self, listener: &str, path: &str) -> String {
        let listener = self
            .listeners
            .iter()
            .find(|l| l.name == listener)
            .expect("a listener of the platform");
        format!("{}{path}", listener.url)
    }
}

/// The roles a token naming `role` holds, with those it includes.
fn holding(role: Role) -> BTreeSet<Role> {
    role.includes().iter().copied().collect()
}

/// A token for `role`: a customer's subject is a fresh customer id.
fn token_for(role: Role) -> String {
    match role {
        Role::Customer => harness::auth::customer_token(Uuid::new_v4()),
        other => harness::auth::token(other.as_str(), &format!("test-{}", other.as_str())),
    }
}

/// `path` with its parameters filled: ids that exist nowhere, a SKU and
/// a projection name that name nothing.
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

/// What the contract's role table says about some routes, written down
/// here rather than read from the route tables: `None` is public.
fn contract() -> Vec<(&'static str, Method, &'static str, Option<Vec<Role>>)> {
    use Role::*;
    let readers = || Some(vec![Reader, Writer, Operator, Admin]);
    let customers_and_readers = || Some(vec![Customer, Reader, Writer, Operator, Admin]);
    let mut expected = vec![
        (
            COMMAND,
            Method::POST,
            "/v1/products",
            Some(vec![Writer, Admin]),
        ),
        (
            COMMAND,
            Method::POST,
            "/v1/products/{sku}/restock",
            Some(vec![Writer, Admin]),
        ),
        (
            COMMAND,
            Method::POST,
            "/v1/orders",
            Some(vec![Writer, Admin, Customer]),
        ),
        (
            COMMAND,
            Method::POST,
            "/v1/orders/{id}/cancel",
            Some(vec![Writer, Admin, Customer]),
        ),
        (
            COMMAND,
            Method::POST,
            "/v1/customers",
            Some(vec![Writer, Admin, Customer]),
        ),
        (
            COMMAND,
            Method::POST,
            "/v1/customers/{id}/deposits",
            Some(vec![Writer, Admin, Customer]),
        ),
        (
            COMMAND,
            Method::GET,
            "/v1/streams/{stream_id}/events",
            readers(),
        ),
        (COMMAND, Method::GET, "/v1/orders/{id}/trace", readers()),
        (
            INTERNAL,
            Method::POST,
            "/internal/v1/orders/{id}/refund-payment",
            Some(vec![Service]),
        ),
        (
            INTERNAL,
            Method::POST,
            "/internal/v1/orders/{id}/release-inventory",
            Some(vec![Service]),
        ),
        (
            INTERNAL,
            Method::POST,
            "/internal/v1/orders/{id}/confirm",
            Some(vec![Service]),
        ),
        (QUERY, Method::GET, "/v1/products/{sku}", None),
        (QUERY, Method::GET, "/v1/orders", customers_and_readers()),
        (
            QUERY,
            Method::GET,
            "/v1/orders/{id}",
            customers_and_readers(),
        ),
        (
            QUERY,
            Method::GET,
            "/v1/customers/{id}",
            customers_and_readers(),
        ),
        (QUERY, Method::GET, "/v1/sagas", customers_and_readers()),
        (
            QUERY,
            Method::GET,
            "/v1/sagas/{order_id}",
            customers_and_readers(),
        ),
        (QUERY, Method::GET, "/v1/reports/daily-sales", readers()),
        (PROJECTOR, Method::GET, "/v1/projections", readers()),
        (
            PROJECTOR,
            Method::POST,
            "/v1/projections/{name}/rebuild",
            Some(vec![Operator, Admin]),
        ),
        (
            ORCHESTRATOR,
            Method::POST,
            "/v1/sagas/{order_id}/retry",
            Some(vec![Operator, Admin]),
        ),
        (
            ORCHESTRATOR,
            Method::POST,
            "/v1/sagas/retry",
            Some(vec![Operator, Admin]),
        ),
        (
            ORCHESTRATOR,
            Method::GET,
            "/v1/sagas/retry/{job_id}",
            readers(),
        ),
    ];
    for listener in [COMMAND, QUERY, PROJECTOR, ORCHESTRATOR] {
        for path in service_kit::ops::PATHS {
            expected.push((listener, Method::GET, path, None));
        }
    }
    // The API description, on every listener, the internal one included.
    for listener in [COMMAND, INTERNAL, QUERY, PROJECTOR, ORCHESTRATOR] {
        for path in ["/openapi.json", "/docs"] {
            expected.push((listener, Method::GET, path, None));
        }
    }
    expected
}

/// The contract's general statements about roles, for every rule:
/// `None` when the rule keeps them.
fn breaks_the_contract(listener: &str, rule: &Rule) -> Option<String> {
    let Access::Roles(_) = rule.access else {
        return None;
    };
    let admits = |role: Role| rule.access.admits(&holding(role));
    let internal = listener == INTERNAL;
    if internal {
        // The step API: the service role only.
        for role in Role::ALL {
            if admits(role) != (role == Role::Service) {
                return Some(format!("the step API must admit only service ({role:?})"));
            }
        }
        return None;
    }
    if admits(Role::Service) {
        return Some("service: 403 on every public route".into());
    }
    if !admits(Role::Admin) {
        return Some("admin may do everything writer and operator may".into());
    }
    if rule.method == Method::GET && !admits(Role::Reader) {
        return Some("reader: every GET of the write, read and operator APIs".into());
    }
    if rule.method != Method::GET && admits(Role::Reader) {
        return Some("reader: only GETs".into());
    }
    if listener == COMMAND && rule.method == Method::POST && !admits(Role::Writer) {
        return Some("writer: every public POST of command-service".into());
    }
    if listener != COMMAND && rule.method == Method::POST && admits(Role::Writer) {
        return Some("writer: only command-service's POSTs".into());
    }
    if listener != COMMAND && rule.method == Method::POST && !admits(Role::Operator) {
        return Some("operator: the operator actions".into());
    }
    if listener == COMMAND && rule.method == Method::POST && admits(Role::Operator) {
        return Some("operator: no write of command-service".into());
    }
    let customer_forbidden = matches!(listener, PROJECTOR | ORCHESTRATOR)
        || rule.path.starts_with("/v1/streams")
        || rule.path.starts_with("/v1/reports");
    if customer_forbidden && admits(Role::Customer) {
        return Some(
            "customer: event streams, reports, projections and operator actions are 403".into(),
        );
    }
    None
}

/// One request of the matrix and what it must answer.
struct Case<'a> {
    listener: &'static str,
    url: String,
    rule: &'a Rule,
    /// `None`: no token.
    role: Option<Role>,
}

impl Case<'_> {
    fn describe(&self, status: StatusCode) -> String {
        let who = self
            .role
            .map_or("no token".to_owned(), |r| format!("{r:?}"));
        format!(
            "{} {} {} with {who}: {status}",
            self.listener, self.rule.method, self.rule.path
        )
    }

    /// `None` when the answer is the one the rule calls for.
    async fn run(&self, client: &Client, tokens: &[(Role, String)]) -> Option<String> {
        let mut request = client.request(self.rule.method.clone(), &self.url);
        if self.rule.method == Method::POST {
            request = request.json(&json!({}));
        }
        if let Some(role) = self.role {
            let token = &tokens.iter().find(|(r, _)| *r == role).unwrap().1;
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Some(format!(
                    "{}: {error}",
                    self.describe(StatusCode::IM_A_TEAPOT)
                ));
            }
        };
        let status = response.status();
        let fail = |why: &str| Some(format!("{}: {why}", self.describe(status)));
        match (self.rule.access, self.role) {
            (Access::Public, _) => {
                if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                    return fail("a public route must not ask for a token");
                }
                None
            }
            (Access::Roles(_), None) => {
                if status != StatusCode::UNAUTHORIZED {
                    return fail("no token must be 401");
                }
                problem_with_challenge(response, "unauthorized")
                    .await
                    .and_then(|why| fail(&why))
            }
            (access, Some(role)) if access.admits(&holding(role)) => {
                if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                    return fail("an admitted role was refused");
                }
                if status.is_server_error() {
                    let body = response.text().await.unwrap_or_default();
                    return fail(&format!("a server error for an admitted role: {body}"));
                }
                None
            }
            (_, Some(_)) => {
                if status != StatusCode::FORBIDDEN {
                    return fail("a role the route does not admit must be 403");
                }
                problem_with_challenge(response, "forbidden")
                    .await
                    .and_then(|why| fail(&why))
            }
        }
    }
}

/// `None` when `response` is an `application/problem+json` of `slug`
/// with a `Bearer` challenge.
async fn problem_with_challenge(response: Response, slug: &str) -> Option<String> {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.unwrap_or_default();
    if !challenge.starts_with("Bearer") {
        return Some(format!("WWW-Authenticate is {challenge:?}, not Bearer"));
    }
    if content_type != "application/problem+json" {
        return Some(format!("content type {content_type:?}"));
    }
    if body["type"] != format!("/problems/{slug}") {
        return Some(format!("problem {body}"));
    }
    None
}

/// Every rule of every route table (and the operational endpoints), with
/// no token and with a token of each role, answers as its rule says; the
/// rules agree with the contract's role table.
#[tokio::test]
async fn every_route_answers_every_role_as_its_rule_and_the_contract_say() {
    let platform = Platform::start().await;
    let mut failures = Vec::new();

    // The rules against the contract, before any request.
    for (listener, method, path, admitted) in contract() {
        let Some(rule) = platform
            .listeners
            .iter()
            .filter(|l| l.name == listener)
            .flat_map(|l| &l.rules)
            .find(|r| r.method == method && r.path == path)
        else {
            failures.push(format!("{listener} {method} {path}: no such route"));
            continue;
        };
        match (admitted, rule.access) {
            (None, Access::Public) => {}
            (None, access) => failures.push(format!(
                "{listener} {method} {path}: the contract makes it public, the table {access:?}"
            )),
            (Some(_), Access::Public) => failures.push(format!(
                "{listener} {method} {path}: public in the table, not in the contract"
            )),
            (Some(roles), access) => {
                for role in Role::ALL {
                    if access.admits(&holding(role)) != roles.contains(&role) {
                        failures.push(format!(
                            "{listener} {method} {path}: the contract says {role:?} {}",
                            if roles.contains(&role) {
                                "may call it"
                            } else {
                                "may not"
                            }
                        ));
                    }
                }
            }
        }
    }
    for listener in &platform.listeners {
        for rule in &listener.rules {
            if let Some(why) = breaks_the_contract(listener.name, rule) {
                failures.push(format!(
                    "{} {} {}: {why}",
                    listener.name, rule.method, rule.path
                ));
            }
        }
    }

    // The matrix, over HTTP.
    let tokens: Vec<(Role, String)> = Role::ALL.iter().map(|&r| (r, token_for(r))).collect();
    let mut cases = Vec::new();
    for listener in &platform.listeners {
        for rule in &listener.rules {
            for role in std::iter::once(None).chain(Role::ALL.map(Some)) {
                cases.push(Case {
                    listener: listener.name,
                    url: format!("{}{}", listener.url, fill(rule.path)),
                    rule,
                    role,
                });
            }
        }
    }
    let client = Client::new();
    let total = cases.len();
    for chunk in cases.chunks(24) {
        let results = join_all(chunk.iter().map(|case| case.run(&client, &tokens))).await;
        failures.extend(results.into_iter().flatten());
    }

    // Unknown paths: 404 on every listener, with a token or without.
    let admin = token_for(Role::Admin);
    let service = token_for(Role::Service);
    for listener in &platform.listeners {
        for (method, path) in [
            (Method::GET, format!("/v1/no-such-thing/{}", Uuid::new_v4())),
            (Method::POST, format!("/no/such/{}", Uuid::new_v4())),
        ] {
            for token in [None, Some(&admin), Some(&service)] {
                let mut request = client.request(method.clone(), format!("{}{path}", listener.url));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let status = request.send().await.unwrap().status();
                if status != StatusCode::NOT_FOUND {
                    failures.push(format!(
                        "{} {method} {path} (token: {}): {status}, not 404",
                        listener.name,
                        token.is_some()
                    ));
                }
            }
        }
    }

    // The public listener has no step API, not even for a service token.
    for step in ["refund-payment", "release-inventory", "confirm"] {
        let path = format!("/internal/v1/orders/{}/{step}", Uuid::new_v4());
        let response = client
            .post(platform.url(COMMAND, &path))
            .bearer_auth(&service)
            .header("x-saga-version", "1")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::NOT_FOUND {
            failures.push(format!(
                "{COMMAND} POST {path} with a service token: {}, not 404",
                response.status()
            ));
        }
    }

    // A customer token's subject must be a customer id (a UUID).
    let not_a_customer_id = harness::auth::token("customer", "test-customer");
    for (listener, method, path) in [
        (COMMAND, Method::POST, "/v1/orders"),
        (QUERY, Method::GET, "/v1/orders"),
    ] {
        let response = client
            .request(method.clone(), platform.url(listener, path))
            .bearer_auth(&not_a_customer_id)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let why = if status == StatusCode::FORBIDDEN {
            problem_with_challenge(response, "forbidden").await
        } else {
            Some("not 403".into())
        };
        if let Some(why) = why {
            failures.push(format!(
                "{listener} {method} {path} with a customer token whose sub is no UUID: \
                 {status}: {why}"
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {total} requests or rules are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that every route would admit if they were signed by a trusted
/// key: admin and service.
fn claims(overrides: Value) -> Value {
    let now = now();
    let mut claims = json!({
        "iss": PLATFORM_ISSUER,
        "aud": PLATFORM_AUDIENCE,
        "sub": "test-forger",
        "roles": ["admin", "service"],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    for (name, value) in overrides.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// `Authorization` header values that must all be refused with 401.
fn forgeries() -> Vec<(&'static str, Option<String>)> {
    let key = signing_key();
    let kid = key.kid().to_owned();
    let bearer = |token: String| Some(format!("Bearer {token}"));
    let hs256 = |secret: &[u8]| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(
            &header,
            &claims(json!({})),
            &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    };
    let jwk = key.jwk();
    let x = jwk["x"].as_str().unwrap().to_owned();
    let x_bytes = URL_SAFE_NO_PAD.decode(&x).unwrap();
    let reader = key
        .mint(&Claims {
            issuer: PLATFORM_ISSUER.into(),
            audience: PLATFORM_AUDIENCE.into(),
            subject: "test-reader".into(),
            roles: vec!["reader".into()],
            ttl: Duration::from_secs(3600),
        })
        .unwrap();
    let reader_parts: Vec<&str> = reader.split('.').collect();
    let two_hours = 2 * 3600;
    vec![
        ("no Authorization header", None),
        ("Bearer garbage", bearer("garbage".into())),
        ("an empty bearer token", Some("Bearer ".into())),
        ("the Basic scheme", Some("Basic dXNlcjpwYXNz".into())),
        (
            "the token without a scheme",
            Some(key.mint_raw(&claims(json!({}))).unwrap()),
        ),
        (
            "alg: none",
            bearer(format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims(json!({})))
            )),
        ),
        (
            "alg: none with the trusted kid",
            bearer(format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
                b64(&claims(json!({})))
            )),
        ),
        (
            "alg: RS256 on the Ed25519 key",
            bearer(format!(
                "{}.{}.{}",
                b64(&json!({"alg": "RS256", "typ": "JWT", "kid": kid})),
                b64(&claims(json!({}))),
                reader_parts[2]
            )),
        ),
        (
            "signed by a foreign key with the trusted kid",
            bearer(
                SigningKey::generate(&kid)
                    .mint_raw(&claims(json!({})))
                    .unwrap(),
            ),
        ),
        (
            "signed by a foreign key with an unknown kid",
            bearer(
                SigningKey::generate(&format!("unknown-{}", Uuid::new_v4()))
                    .mint_raw(&claims(json!({})))
                    .unwrap(),
            ),
        ),
        (
            "HS256 with the public key's bytes as the secret",
            bearer(hs256(&x_bytes)),
        ),
        (
            "HS256 with the JWK's x as the secret",
            bearer(hs256(x.as_bytes())),
        ),
        (
            "HS256 with the JWK document as the secret",
            bearer(hs256(jwk.to_string().as_bytes())),
        ),
        (
            "a reader token with an admin payload swapped in",
            bearer(format!(
                "{}.{}.{}",
                reader_parts[0],
                b64(&claims(json!({}))),
                reader_parts[2]
            )),
        ),
        (
            "no exp",
            bearer(key.mint_raw(&claims(json!({"exp": null}))).unwrap()),
        ),
        (
            "expired two hours ago",
            bearer(
                key.mint_raw(&claims(json!({
                    "iat": now() - 3 * two_hours,
                    "nbf": now() - 3 * two_hours,
                    "exp": now() - two_hours,
                })))
                .unwrap(),
            ),
        ),
        (
            "another audience",
            bearer(
                key.mint_raw(&claims(json!({"aud": "someone-else"})))
                    .unwrap(),
            ),
        ),
        (
            "no audience",
            bearer(key.mint_raw(&claims(json!({"aud": null}))).unwrap()),
        ),
        (
            "an untrusted issuer",
            bearer(
                key.mint_raw(&claims(json!({"iss": "evil-issuer"})))
                    .unwrap(),
            ),
        ),
        (
            "no issuer",
            bearer(key.mint_raw(&claims(json!({"iss": null}))).unwrap()),
        ),
        (
            "nbf two hours ahead",
            bearer(
                key.mint_raw(&claims(json!({"nbf": now() + two_hours})))
                    .unwrap(),
            ),
        ),
        (
            "no subject",
            bearer(key.mint_raw(&claims(json!({"sub": null}))).unwrap()),
        ),
    ]
}

/// Every forged or invalid token is 401 (a problem document with a
/// `Bearer` challenge) on every listener, and writes nothing; the same
/// claims validly signed pass every listener's guard.
#[tokio::test]
async fn forged_and_invalid_tokens_are_401_on_every_listener_and_write_nothing() {
    let platform = Platform::start().await;
    let sku = format!("forged-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let product = json!({"sku": sku, "name": "Forged", "price_cents": 100, "initial_stock": 5});
    let order = Uuid::new_v4();
    let routes: Vec<(&str, Method, String, Option<Value>)> = vec![
        (COMMAND, Method::POST, "/v1/products".into(), Some(product)),
        (
            INTERNAL,
            Method::POST,
            format!("/internal/v1/orders/{order}/refund-payment"),
            Some(json!({})),
        ),
        (QUERY, Method::GET, "/v1/orders".into(), None),
        (PROJECTOR, Method::GET, "/v1/projections".into(), None),
        (
            ORCHESTRATOR,
            Method::POST,
            format!("/v1/sagas/{order}/retry"),
            Some(json!({})),
        ),
    ];
    let client = Client::new();
    let send =
        |listener: &str, method: &Method, path: &str, body: &Option<Value>, auth: Option<&str>| {
            let mut request = client
                .request(method.clone(), platform.url(listener, path))
                .header("x-saga-version", "1");
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            request.send()
        };

    let mut failures = Vec::new();
    let forgeries = forgeries();
    for (listener, method, path, body) in &routes {
        let answers = join_all(
            forgeries
                .iter()
                .map(|(_, auth)| send(listener, method, path, body, auth.as_deref())),
        )
        .await;
        for ((what, _), response) in forgeries.iter().zip(answers) {
            let response = response.unwrap();
            let status = response.status();
            if status != StatusCode::UNAUTHORIZED {
                failures.push(format!(
                    "{listener} {method} {path}, {what}: {status}, not 401"
                ));
                continue;
            }
            if let Some(why) = problem_with_challenge(response, "unauthorized").await {
                failures.push(format!("{listener} {method} {path}, {what}: {why}"));
            }
        }
    }

    // Nothing was written: the product does not exist, so a valid writer
    // creates it now (a second create would be 409).
    let admin = harness::auth::admin();
    let absent = admin
        .get(platform.url(COMMAND, &format!("/v1/streams/product-{sku}/events")))
        .send()
        .await
        .unwrap();
    if absent.status() != StatusCode::NOT_FOUND {
        let status = absent.status();
        let events = absent.text().await.unwrap_or_default();
        failures.push(format!(
            "the forged writes left a product stream ({status}): {events}"
        ));
    }

    // The same claims, validly signed, pass every guard: the refusals
    // above were for the forgeries, not for the claims or the routes.
    let valid = format!(
        "Bearer {}",
        signing_key().mint_raw(&claims(json!({}))).unwrap()
    );
    for (listener, method, path, body) in &routes {
        let response = send(listener, method, path, body, Some(&valid))
            .await
            .unwrap();
        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            failures.push(format!(
                "{listener} {method} {path}, a valid token: {status}"
            ));
        }
        if *listener == COMMAND && status != StatusCode::CREATED {
            failures.push(format!(
                "{listener} {method} {path}, a valid token: {status}, not 201 (was it written before?)"
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} refusals are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
