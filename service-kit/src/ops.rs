//! Operational endpoints every service serves: liveness, readiness and
//! Prometheus metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::Deps;
use crate::deps::Readiness;
use crate::metrics::Metrics;
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
    gauges: ReadinessGauges,
    /// The last readiness answer and when it was made; the lock also makes
    /// concurrent probes wait for one check instead of each making one.
    last: Arc<tokio::sync::Mutex<Option<(Instant, Readiness)>>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: &'static str,
}

/// What the last readiness check found, as gauges (`orders_ready`,
/// `orders_dependency_up`): the alerts on a database or broker that is
/// down read them.
#[derive(Clone, Default)]
struct ReadinessGauges {
    ready: Gauge,
    up: Family<DependencyLabel, Gauge>,
}

impl ReadinessGauges {
    fn set(&self, readiness: &Readiness) {
        self.ready.set(i64::from(readiness.is_ready()));
        for (dependency, check) in [
            ("postgres", &readiness.checks.postgres),
            ("kafka", &readiness.checks.kafka),
        ] {
            self.up
                .get_or_create(&DependencyLabel { dependency })
                .set(i64::from(check == "up"));
        }
    }
}

/// Adds the process-wide metrics every service exports to `metrics`.
fn register_common_metrics(
    metrics: &mut Metrics,
    service: &'static str,
    deps: &Deps,
) -> ReadinessGauges {
    let platform = metrics.platform();
    platform.register(
        "service",
        "Which service this process is and its version",
        Info::new(vec![
            ("name", service),
            ("version", env!("CARGO_PKG_VERSION")),
        ]),
    );
    let gauges = ReadinessGauges::default();
    platform.register(
        "ready",
        "1 when the last readiness check found PostgreSQL and Kafka working and no worker \
         stalled, else 0 (checked at each scrape and each probe, at most once a second)",
        gauges.ready.clone(),
    );
    platform.register(
        "dependency_up",
        "1 when the last readiness check reached the dependency, else 0",
        gauges.up.clone(),
    );
    metrics.observe_pool("main", deps.pg.clone());
    gauges
}

/// The paths [`router`] serves (all `GET`, all public, as the contract
/// says: probes and scrapers carry no token).
pub const PATHS: [&str; 3] = ["/health/live", "/health/ready", "/metrics"];

/// `/health/live`, `/health/ready` and `/metrics`, over the given
/// dependencies, the process's watched workers and its metrics;
/// for [`crate::auth::RouteTable::public`].
pub fn router<S: Clone + Send + Sync + 'static>(
    service: &'static str,
    deps: Deps,
    watchdog: Watchdog,
    mut metrics: Metrics,
) -> Router<S> {
    let gauges = register_common_metrics(&mut metrics, service, &deps);
    let state = OpsState {
        deps,
        watchdog,
        registry: Arc::new(metrics.into_registry()),
        gauges,
        last: Arc::default(),
    };
    let [live_path, ready_path, metrics_path] = PATHS;
    Router::new()
        .route(live_path, get(live))
        .route(ready_path, get(readiness))
        .route(metrics_path, get(scrape))
        .with_state(state)
}

async fn live() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "live" }))
}

impl OpsState {
    /// The last readiness answer if it is recent enough, else a new check.
    async fn readiness(&self) -> Readiness {
        let mut last = self.last.lock().await;
        match &*last {
            Some((at, readiness)) if at.elapsed() < READINESS_MAX_AGE => readiness.clone(),
            _ => {
                let readiness = self.deps.readiness(&self.watchdog).await;
                self.gauges.set(&readiness);
                if !readiness.is_ready() {
                    tracing::warn!(
                        down = ?readiness.down, checks = ?readiness.checks,
                        stalled = ?readiness.stalled, "not ready"
                    );
                }
                *last = Some((Instant::now(), readiness.clone()));
                readiness
            }
        }
    }
}

async fn readiness(State(state): State<OpsState>) -> Response {
    let readiness = state.readiness().await;
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

/// A scrape: the readiness gauges brought up to date (so that an alert on
/// a database that is down needs no prober besides Prometheus), then
/// every metric, in the format the scraper asked for.
async fn scrape(State(state): State<OpsState>, headers: HeaderMap) -> Response {
    state.readiness().await;
    match crate::metrics::exposition(&state.registry, &headers) {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
