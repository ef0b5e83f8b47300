//! Limits every listener applies, whose refusals still speak the contract
//! (problem documents, never an empty or plain-text body): a request that
//! takes longer than `REQUEST_TIMEOUT_MS` is answered 503 `timeout`; one
//! that arrives while `HTTP_MAX_CONCURRENT_REQUESTS` are being handled is
//! answered 503 `overloaded` at once, with `Retry-After`; a handler that
//! panics is answered 500 `internal` and the process keeps serving.
//!
//! Refusing at once (load shedding) rather than queueing keeps a flood from
//! turning into minutes of latency for everyone, and costs the caller one
//! retry. Bodies stay limited to [`super::BODY_LIMIT`] by the extractors.
//!
//! The timeout and the panic catcher are tower-http's, their answers made
//! problem documents here; the limit on requests in flight is a semaphore.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use super::Problem;

/// The limits of one listener.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Longest a request may take before it is answered 503 `timeout`, in
    /// milliseconds; longer than any wait a request may ask for (the
    /// query-service's MIN_VERSION_TIMEOUT_MS).
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Most requests a listener handles at once; more are answered 503
    /// `overloaded` at once.
    #[arg(long, env = "HTTP_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout_ms: 30_000,
            max_concurrent_requests: 1024,
        }
    }
}

/// What tower-http's timeout answers, on its own an empty response: a
/// status no handler of the platform answers, so [`timeout_problem`] can
/// tell it from every other response and make it the contract's problem.
const TIMED_OUT: StatusCode = StatusCode::REQUEST_TIMEOUT;

impl Limits {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `router` behind the limits (outermost: a panic anywhere inside is
    /// caught, and a request counts against the limit until it is
    /// answered). The layers go on each route, sharing one semaphore.
    pub fn apply(&self, router: Router) -> Router {
        let permits = Arc::new(Semaphore::new(self.max_concurrent_requests.max(1)));
        let timeout = self.request_timeout();
        // The last layer added is the outermost.
        router
            .layer(TimeoutLayer::with_status_code(TIMED_OUT, timeout))
            .layer(axum::middleware::map_response_with_state(
                timeout,
                timeout_problem,
            ))
            .layer(axum::middleware::from_fn_with_state(permits, limit))
            .layer(CatchPanicLayer::custom(panicked))
    }
}

/// Refuses a request at once, 503 `overloaded` with `Retry-After`, while
/// the listener handles as many as it may. (tower's concurrency limit
/// queues instead, and applied per route it would limit each route alone.)
async fn limit(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = permits.try_acquire() else {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            "too many requests are being handled; retry shortly",
        );
        problem.retry_after = Some(1);
        return problem.into_response();
    };
    next.run(request).await
}

/// The timeout layer's bare answer as the contract's 503 `timeout`
/// problem; every other response as it is.
async fn timeout_problem(State(timeout): State<Duration>, response: Response) -> Response {
    if response.status() != TIMED_OUT
        || response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        return response;
    }
    tracing::warn!(
        timeout_ms = timeout.as_millis() as u64,
        "a request took too long and was answered 503"
    );
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        "Timeout",
        format!(
            "the request was not answered within {} ms; whether a write in it took \
             effect is unknown: repeat it with the same Idempotency-Key",
            timeout.as_millis()
        ),
    )
    .into_response()
}

fn panicked(payload: Box<dyn Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = what, "a request handler panicked");
    Problem::internal().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::routing::get;
    use tower::ServiceExt;

    async fn answer(limits: &Limits, router: Router, path: &str) -> (StatusCode, String, String) {
        let response = limits
            .apply(router)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let kind = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, kind, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_panic_is_a_problem_document() {
        let router = Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("boom");
                }
                "unreachable"
            }),
        );
        let (status, kind, body) = answer(&Limits::default(), router, "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(kind, "application/problem+json");
        assert!(body.contains("/problems/internal"), "{body}");
    }

    #[tokio::test]
    async fn a_slow_request_is_a_timeout_problem() {
        let limits = Limits {
            request_timeout_ms: 50,
            ..Limits::default()
        };
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let (status, kind, body) = answer(&limits, router, "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(kind, "application/problem+json");
        assert!(body.contains("/problems/timeout"), "{body}");
    }

    #[tokio::test]
    async fn requests_over_the_limit_are_refused_at_once() {
        let limits = Limits {
            max_concurrent_requests: 1,
            ..Limits::default()
        };
        let entered = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let (signal, wait) = (Arc::clone(&entered), Arc::clone(&release));
        let app = limits.apply(Router::new().route(
            "/wait",
            get(move || {
                let (signal, wait) = (Arc::clone(&signal), Arc::clone(&wait));
                async move {
                    signal.notify_one();
                    wait.notified().await;
                    "done"
                }
            }),
        ));
        let first = tokio::spawn(
            app.clone()
                .oneshot(Request::get("/wait").body(Body::empty()).unwrap()),
        );
        // The first request now holds the only permit.
        entered.notified().await;
        let second = app
            .clone()
            .oneshot(Request::get("/wait").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()["retry-after"], "1");
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}
