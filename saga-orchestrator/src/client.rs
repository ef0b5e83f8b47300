//! Calls to command-service's step API, classified for the saga: success,
//! a business refusal (not retried), another refusal (a 409 without
//! `Retry-After`, say), busy (a 409 with `Retry-After`: retried, and not a
//! failure of the step), or a transient failure (unreachable, timed out,
//! 5xx: retried). A circuit breaker stops calling a command-service that
//! keeps failing (unreachable, timed out, 5xx), for a while.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use domain::RejectionReason;
use domain::saga::SagaStep;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;
use uuid::Uuid;

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; for a shipment, its tracking number.
    Succeeded { tracking_number: Option<String> },
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

pub struct StepClient {
    http: reqwest::Client,
    base: String,
    breaker: Mutex<Breaker>,
    pub breaker_open: Gauge,
}

impl StepClient {
    pub fn new(base: &str, timeout: Duration, breaker: BreakerConfig) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            breaker: Mutex::new(Breaker {
                config: breaker,
                consecutive: 0,
                open_until: None,
            }),
            breaker_open: Gauge::default(),
        })
    }

    /// When the breaker is open: the instant it lets calls through again.
    pub fn open_until(&self) -> Option<Instant> {
        let breaker = self.breaker.lock().expect("not poisoned");
        breaker.open_until.filter(|until| *until > Instant::now())
    }

    /// `POST /internal/v1/orders/{order_id}/{path}` with an optional body.
    /// Without `recorded`, the command-service keys the step by its path,
    /// so a repeat returns the first outcome and changes nothing; with it,
    /// the saga's version makes the call count at most once.
    pub async fn call(
        &self,
        order_id: Uuid,
        path: &str,
        body: Option<Value>,
        recorded: Option<Recorded>,
    ) -> Outcome {
        let url = format!("{}/internal/v1/orders/{order_id}/{path}", self.base);
        let mut request = self.http.post(&url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(Recorded {
            version,
            attempt,
            then,
        }) = recorded
        {
            request = request
                .header("x-saga-version", version)
                .header("x-saga-attempt", attempt);
            if let Some((step, attempt)) = then {
                request = request
                    .header("x-saga-next-step", step.as_str())
                    .header("x-saga-next-attempt", attempt);
            }
        }
        let mut failing = true;
        let outcome = match request.send().await {
            Err(error) if error.is_timeout() => Outcome::Transient(format!("{path}: timed out")),
            Err(error) => Outcome::Transient(format!("{path}: unreachable: {error}")),
            Ok(response) => {
                let status = response.status();
                failing = status.is_server_error();
                let retry_after = response
                    .headers()
                    .contains_key(reqwest::header::RETRY_AFTER);
                let body: Value = response.json().await.unwrap_or(Value::Null);
                classify(path, status, retry_after, &body)
            }
        };
        self.record(failing);
        outcome
    }

    /// Counts a call towards the breaker: `failing` when the service was
    /// unreachable, timed out or answered 5xx.
    fn record(&self, failing: bool) {
        let mut breaker = self.breaker.lock().expect("not poisoned");
        if failing {
            breaker.consecutive += 1;
            if breaker.consecutive >= breaker.config.failures {
                breaker.open_until = Some(Instant::now() + breaker.config.open_for);
                // Half-open afterwards: one more failure opens it again.
                breaker.consecutive = breaker.config.failures - 1;
                self.breaker_open.set(1);
            }
        } else {
            breaker.consecutive = 0;
            breaker.open_until = None;
            self.breaker_open.set(0);
        }
    }
}

/// What an answer of command-service means for the saga.
fn classify(path: &str, status: reqwest::StatusCode, retry_after: bool, body: &Value) -> Outcome {
    let detail = || body["detail"].as_str().unwrap_or("").to_owned();
    if status.is_success() {
        return Outcome::Succeeded {
            tracking_number: body["tracking_number"].as_str().map(str::to_owned),
        };
    }
    if status == reqwest::StatusCode::CONFLICT && retry_after {
        // "Not now": the same step is still being handled (its idempotency
        // key is held), or its streams kept changing under it. A 409
        // without `Retry-After` is a refusal.
        return Outcome::Busy(format!("{path}: {status}: {}", detail()));
    }
    if status.is_server_error() {
        return Outcome::Transient(format!("{path}: {status}"));
    }
    match body["type"].as_str() {
        Some("/problems/saga-moved") => Outcome::Moved,
        Some("/problems/insufficient-stock") => {
            Outcome::Refused(RejectionReason::InsufficientStock)
        }
        Some("/problems/payment-declined") => Outcome::Refused(RejectionReason::PaymentDeclined),
        Some("/problems/shipping-unavailable") => {
            Outcome::Refused(RejectionReason::ShippingUnavailable)
        }
        _ => Outcome::Rejected {
            status: status.as_u16(),
            detail: detail(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_transient_failures_and_closes_on_success() {
        let client = StepClient::new(
            "http://127.0.0.1:1",
            Duration::from_millis(10),
            BreakerConfig {
                failures: 3,
                open_for: Duration::from_secs(60),
            },
        )
        .unwrap();
        client.record(true);
        client.record(true);
        assert!(client.open_until().is_none());
        client.record(true);
        assert!(client.open_until().is_some());
        assert_eq!(client.breaker_open.get(), 1);
        client.record(false);
        assert!(client.open_until().is_none());
    }
    #[test]
    fn answers_are_sorted_into_what_the_saga_does_next() {
        use reqwest::StatusCode;
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
            Outcome::Succeeded {
                tracking_number: Some("TRK-1".into())
            }
        );
        assert_eq!(
            classify(StatusCode::CONFLICT, false, &problem("saga-moved")),
            Outcome::Moved
        );
        assert_eq!(
            classify(StatusCode::CONFLICT, true, &problem("conflict")),
            Outcome::Busy("step: 409 Conflict: d".into())
        );
        assert_eq!(
            classify(StatusCode::CONFLICT, false, &problem("conflict")),
            Outcome::Rejected {
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
            Outcome::Refused(RejectionReason::PaymentDeclined)
        );
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, false, &Value::Null),
            Outcome::Transient("step: 503 Service Unavailable".into())
        );
    }
}
