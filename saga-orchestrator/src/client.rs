//! Calls to command-service's step API (its internal listener), classified
//! for the saga: success, a business refusal (not retried), another refusal
//! (a 409 without `Retry-After`, say), busy (a 409 with `Retry-After`:
//! retried, and not a failure of the step), or a transient failure
//! (unreachable, timed out, 5xx, and 401, 403 and 404: retried). A circuit
//! breaker stops calling a command-service that keeps failing so, for a
//! while, and the failures show in readiness (worker `saga-steps`).
//!
//! 401, 403 and 404 are never the business's answer: the step API answers
//! them when this process's credential is missing, expired or lacks the
//! `service` role, or when it calls the public listener by mistake (which
//! has no `/internal/...`). All of those are the platform's set-up, which
//! an operator fixes, so the saga waits rather than compensating.
//!
//! Each call is a client span, and carries its trace context
//! (`traceparent`, so command-service's span for it is its child) and the
//! saga's correlation id (`X-Correlation-Id`: its placement's).
//!
//! Each call carries `Authorization: Bearer <token>`, the token read from
//! `SERVICE_TOKEN_FILE`: a file the platform renews (a Kubernetes projected
//! token, or `make up`'s renewal), so it is read again once a minute and
//! right after any 401.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use domain::RejectionReason;
use domain::saga::{self, SagaAction, SagaStep, api};
use prometheus_client::metrics::gauge::Gauge;
use reqwest::StatusCode;
use serde_json::Value;
use service_kit::progress::Progress;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use uuid::Uuid;

/// What the step API answered a call, sorted by what the executor does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done; for a shipment, its tracking number; `recorded`: the last
    /// event the call recorded in the saga's stream.
    Succeeded {
        tracking_number: Option<String>,
        recorded: Option<Uuid>,
    },
    /// The business said no (insufficient stock, payment declined, shipping
    /// unavailable).
    Refused(RejectionReason),
    /// Another 4xx: the request cannot succeed as it is (a conflict, say).
    Rejected { status: u16, detail: String },
    /// A 409 with `Retry-After`: contention (its streams kept changing) or
    /// the same step still being handled. Worth trying again, and not a
    /// failure of the step.
    Busy(String),
    /// Worth trying again later.
    Transient(String),
    /// The saga's stream is no longer at the version the call was made for
    /// (409 `saga-moved`): nothing was written; read the saga again.
    Moved,
}

impl Reply {
    /// Whether the call failed (for the step's failure count): anything
    /// but a success, or a stream that moved.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Reply::Succeeded { .. } | Reply::Moved)
    }
}

/// A call that records its success in the saga's stream in the same
/// transaction as its effect: the stream's version the call was decided on
/// and the attempt (command-service's `X-Saga-Version`, `X-Saga-Attempt`),
/// and for a forward step the next step's attempt whose start goes with
/// the success (`X-Saga-Next-Step`, `X-Saga-Next-Attempt`).
#[derive(Debug, Clone, Copy)]
pub struct Recorded {
    pub version: u64,
    pub attempt: u32,
    pub then: Option<(SagaStep, u32)>,
}

/// Settings of the breaker.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open it.
    pub failures: u32,
    /// How long it stays open before letting a call through again.
    pub open_for: Duration,
}

/// Closed, open until an instant, or half-open (one call let through).
struct Breaker {
    config: BreakerConfig,
    consecutive: u32,
    open_until: Option<Instant>,
}

/// How often the credential is read again, renewed or not.
const CREDENTIAL_MAX_AGE: Duration = Duration::from_secs(60);

/// The bearer token of `SERVICE_TOKEN_FILE`, as last read.
struct Credential {
    path: PathBuf,
    /// The token (`None`: the file was empty or unreadable) and when it
    /// was read.
    read: tokio::sync::Mutex<Option<(Option<String>, Instant)>>,
}

impl Credential {
    /// The token to send: the one read less than [`CREDENTIAL_MAX_AGE`]
    /// ago, unless `fresh`, else the file's content now.
    async fn token(&self, fresh: bool) -> Option<String> {
        let mut read = self.read.lock().await;
        if let Some((token, at)) = &*read
            && !fresh
            && at.elapsed() < CREDENTIAL_MAX_AGE
        {
            return token.clone();
        }
        let token = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => Some(text.trim().to_owned()).filter(|token| !token.is_empty()),
            Err(error) => {
                // The token itself is never logged, only where it lives.
                tracing::warn!(path = %self.path.display(), %error, "reading the service token failed");
                None
            }
        };
        if token.is_none() {
            tracing::warn!(path = %self.path.display(), "no service token; calling without one");
        }
        *read = Some((token.clone(), Instant::now()));
        token
    }
}

pub struct StepClient {
    http: reqwest::Client,
    base: String,
    credential: Option<Credential>,
    breaker: Mutex<Breaker>,
    pub breaker_open: Gauge,
    /// The step API as a worker readiness watches: behind by the failing
    /// calls in a row, caught up by any call that did not fail.
    progress: Progress,
}

impl StepClient {
    /// A client of the step API at `base`, sending the token in
    /// `token_file` if given, reporting to `progress`.
    pub fn new(
        base: &str,
        timeout: Duration,
        breaker: BreakerConfig,
        token_file: Option<PathBuf>,
        progress: Progress,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            credential: token_file.map(|path| Credential {
                path,
                read: tokio::sync::Mutex::new(None),
            }),
            breaker: Mutex::new(Breaker {
                config: breaker,
                consecutive: 0,
                open_until: None,
            }),
            breaker_open: Gauge::default(),
            progress,
        })
    }

    /// When the breaker is open: the instant it lets calls through again.
    pub fn open_until(&self) -> Option<Instant> {
        let breaker = self.breaker.lock().expect("not poisoned");
        breaker.open_until.filter(|until| *until > Instant::now())
    }

    /// `POST /internal/v1/orders/{order_id}/<action>` (a rejection with
    /// its reason as the body), made at the saga's version in `recorded`:
    /// command-service carries it out only if the saga's stream is at that
    /// version and says it is this call's turn, and records its outcome
    /// there with its effect. `correlation_id`: the saga's.
    pub async fn call(
        &self,
        order_id: Uuid,
        action: SagaAction,
        recorded: Recorded,
        correlation_id: Option<&str>,
    ) -> Reply {
        let action_api = api::of(action);
        let span = tracing::info_span!(
            "step call",
            otel.name = format!("POST {}", action_api.route),
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = "POST",
            http.route = action_api.route,
            http.response.status_code = Empty,
            %order_id,
        );
        self.call_in(&span, order_id, action, recorded, correlation_id)
            .instrument(span.clone())
            .await
    }

    /// [`StepClient::call`] in its span.
    async fn call_in(
        &self,
        span: &Span,
        order_id: Uuid,
        action: SagaAction,
        recorded: Recorded,
        correlation_id: Option<&str>,
    ) -> Reply {
        let action_api = api::of(action);
        let path = action_api.name;
        let url = format!("{}{}", self.base, action_api.path(order_id));
        let mut headers = reqwest::header::HeaderMap::new();
        service_kit::telemetry::inject(span, &mut headers);
        if let Some(id) = correlation_id.and_then(|id| id.parse().ok()) {
            headers.insert(service_kit::http::trace::CORRELATION_HEADER, id);
        }
        let mut request = self.http.post(&url).headers(headers);
        if let SagaAction::Reject(reason) = action {
            request = request.json(&serde_json::json!({ "reason": saga::code(reason) }));
        }
        let Recorded {
            version,
            attempt,
            then,
        } = recorded;
        request = request
            .header(api::header::VERSION, version)
            .header(api::header::ATTEMPT, attempt);
        if let Some((step, attempt)) = then {
            request = request
                .header(api::header::NEXT_STEP, step.as_str())
                .header(api::header::NEXT_ATTEMPT, attempt);
        }
        if let Some(credential) = &self.credential
            && let Some(token) = credential.token(false).await
        {
            request = request.bearer_auth(token);
        }
        let outcome = match request.send().await {
            Err(error) if error.is_timeout() => {
                span.record("otel.status_code", "ERROR");
                Reply::Transient(format!("{path}: timed out"))
            }
            Err(error) => {
                span.record("otel.status_code", "ERROR");
                Reply::Transient(format!("{path}: unreachable: {error}"))
            }
            Ok(response) => {
                let status = response.status();
                span.record("http.response.status_code", status.as_u16());
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
                if status == StatusCode::UNAUTHORIZED
                    && let Some(credential) = &self.credential
                {
                    // Renewed since it was read, perhaps: the next call
                    // sends what the file holds now.
                    credential.token(true).await;
                }
                let retry_after = response
                    .headers()
                    .contains_key(reqwest::header::RETRY_AFTER);
                let body: Value = response.json().await.unwrap_or(Value::Null);
                classify(path, status, retry_after, &body)
            }
        };
        match &outcome {
            Reply::Transient(error) => self.record(Some(error)),
            _ => self.record(None),
        }
        outcome
    }

    /// Counts a call towards the breaker and readiness: `failure` when the
    /// service was unreachable, timed out, or answered 5xx, 401, 403 or
    /// 404.
    fn record(&self, failure: Option<&str>) {
        let mut breaker = self.breaker.lock().expect("not poisoned");
        if let Some(failure) = failure {
            breaker.consecutive += 1;
            let consecutive = breaker.consecutive;
            if breaker.consecutive >= breaker.config.failures {
                breaker.open_until = Some(Instant::now() + breaker.config.open_for);
                // Half-open afterwards: one more failure opens it again.
                breaker.consecutive = breaker.config.failures - 1;
                self.breaker_open.set(1);
            }
            self.progress.observe(
                u64::from(consecutive),
                None,
                format!(
                    "command-service's step API at {} to answer; the last call failed: {failure}",
                    self.base
                ),
            );
        } else {
            breaker.consecutive = 0;
            breaker.open_until = None;
            self.breaker_open.set(0);
            self.progress.observe(0, None, "nothing".into());
        }
    }
}

/// What an answer of command-service means for the saga.
fn classify(path: &str, status: StatusCode, retry_after: bool, body: &Value) -> Reply {
    let detail = || body["detail"].as_str().unwrap_or("").to_owned();
    if status.is_success() {
        return Reply::Succeeded {
            tracking_number: body["tracking_number"].as_str().map(str::to_owned),
            recorded: body["recorded"].as_str().and_then(|id| id.parse().ok()),
        };
    }
    if status == StatusCode::CONFLICT && retry_after {
        // "Not now": the same step is still being handled (its idempotency
        // key is held), or its streams kept changing under it. A 409
        // without `Retry-After` is a refusal.
        return Reply::Busy(format!("{path}: {status}: {}", detail()));
    }
    if status.is_server_error() {
        return Reply::Transient(format!("{path}: {status}"));
    }
    if matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
    ) {
        // This process's credential or address, never the business: see
        // the module's documentation.
        return Reply::Transient(format!("{path}: {status}: {}", detail()));
    }
    let problem_type = body["type"].as_str().unwrap_or("");
    if problem_type.strip_prefix("/problems/") == Some(api::problem::SAGA_MOVED) {
        return Reply::Moved;
    }
    match api::problem::refusal_of(problem_type) {
        Some(reason) => Reply::Refused(reason),
        None => Reply::Rejected {
            status: status.as_u16(),
            detail: detail(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use service_kit::progress::Watchdog;

    /// A client whose failures show as a stall at once.
    fn client(token_file: Option<PathBuf>) -> StepClient {
        let watchdog = Watchdog::new(Duration::ZERO, &mut Default::default());
        StepClient::new(
            "http://127.0.0.1:1",
            Duration::from_millis(10),
            BreakerConfig {
                failures: 3,
                open_for: Duration::from_secs(60),
            },
            token_file,
            watchdog.watch("saga-steps"),
        )
        .unwrap()
    }

    #[test]
    fn the_breaker_opens_after_consecutive_transient_failures_and_closes_on_success() {
        let client = client(None);
        client.record(Some("503"));
        client.record(Some("503"));
        assert!(client.open_until().is_none());
        client.record(Some("503"));
        assert!(client.open_until().is_some());
        assert_eq!(client.breaker_open.get(), 1);
        client.record(None);
        assert!(client.open_until().is_none());
    }

    #[test]
    fn failing_calls_show_in_readiness_until_one_gets_through() {
        let client = client(None);
        client.record(Some("charge-payment: 401 Unauthorized: no token"));
        let report = client.progress.report();
        assert!(report.stalled, "{report:?}");
        assert!(report.waiting_for.contains("401"), "{report:?}");
        client.record(None);
        assert!(!client.progress.report().stalled);
    }

    #[tokio::test]
    async fn the_token_file_is_read_trimmed_and_again_when_asked_to() {
        let path = std::env::temp_dir().join(format!("service-token-{}", Uuid::new_v4()));
        std::fs::write(&path, "first-token\n").unwrap();
        let client = client(Some(path.clone()));
        let credential = client.credential.as_ref().unwrap();
        assert_eq!(
            credential.token(false).await.as_deref(),
            Some("first-token")
        );
        std::fs::write(&path, "  renewed-token  ").unwrap();
        // Within its age the token read is kept; after a 401 it is read
        // again.
        assert_eq!(
            credential.token(false).await.as_deref(),
            Some("first-token")
        );
        assert_eq!(
            credential.token(true).await.as_deref(),
            Some("renewed-token")
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(credential.token(true).await, None, "no file, no token");
    }
    #[test]
    fn answers_are_sorted_into_what_the_saga_does_next() {
        let problem =
            |slug: &str| serde_json::json!({"type": format!("/problems/{slug}"), "detail": "d"});
        let classify =
            |status, retry_after, body: &Value| classify("step", status, retry_after, body);
        assert_eq!(
            classify(
                StatusCode::OK,
                false,
                &serde_json::json!({"tracking_number": "TRK-1"})
            ),
            Reply::Succeeded {
                tracking_number: Some("TRK-1".into()),
                recorded: None,
            }
        );
        assert_eq!(
            classify(StatusCode::CONFLICT, false, &problem("saga-moved")),
            Reply::Moved
        );
        assert_eq!(
            classify(StatusCode::CONFLICT, true, &problem("conflict")),
            Reply::Busy("step: 409 Conflict: d".into())
        );
        assert_eq!(
            classify(StatusCode::CONFLICT, false, &problem("conflict")),
            Reply::Rejected {
                status: 409,
                detail: "d".into()
            }
        );
        assert_eq!(
            classify(
                StatusCode::UNPROCESSABLE_ENTITY,
                false,
                &problem("payment-declined")
            ),
            Reply::Refused(RejectionReason::PaymentDeclined)
        );
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, false, &Value::Null),
            Reply::Transient("step: 503 Service Unavailable".into())
        );
        // Missing or insufficient credentials, and a wrong address, are
        // for an operator to fix, never a reason to compensate.
        for (status, slug) in [
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            (StatusCode::FORBIDDEN, "forbidden"),
            (StatusCode::NOT_FOUND, "not-found"),
        ] {
            assert_eq!(
                classify(status, false, &problem(slug)),
                Reply::Transient(format!("step: {status}: d"))
            );
        }
    }
}
