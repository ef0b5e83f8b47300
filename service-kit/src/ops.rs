//! Operational endpoints every service serves: liveness, readiness and
//! Prometheus metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::Deps;
use crate::deps::Readiness;
use crate::progress::Watchdog;

/// The longest a readiness answer is reused: probes (compose, Kubernetes,
/// load balancers, several a second) then cost PostgreSQL and the broker at
/// most one check a second between them.
pub const READINESS_MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct OpsState {
    deps: Deps,
    watchdog: Watchdog,
    registry: Arc<Registry>,
    ready: Gauge,
    /// The last readiness answer and when it was made; the lock also makes
    /// concurrent probes wait for one check instead of each making one.
    last: Arc<tokio::sync::Mutex<Option<(Instant, Readiness)>>>,
}

/// Adds the process-wide metrics every service exports to `registry`.
pub fn register_common_metrics(registry: &mut Registry, service: &'static str) -> Gauge {
    registry.register(
        "service",
        "Which service this process is and its version",
        Info::new(vec![
            ("name", service),
            ("version", env!("CARGO_PKG_VERSION")),
        ]),
    );
    let ready = Gauge::default();
    registry.register(
        "ready",
        "1 when the last readiness probe found PostgreSQL and Kafka working, else 0",
        ready.clone(),
    );
    ready
}

/// The paths [`router`] serves (all `GET`, all public, as the contract
/// says: probes and scrapers carry no token).
pub const PATHS: [&str; 3] = ["/health/live", "/health/ready", "/metrics"];

/// `/health/live`, `/health/ready` and `/metrics`, over the given
/// dependencies, the process's watched workers and its metric registry;
/// for [`crate::auth::RouteTable::public`].
pub fn router<S: Clone + Send + Sync + 'static>(
    service: &'static str,
    deps: Deps,
    watchdog: Watchdog,
    mut registry: Registry,
) -> Router<S> {
    let ready = register_common_metrics(&mut registry, service);
    let state = OpsState {
        deps,
        watchdog,
        registry: Arc::new(registry),
        ready,
        last: Arc::default(),
    };
    let [live_path, ready_path, metrics_path] = PATHS;
    Router::new()
        .route(live_path, get(live))
        .route(ready_path, get(readiness))
        .route(metrics_path, get(metrics))
        .with_state(state)
}

async fn live() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "live" }))
}

async fn readiness(State(state): State<OpsState>) -> Response {
    let readiness = {
        let mut last = state.last.lock().await;
        match &*last {
            Some((at, readiness)) if at.elapsed() < READINESS_MAX_AGE => readiness.clone(),
            _ => {
                let readiness = state.deps.readiness(&state.watchdog).await;
                if readiness.is_ready() {
                    state.ready.set(1);
                } else {
                    state.ready.set(0);
                    tracing::warn!(
                        down = ?readiness.down, checks = ?readiness.checks,
                        stalled = ?readiness.stalled, "not ready"
                    );
                }
                *last = Some((Instant::now(), readiness.clone()));
                readiness
            }
        }
    };
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

async fn metrics(State(state): State<OpsState>) -> Response {
    let mut body = String::new();
    if let Err(error) = encode(&mut body, &state.registry) {
        tracing::error!(%error, "encoding metrics failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
