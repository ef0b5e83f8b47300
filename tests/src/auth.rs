//! The tests' own issuer: a signing key made once per test binary, its
//! public key set in a file every service started by the harness trusts
//! (`AUTH_JWKS_FILE`), and tokens for any role, so tests call the platform
//! as its clients do. No real identity provider can run here; this one
//! signs exactly as the platform's own `orders-auth` does, and the
//! services verify its tokens with the code production uses.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use service_kit::auth::keys::{Claims, SigningKey};
use service_kit::auth::{AuthConfig, PLATFORM_AUDIENCE, PLATFORM_ISSUER};
use uuid::Uuid;

/// How long the harness's tokens live: longer than any test run.
const TTL: Duration = Duration::from_secs(24 * 3600);

struct Keys {
    key: SigningKey,
    jwks_file: PathBuf,
    service_token_file: PathBuf,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let key = SigningKey::generate(&format!("test-{id}"));
        let dir = std::env::temp_dir().join(format!("orders-tests-{}-{id}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("making the test key directory");
        let jwks_file = dir.join("jwks.json");
        std::fs::write(&jwks_file, key.jwks().to_string()).expect("writing the test key set");
        let service_token_file = dir.join("service-token");
        let service = mint(&key, "service", "saga-orchestrator");
        std::fs::write(&service_token_file, service).expect("writing the service token");
        Keys {
            key,
            jwks_file,
            service_token_file,
        }
    })
}

fn mint(key: &SigningKey, role: &str, subject: &str) -> String {
    key.mint(&Claims {
        issuer: PLATFORM_ISSUER.into(),
        audience: PLATFORM_AUDIENCE.into(),
        subject: subject.into(),
        roles: vec![role.into()],
        ttl: TTL,
    })
    .expect("minting a test token")
}

/// The test issuer's signing key (to mint tokens with other claims).
pub fn signing_key() -> &'static SigningKey {
    &keys().key
}

/// The token settings of every service the harness starts: the platform's
/// issuer with the test key set.
pub fn auth_config() -> AuthConfig {
    AuthConfig::platform(keys().jwks_file.clone())
}

/// The file holding the test key set.
pub fn jwks_file() -> PathBuf {
    keys().jwks_file.clone()
}

/// A file holding a `service` token, for the orchestrator's
/// `SERVICE_TOKEN_FILE`.
pub fn service_token_file() -> PathBuf {
    keys().service_token_file.clone()
}

/// A token with one role for `subject`.
pub fn token(role: &str, subject: &str) -> String {
    mint(&keys().key, role, subject)
}

/// A token of the `customer` role for `customer_id`.
pub fn customer_token(customer_id: Uuid) -> String {
    token("customer", &customer_id.to_string())
}

/// A client sending `token` with every request.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    let mut value =
        HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is header-safe");
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("building an HTTP client")
}

/// A client with a token of `role` (subject `test-<role>`).
pub fn client(role: &str) -> reqwest::Client {
    client_with(&token(role, &format!("test-{role}")))
}

/// A client that may do everything but the step API (`admin`).
pub fn admin() -> reqwest::Client {
    client("admin")
}

/// The bearer token of the harness's binaries (chaos, benchmarks): the
/// `ORDERS_TOKEN` environment variable when set (the compose scripts set
/// it with `make token`, for a platform that trusts the platform's key),
/// else an admin token of the test issuer (for the platforms they start
/// themselves).
pub fn binary_token() -> String {
    std::env::var("ORDERS_TOKEN")
        .ok()
        .filter(|token| !token.trim().is_empty())
        .map_or_else(|| token("admin", "test-admin"), |t| t.trim().to_owned())
}

/// [`binary_token`] as default headers for a `reqwest::ClientBuilder`.
pub fn binary_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut value = HeaderValue::from_str(&format!("Bearer {}", binary_token()))
        .expect("ORDERS_TOKEN must be a token");
    value.set_sensitive(true);
    headers.insert(AUTHORIZATION, value);
    headers
}
