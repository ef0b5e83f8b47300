//! Keys from an identity provider's JWKS endpoint (`AUTH_JWKS_URL`):
//! rotation, removal, the refetch floor, failing closed, and a nested
//! roles claim.
//!
//! No identity provider (Keycloak, say) can run here, so the tests serve
//! a key set of their own: a small axum server on 127.0.0.1 whose keys
//! they change, that counts the fetches and can answer 500 or stop. What
//! verifies the tokens is the platform's own code,
//! `service_kit::auth::Authenticator` (with a short refetch floor, so the
//! tests take seconds), and, in the last test, a query-service started
//! with the same settings a deployment would give it. All but that one
//! need no containers.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use harness::TestEnv;
use reqwest::Client;
use serde_json::{Value, json};
use service_kit::auth::keys::{Claims, SigningKey};
use service_kit::auth::{AuthConfig, Authenticator, PLATFORM_AUDIENCE, Role};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The test identity provider's issuer.
const ISSUER: &str = "test-idp";
/// How long the tests' authenticators keep a key set.
const MAX_AGE: Duration = Duration::from_millis(1500);
/// How often an unknown `kid` may make them fetch it again.
const FLOOR: Duration = Duration::from_millis(200);
/// What a deadline allows beyond the time the rule gives.
const MARGIN: Duration = Duration::from_secs(1);

/// What the test identity provider serves.
#[derive(Default)]
struct Served {
    keys: Mutex<Vec<Value>>,
    failing: AtomicBool,
    fetches: AtomicUsize,
}

/// A JWKS endpoint at `{url}`, serving [`Served`].
struct Idp {
    url: String,
    served: Arc<Served>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Idp {
    async fn start(keys: &[&SigningKey]) -> Self {
        let served = Arc::new(Served::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/certs", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/certs", get(certs))
            .with_state(Arc::clone(&served));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let idp = Self {
            url,
            served,
            stop: Some(stop),
            task: Some(task),
        };
        idp.serve(keys);
        idp
    }

    /// Serves these keys from now on.
    fn serve(&self, keys: &[&SigningKey]) {
        *self.served.keys.lock().unwrap() = keys.iter().map(|key| key.jwk()).collect();
    }

    /// Answers 500 (or the key set again).
    fn fail(&self, failing: bool) {
        self.served.failing.store(failing, Ordering::SeqCst);
    }

    fn fetches(&self) -> usize {
        self.served.fetches.load(Ordering::SeqCst)
    }

    /// Stops the server: its port refuses connections.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

async fn certs(State(served): State<Arc<Served>>) -> Response {
    served.fetches.fetch_add(1, Ordering::SeqCst);
    if served.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down for the test").into_response();
    }
    let keys = served.keys.lock().unwrap().clone();
    Json(json!({ "keys": keys })).into_response()
}

/// Settings trusting the test identity provider at `url` only.
fn config(url: &str) -> AuthConfig {
    AuthConfig {
        jwks_file: None,
        jwks_url: Some(url.to_owned()),
        issuers: vec![ISSUER.into()],
        audience: PLATFORM_AUDIENCE.into(),
        jwks_max_age: MAX_AGE,
        roles_claim: "roles".into(),
        grants: Vec::new(),
    }
}

/// A token of the test identity provider, signed with `key`.
fn mint(key: &SigningKey, role: &str) -> String {
    key.mint(&Claims {
        issuer: ISSUER.into(),
        audience: PLATFORM_AUDIENCE.into(),
        subject: format!("idp-{role}"),
        roles: vec![role.into()],
        ttl: Duration::from_secs(600),
    })
    .unwrap()
}

/// Polls until `token` is refused, failing after `deadline`.
async fn refused_within(auth: &Authenticator, token: &str, deadline: Duration, what: &str) {
    harness::eventually(deadline, what, || async {
        match auth.verify(token).await {
            Ok(_) => anyhow::bail!("still accepted"),
            Err(_) => Ok(()),
        }
    })
    .await;
}

/// A key added at the provider is trusted at once (a token naming its
/// `kid` makes the set be fetched again), made-up key ids cannot make it
/// fetched more than once per refetch floor, and a key removed at the
/// provider stops verifying within the maximum age.
#[tokio::test]
async fn a_new_key_is_trusted_at_once_and_a_removed_one_within_the_max_age() {
    let old = SigningKey::generate(&format!("old-{}", Uuid::new_v4()));
    let new = SigningKey::generate(&format!("new-{}", Uuid::new_v4()));
    let idp = Idp::start(&[&old]).await;
    let auth = Authenticator::with_refetch_floor(&config(&idp.url), FLOOR);

    // (1) The current key.
    let (subject, roles) = auth.verify(&mint(&old, "reader")).await.unwrap();
    assert_eq!(subject, "idp-reader");
    assert_eq!(roles.into_iter().collect::<Vec<_>>(), [Role::Reader]);
    assert_eq!(idp.fetches(), 1, "one fetch for the first token");

    // (2) The provider rotates: a new key is published next to the old.
    // Once the refetch floor has passed since the last fetch, the first
    // token signed with it is accepted, at the cost of one fetch.
    idp.serve(&[&old, &new]);
    let new_token = mint(&new, "writer");
    tokio::time::sleep(FLOOR + Duration::from_millis(50)).await;
    let before = idp.fetches();
    let (_, roles) = auth
        .verify(&new_token)
        .await
        .expect("a token with the new kid is accepted at once");
    assert!(roles.contains(&Role::Writer) && roles.contains(&Role::Reader));
    assert_eq!(idp.fetches(), before + 1, "one fetch for the new kid");

    // Made-up key ids, many and fast: at most one fetch per floor.
    let made_up: Vec<String> = (0..50)
        .map(|i| mint(&SigningKey::generate(&format!("made-up-{i}")), "admin"))
        .collect();
    tokio::time::sleep(FLOOR + Duration::from_millis(50)).await;
    let before = idp.fetches();
    let started = Instant::now();
    for token in &made_up {
        assert!(auth.verify(token).await.is_err(), "an unknown kid verifies");
    }
    let took = started.elapsed();
    let fetched = idp.fetches() - before;
    let floors = (took.as_millis() / FLOOR.as_millis()) as usize;
    assert!(
        (1..=1 + floors).contains(&fetched),
        "50 unknown kids in {took:?} fetched the key set {fetched} times (a floor is {FLOOR:?})"
    );

    // (3) The provider retires the old key: within the maximum age its
    // tokens are refused; the new key's still pass.
    idp.serve(&[&new]);
    let old_token = mint(&old, "admin");
    refused_within(
        &auth,
        &old_token,
        MAX_AGE + MARGIN,
        "a token of the removed key is refused",
    )
    .await;
    auth.verify(&new_token)
        .await
        .expect("the new key still verifies");
}

/// When the key set cannot be had, cached keys serve until the maximum
/// age, then every token is refused (fail closed); the provider is not
/// hammered meanwhile, and keys are trusted again once it answers.
#[tokio::test]
async fn without_a_key_set_tokens_are_refused_once_the_max_age_has_passed() {
    let key = SigningKey::generate(&format!("key-{}", Uuid::new_v4()));
    let mut idp = Idp::start(&[&key]).await;
    let auth = Authenticator::with_refetch_floor(&config(&idp.url), FLOOR);
    let token = mint(&key, "operator");
    let fetched_at = Instant::now();
    auth.verify(&token).await.expect("the key verifies");

    // (4a) The provider answers 500: the cached set serves its max age...
    idp.fail(true);
    auth.verify(&token)
        .await
        .expect("a short outage does not lock callers out");
    // ...and then nothing verifies.
    refused_within(
        &auth,
        &token,
        MAX_AGE + MARGIN,
        "tokens are refused once the max age passed without a key set",
    )
    .await;
    assert!(
        fetched_at.elapsed() >= MAX_AGE,
        "refused after {:?}, before the max age",
        fetched_at.elapsed()
    );

    // Refused tokens, many and fast, while the provider is down: at most
    // one fetch per floor, not one per request.
    let before = idp.fetches();
    let started = Instant::now();
    for _ in 0..50 {
        assert!(auth.verify(&token).await.is_err());
    }
    let took = started.elapsed();
    let fetched = idp.fetches() - before;
    let floors = (took.as_millis() / FLOOR.as_millis()) as usize;
    assert!(
        fetched <= 1 + floors,
        "50 tokens during an outage fetched the key set {fetched} times in {took:?} \
         (a floor is {FLOOR:?})"
    );

    // The provider is back: its keys are trusted again.
    idp.fail(false);
    harness::eventually(FLOOR + MARGIN, "the key verifies again", || async {
        auth.verify(&token)
            .await
            .map_err(|refused| anyhow::anyhow!(refused.0))
    })
    .await;

    // (4b) The provider is gone (connections refused): the same.
    idp.stop().await;
    refused_within(
        &auth,
        &token,
        MAX_AGE + MARGIN,
        "tokens are refused once the max age passed with the provider gone",
    )
    .await;
}

/// `AUTH_GRANTS` gives a role to one subject of one issuer whose tokens
/// carry none (a Kubernetes service account's projected token): that
/// subject gets it, another subject of the same issuer does not, and the
/// same subject from another trusted issuer does not either.
#[tokio::test]
async fn a_grant_gives_roles_to_one_subject_of_one_issuer() {
    const ACCOUNT: &str = "system:serviceaccount:orders:saga-orchestrator";
    let cluster = SigningKey::generate(&format!("k8s-{}", Uuid::new_v4()));
    let other = SigningKey::generate(&format!("other-{}", Uuid::new_v4()));
    let cluster_idp = Idp::start(&[&cluster]).await;
    let other_idp = Idp::start(&[&other]).await;
    let auth = Authenticator::with_refetch_floor(
        &AuthConfig {
            jwks_url: None,
            issuers: vec![
                format!("k8s={}", cluster_idp.url),
                format!("{ISSUER}={}", other_idp.url),
            ],
            grants: vec![
                service_kit::auth::parse_grant(&format!("k8s {ACCOUNT} service")).unwrap(),
            ],
            ..config(&cluster_idp.url)
        },
        FLOOR,
    );
    let token = |key: &SigningKey, issuer: &str, subject: &str| {
        key.mint(&Claims {
            issuer: issuer.into(),
            audience: PLATFORM_AUDIENCE.into(),
            subject: subject.into(),
            roles: Vec::new(),
            ttl: Duration::from_secs(600),
        })
        .unwrap()
    };
    let (subject, roles) = auth.verify(&token(&cluster, "k8s", ACCOUNT)).await.unwrap();
    assert_eq!(subject, ACCOUNT);
    assert_eq!(roles.into_iter().collect::<Vec<_>>(), [Role::Service]);
    let (_, roles) = auth
        .verify(&token(
            &cluster,
            "k8s",
            "system:serviceaccount:orders:other",
        ))
        .await
        .unwrap();
    assert!(roles.is_empty(), "{roles:?}");
    let (_, roles) = auth.verify(&token(&other, ISSUER, ACCOUNT)).await.unwrap();
    assert!(roles.is_empty(), "{roles:?}");
    // A token naming the granted issuer but signed by another is refused.
    assert!(auth.verify(&token(&other, "k8s", ACCOUNT)).await.is_err());
}

/// `AUTH_ROLES_CLAIM=realm_access.roles` reads Keycloak's nested realm
/// roles, and only them; Keycloak's list-valued `aud` is accepted when it
/// names the audience.
#[tokio::test]
async fn roles_come_from_the_claim_path_the_settings_name() {
    let key = SigningKey::generate(&format!("kc-{}", Uuid::new_v4()));
    let idp = Idp::start(&[&key]).await;
    let auth = Authenticator::with_refetch_floor(
        &AuthConfig {
            roles_claim: "realm_access.roles".into(),
            ..config(&idp.url)
        },
        FLOOR,
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let keycloak = |realm_roles: Value, aud: Value| {
        key.mint_raw(&json!({
            "iss": ISSUER,
            "aud": aud,
            "sub": "f3b0c2d4-6f0e-4d0b-9a8e-1c2d3e4f5a6b",
            "typ": "Bearer",
            "azp": "orders-console",
            "iat": now,
            "exp": now + 300,
            "realm_access": { "roles": realm_roles },
            "resource_access": { "account": { "roles": ["admin"] } },
            "roles": ["admin"],
            "scope": "openid profile",
        }))
        .unwrap()
    };
    let audiences = json!([PLATFORM_AUDIENCE, "account"]);

    let (subject, roles) = auth
        .verify(&keycloak(
            json!(["operator", "offline_access", "uma_authorization"]),
            audiences.clone(),
        ))
        .await
        .expect("a Keycloak-shaped token verifies");
    assert_eq!(subject, "f3b0c2d4-6f0e-4d0b-9a8e-1c2d3e4f5a6b");
    assert_eq!(
        roles.into_iter().collect::<Vec<_>>(),
        [Role::Reader, Role::Operator],
        "the realm roles (with what they include), not the top-level `roles`"
    );

    let (_, roles) = auth
        .verify(&keycloak(json!(["offline_access"]), audiences))
        .await
        .expect("a token without platform roles is still valid");
    assert!(roles.is_empty(), "no platform role: {roles:?}");

    assert!(
        auth.verify(&keycloak(json!(["admin"]), json!(["account", "other-api"])))
            .await
            .is_err(),
        "a list of audiences without the platform's is refused"
    );
}

/// A query-service given `AUTH_JWKS_URL` and `AUTH_ISSUER=test-idp`
/// accepts the provider's tokens, no longer the platform's own, and
/// refuses a key within the maximum age of its removal at the provider.
#[tokio::test]
async fn a_service_trusts_the_providers_keys_and_drops_a_removed_one() {
    let env = TestEnv::new().await;
    let old = SigningKey::generate(&format!("old-{}", Uuid::new_v4()));
    let new = SigningKey::generate(&format!("new-{}", Uuid::new_v4()));
    let idp = Idp::start(&[&old, &new]).await;
    let url = idp.url.clone();
    let service =
        harness::services::query_service_with(&env, |c| c.common.auth = config(&url)).await;
    let orders = format!("{}/v1/orders", service.url);
    let client = Client::new();
    let status = |token: String| {
        let request = client.get(&orders).bearer_auth(token);
        async move { anyhow::Ok(request.send().await?.status()) }
    };

    let old_token = mint(&old, "reader");
    harness::eventually(
        Duration::from_secs(30),
        "the provider's token is accepted",
        || {
            let answer = status(old_token.clone());
            async move {
                let status = answer.await?;
                anyhow::ensure!(status == reqwest::StatusCode::OK, "{status}");
                Ok(())
            }
        },
    )
    .await;
    assert_eq!(
        status(harness::auth::token("reader", "test-reader"))
            .await
            .unwrap(),
        reqwest::StatusCode::UNAUTHORIZED,
        "the platform's own issuer is not trusted by this service"
    );

    idp.serve(&[&new]);
    let removed_at = Instant::now();
    harness::eventually(MAX_AGE + MARGIN, "the removed key is refused", || {
        let answer = status(old_token.clone());
        async move {
            let status = answer.await?;
            anyhow::ensure!(
                status == reqwest::StatusCode::UNAUTHORIZED,
                "{status} after {:?}",
                removed_at.elapsed()
            );
            Ok(())
        }
    })
    .await;
    assert_eq!(
        status(mint(&new, "reader")).await.unwrap(),
        reqwest::StatusCode::OK,
        "the remaining key still verifies"
    );
}
