//! What every service exports at `/metrics`, and how.
//!
//! - [`Metrics`] is a process's registry. The platform's own metrics go
//!   under one namespace, [`NAMESPACE`] (`orders_...`), through
//!   [`Metrics::platform`]; metrics that OpenTelemetry's semantic
//!   conventions name keep that name, unprefixed, so that dashboards and
//!   alerts written for any service work here too:
//!   `http_server_request_duration_seconds` ([`HttpMetrics`]) and
//!   `db_client_connections_usage` / `db_client_connections_max`
//!   ([`Metrics::observe_pool`]).
//! - [`HttpMetrics::instrument`] records every request's duration by the route
//!   template it matched (`/v1/orders/{id}`, never the raw path, so ids do
//!   not make a series each), its method and its status.
//! - [`exposition`] answers a scrape in the format the scraper asked for:
//!   OpenMetrics when its `Accept` names `application/openmetrics-text`,
//!   else Prometheus' text format 0.0.4 ([`prometheus_text`]), each with
//!   its own content type.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The prefix of every metric the platform defines itself.
pub const NAMESPACE: &str = "orders";

/// The content type of Prometheus' text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A process's metric registry.
pub struct Metrics {
    registry: Registry,
    http: HttpMetrics,
    pools: PoolCollector,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        let pools = PoolCollector::default();
        registry.register_collector(Box::new(pools.clone()));
        Self {
            registry,
            http,
            pools,
        }
    }

    /// Reports `pool`'s connections as `name` at each scrape.
    pub fn observe_pool(&self, name: &'static str, pool: sqlx::PgPool) {
        self.pools
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name, pool));
    }

    /// Where the platform's own metrics are registered: each name gets
    /// the `orders_` prefix.
    pub fn platform(&mut self) -> &mut Registry {
        // Each call adds a sub-registry with the same prefix; they are
        // encoded one after the other, which is all a scrape needs.
        self.registry.sub_registry_with_prefix(NAMESPACE)
    }

    /// The request-duration histogram, to put around each listener.
    pub fn http(&self) -> HttpMetrics {
        self.http.clone()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn into_registry(self) -> Registry {
        self.registry
    }
}

/// The labels of `http_server_request_duration_seconds`, as OpenTelemetry
/// names the attributes (dots become underscores in Prometheus).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    http_request_method: &'static str,
    /// The route template that matched; empty for a path no route serves
    /// (such requests are one series whatever their path).
    http_route: Arc<str>,
    http_response_status_code: u16,
}

/// OpenTelemetry's advice for `http.server.request.duration`, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// `http_server_request_duration_seconds`, a histogram by route template,
/// method and status.
#[derive(Clone)]
pub struct HttpMetrics {
    durations: Family<HttpLabels, Histogram, fn() -> Histogram>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl HttpMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            durations: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
        };
        registry.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests, by the route template they matched",
            metrics.durations.clone(),
        );
        metrics
    }

    /// `router` with each request's duration recorded once it is
    /// answered. Applied outermost (with `Router::layer`, where axum has
    /// already matched the route) so that refusals by the limits and
    /// caught panics count too.
    pub fn instrument(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), record))
    }

    fn observe(&self, method: &Method, route: Arc<str>, status: u16, seconds: f64) {
        self.durations
            .get_or_create(&HttpLabels {
                http_request_method: method_label(method),
                http_route: route,
                http_response_status_code: status,
            })
            .observe(seconds);
    }
}

async fn record(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route: Arc<str> = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| Arc::from(""), |path| Arc::from(path.as_str()));
    let response = next.run(request).await;
    metrics.observe(
        &method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The method as a label: the known ones by name, any other as `_OTHER`
/// (OpenTelemetry's rule), so that a client cannot create series at will.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The PostgreSQL pool's connections at each scrape, by state, as
/// OpenTelemetry's `db.client.connections.usage` and
/// `db.client.connections.max` (the names of semantic conventions 1.24;
/// the newer `db.client.connection.count` would end in `_count`, which
/// Prometheus keeps for histograms and summaries).
/// One collector for all of a process's pools: each family may be written
/// once per scrape.
#[derive(Debug, Clone, Default)]
struct PoolCollector {
    pools: Arc<std::sync::Mutex<Vec<(&'static str, sqlx::PgPool)>>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool_name: &'static str,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolNameLabel {
    pool_name: &'static str,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pools = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut family = encoder.encode_descriptor(
            "db_client_connections_usage",
            "Connections of each PostgreSQL pool, by state (used: lent to a query now)",
            None,
            ConstGauge::new(0_i64).metric_type(),
        )?;
        for (name, pool) in &pools {
            let size = i64::from(pool.size());
            let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
            for (state, value) in [("idle", idle), ("used", (size - idle).max(0))] {
                let labels = PoolLabels {
                    pool_name: name,
                    state,
                };
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "db_client_connections_max",
            "The most connections each PostgreSQL pool opens",
            None,
            ConstGauge::new(0_i64).metric_type(),
        )?;
        for (name, pool) in &pools {
            let max = ConstGauge::new(i64::from(pool.options().get_max_connections()));
            max.encode(family.encode_family(&PoolNameLabel { pool_name: name })?)?;
        }
        Ok(())
    }
}

/// The body and content type of a scrape of `registry`, in the format
/// the request's `Accept` header asks for.
pub fn exposition(
    registry: &Registry,
    headers: &HeaderMap,
) -> Result<(HeaderValue, String), std::fmt::Error> {
    let mut openmetrics = String::new();
    prometheus_client::encoding::text::encode(&mut openmetrics, registry)?;
    if wants_openmetrics(headers) {
        Ok((HeaderValue::from_static(OPENMETRICS_TEXT), openmetrics))
    } else {
        Ok((
            HeaderValue::from_static(PROMETHEUS_TEXT),
            prometheus_text(&openmetrics),
        ))
    }
}

/// Whether `Accept` names OpenMetrics' text format with a non-zero
/// quality. Prometheus asks for it first and falls back to the text
/// format; other scrapers (and curl) ask for neither and get the text
/// format.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            media.eq_ignore_ascii_case("application/openmetrics-text")
                && !parts.any(|parameter| {
                    parameter
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
}

/// Prometheus' text format 0.0.4 from the OpenMetrics text that
/// `prometheus_client` writes. The samples are the same; what differs is
/// the metadata: a counter's `# HELP`/`# TYPE` name its `_total` sample,
/// an info metric is a gauge named `..._info`, OpenMetrics' `unknown` is
/// `untyped`, and there are no `# UNIT` lines and no `# EOF`.
pub fn prometheus_text(openmetrics: &str) -> String {
    // The metadata lines of a family come before its samples, so each
    // family's type is known before its HELP is rewritten... except that
    // HELP comes first: read the TYPE lines in a first pass.
    let types: std::collections::HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    let renamed = |name: &str| -> String {
        match types.get(name).copied() {
            Some("counter") => format!("{name}_total"),
            Some("info") => format!("{name}_info"),
            _ => name.to_owned(),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some((name, help)) = line
            .strip_prefix("# HELP ")
            .and_then(|rest| rest.split_once(' '))
        {
            out.push_str(&format!("# HELP {} {help}\n", renamed(name)));
        } else if let Some((name, kind)) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split_once(' '))
        {
            let kind = match kind {
                "info" | "stateset" => "gauge",
                "unknown" | "gaugehistogram" => "untyped",
                other => other,
            };
            out.push_str(&format!("# TYPE {} {kind}\n", renamed(name)));
        } else if !line.starts_with("# ") && !line.ends_with("_created") {
            // An exemplar (` # {...} value`) has no place in the text
            // format; this platform records none, but drop one safely.
            let sample = match line.find("} # {") {
                Some(at) => &line[..=at],
                None => line,
            };
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::info::Info;

    fn encoded(registry: &Registry) -> String {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, registry).unwrap();
        body
    }

    #[test]
    fn the_text_format_names_each_family_by_its_samples() {
        let mut metrics = Metrics::new();
        let counter: Counter = Counter::default();
        counter.inc_by(3);
        metrics
            .platform()
            .register("sagas_started", "Sagas started", counter);
        metrics.platform().register(
            "service",
            "Which service",
            Info::new(vec![("name", "query-service")]),
        );
        let gauge: Gauge = Gauge::default();
        gauge.set(2);
        metrics.platform().register("ready", "Ready", gauge);
        metrics
            .http()
            .observe(&Method::GET, Arc::from("/v1/orders/{id}"), 200, 0.02);

        let text = prometheus_text(&encoded(metrics.registry()));

        assert!(
            text.contains("# HELP orders_sagas_started_total Sagas started.\n# TYPE orders_sagas_started_total counter\norders_sagas_started_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "# TYPE orders_service_info gauge\norders_service_info{name=\"query-service\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE orders_ready gauge\norders_ready 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE http_server_request_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "http_server_request_duration_seconds_bucket{le=\"0.025\",http_request_method=\"GET\",http_route=\"/v1/orders/{id}\",http_response_status_code=\"200\"} 1\n"
            ),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        assert!(!text.contains("# UNIT"), "{text}");
    }

    #[test]
    fn openmetrics_only_when_the_scraper_asks_for_it() {
        let accept = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static(value));
            headers
        };
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics(&accept(prometheus)));
        assert!(!wants_openmetrics(&accept("*/*")));
        assert!(!wants_openmetrics(&accept("text/plain")));
        assert!(!wants_openmetrics(&accept(
            "application/openmetrics-text; q=0, text/plain"
        )));
        assert!(!wants_openmetrics(&HeaderMap::new()));

        let registry = Metrics::new();
        let (kind, body) = exposition(registry.registry(), &accept(prometheus)).unwrap();
        assert_eq!(kind, OPENMETRICS_TEXT);
        assert!(body.ends_with("# EOF\n"), "{body}");
        let (kind, body) = exposition(registry.registry(), &HeaderMap::new()).unwrap();
        assert_eq!(kind, PROMETHEUS_TEXT);
        assert!(!body.contains("# EOF"), "{body}");
    }

    #[test]
    fn unknown_methods_are_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(
            method_label(&Method::from_bytes(b"BREW").unwrap()),
            "_OTHER"
        );
    }
}
