//! What every listener does around every request, from tower-http: the
//! `Authorization` header marked sensitive (so no span or log shows it);
//! the correlation id (`X-Correlation-Id`: the caller's when well formed,
//! else a new UUID; put on the request for handlers, and echoed on the
//! response); and the request's span, named by method and matched route
//! template, a child of the caller's `traceparent`, with one log line per
//! response at `debug`.
//!
//! The layers go on the router's routes (`Router::layer`), so the span
//! knows the route that matched; an unmatched request's span is named by
//! its method alone.

use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderName, HeaderValue, Response};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header that carries a request's correlation id, which becomes the
/// `correlation_id` of the events it appends.
pub const CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// The longest correlation id taken from a caller.
const CORRELATION_MAX_LEN: usize = 128;

/// `router` with the layers of the module's description around each route.
pub fn apply(router: Router) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(make_span)
        .on_request(())
        .on_response(on_response)
        .on_failure(on_failure);
    // The last layer added is the outermost.
    router
        .layer(PropagateRequestIdLayer::new(CORRELATION_HEADER))
        .layer(trace)
        .layer(SetRequestIdLayer::new(CORRELATION_HEADER, NewCorrelationId))
        .layer(axum::middleware::map_request(drop_malformed_correlation_id))
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
}

/// The request's correlation id, as the layers set it (a new one when
/// the layers were not applied).
pub fn correlation_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(CORRELATION_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| well_formed(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// A caller's id of at most 128 visible ASCII characters is kept.
fn well_formed(id: &str) -> bool {
    !id.is_empty() && id.len() <= CORRELATION_MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Removes an `X-Correlation-Id` that is not [`well_formed`], so a new one
/// is made for the request.
async fn drop_malformed_correlation_id(mut request: Request) -> Request {
    let malformed = request
        .headers()
        .get(CORRELATION_HEADER)
        .is_some_and(|value| !value.to_str().is_ok_and(well_formed));
    if malformed {
        request.headers_mut().remove(CORRELATION_HEADER);
    }
    request
}

/// Makes a correlation id for a request that brought none: a UUID.
#[derive(Debug, Clone, Copy)]
struct NewCorrelationId;

impl MakeRequestId for NewCorrelationId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::new_v4().to_string();
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The request's span: `<METHOD> <route template>` (OpenTelemetry's HTTP
/// server span name), continuing the caller's trace. Only cheap fields,
/// all known at the start: the log layer formats a span's fields when it
/// starts, and again, whole, at every `record`, so what only an exporter
/// reads (the name, the status) goes to the exporter alone.
fn make_span<B>(request: &axum::http::Request<B>) -> Span {
    let method = request.method().as_str();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let correlation_id = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    macro_rules! request_span {
        ($($name:tt)*) => {
            tracing::info_span!(
                "request",
                $($name)*
                otel.kind = "server",
                http.request.method = method,
                http.route = route,
                url.path = request.uri().path(),
                correlation_id,
            )
        };
    }
    if !crate::telemetry::exporting() {
        return request_span!();
    }
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = request_span!(otel.name = name,);
    crate::telemetry::continue_from(&span, request.headers());
    span
}

/// The target of the per-response log line, apart from the spans' so that
/// `RUST_LOG=info,service_kit::http::response=debug` adds the lines and
/// nothing else.
const RESPONSE_LOG: &str = "service_kit::http::response";

/// The response's status on the exported span, and one log line per
/// response at `debug` (tower-http's own level for it): a line per
/// request is a file's worth of JSON a minute under load, and formatting
/// it cost more than the request's span (BENCHMARKS.md, "The cost of
/// tracing"). Server errors are logged where they happen, with their
/// cause.
fn on_response<B>(response: &Response<B>, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    if crate::telemetry::exporting() {
        span.set_attribute("http.response.status_code", i64::from(status));
    }
    tracing::debug!(
        target: RESPONSE_LOG,
        parent: span,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        "answered"
    );
}

/// A 5xx marks the exported span as failed (OpenTelemetry's HTTP
/// conventions); the handler's error log says the rest.
fn on_failure(_failure: ServerErrorsFailureClass, _latency: Duration, span: &Span) {
    if crate::telemetry::exporting() {
        span.set_status(opentelemetry::trace::Status::error("server error"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn correlation_of(request: axum::http::Request<Body>) -> (String, String) {
        let app = apply(Router::new().route(
            "/echo",
            get(|headers: axum::http::HeaderMap| async move { correlation_id(&headers) }),
        ));
        let response = app.oneshot(request).await.unwrap();
        let echoed = response.headers()[CORRELATION_HEADER]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 10)
            .await
            .unwrap();
        (echoed, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_callers_correlation_id_reaches_the_handler_and_is_echoed() {
        let request = axum::http::Request::get("/echo")
            .header("x-correlation-id", "checkout-42")
            .body(Body::empty())
            .unwrap();
        let (echoed, seen) = correlation_of(request).await;
        assert_eq!(echoed, "checkout-42");
        assert_eq!(seen, "checkout-42");
    }

    #[tokio::test]
    async fn a_missing_or_malformed_correlation_id_is_replaced_by_a_uuid() {
        for sent in [None, Some("x".repeat(129)), Some("has space".to_owned())] {
            let mut request = axum::http::Request::get("/echo");
            if let Some(sent) = &sent {
                request = request.header("x-correlation-id", sent);
            }
            let (echoed, seen) = correlation_of(request.body(Body::empty()).unwrap()).await;
            assert_eq!(echoed, seen, "{sent:?}");
            assert!(uuid::Uuid::parse_str(&seen).is_ok(), "{sent:?}: {seen}");
        }
    }
}
