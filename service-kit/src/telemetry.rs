//! Logs and traces through `tracing`: JSON (or human-readable) log lines to
//! stderr, and, when an OTLP endpoint is configured, every span exported to
//! it with OpenTelemetry.
//!
//! Without an endpoint no OpenTelemetry layer is installed at all, so spans
//! cost only what the log layer does with them, and the helpers below find
//! no trace context: they return `None` and do nothing. With one, spans are
//! batched on the SDK's own thread and sent over OTLP/HTTP (protobuf or
//! JSON) through the workspace's reqwest client, run on the runtime that
//! called [`init`]; no gRPC stack is linked.
//!
//! The trace context crosses processes as a W3C `traceparent`: in HTTP
//! headers ([`continue_from`], [`inject`]), in every stored event's
//! metadata ([`current_traceparent`], written by whoever appends) and so in
//! every relayed message, from which consumers start spans linked to the
//! producer's ([`link`]).
//!
//! The subscriber is process-wide: a second [`init`] in the same process
//! (tests that start several services in one process) keeps the first, and
//! its exporter, and returns a guard that owns nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_http::{Bytes, HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, ShouldSample,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where traces go: the standard OpenTelemetry variables.
#[derive(Debug, Clone, clap::Args)]
pub struct TracesConfig {
    /// Base URL of an OTLP/HTTP collector (Jaeger's port 4318, for example
    /// `http://127.0.0.1:4318`); spans are sent to `<url>/v1/traces`. Unset:
    /// no spans are exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Full URL spans are sent to, instead of OTEL_EXPORTER_OTLP_ENDPOINT's
    /// `/v1/traces`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_traces_endpoint: Option<String>,

    /// How spans are encoded: `http/protobuf` or `http/json` (gRPC is not
    /// built in).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf",
        value_parser = ["http/protobuf", "http/json"]
    )]
    pub otlp_protocol: String,

    /// The `service.name` spans are exported under; the service's own name
    /// when unset.
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,

    /// Most finished spans waiting to be sent; more are dropped (so a slow
    /// collector never holds up a request).
    #[arg(long, env = "OTEL_BSP_MAX_QUEUE_SIZE", default_value_t = 2048)]
    pub max_queue_size: usize,

    /// How often the spans waiting are sent, in milliseconds (sooner when
    /// 512 are waiting).
    #[arg(long, env = "OTEL_BSP_SCHEDULE_DELAY", default_value_t = 5000)]
    pub schedule_delay_ms: u64,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_traces_endpoint: None,
            otlp_protocol: "http/protobuf".into(),
            service_name: None,
            max_queue_size: 2048,
            schedule_delay_ms: 5000,
        }
    }
}

impl TracesConfig {
    /// Where spans are sent, when anywhere.
    pub fn traces_url(&self) -> Option<String> {
        let nonempty = |url: &Option<String>| url.clone().filter(|url| !url.trim().is_empty());
        nonempty(&self.otlp_traces_endpoint).or_else(|| {
            nonempty(&self.otlp_endpoint)
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })
    }
}

/// Whether this process's subscriber exports spans: the helpers below do
/// nothing without, not even parse a `traceparent`.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The most links a span gets ([`link_all`]): the SDK's default limit.
pub const MAX_LINKS: usize = 128;

/// Owns the exporter: [`Telemetry::shutdown`] sends the spans still
/// batched. Dropping it without shutting down loses them.
#[must_use = "shut the telemetry down to send the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether this process exports spans.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still batched and stops the exporter. The SDK
    /// blocks while it flushes (its exporter runs on the runtime), so it
    /// does so on a blocking thread.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "flushing the last spans failed");
        }
    }
}

/// Installs the process-wide subscriber: log lines in `format` (`json`,
/// `pretty`, or `none` for no log lines: tests) filtered by `filter`, and,
/// when `traces` names an endpoint, spans exported over OTLP as `service`
/// (or `OTEL_SERVICE_NAME`). Must be called on a Tokio runtime that
/// outlives the exporter: the exporter's requests run there. A second call
/// keeps the first subscriber.
pub fn init(
    service: &str,
    format: &str,
    filter: &str,
    traces: &TracesConfig,
) -> anyhow::Result<Telemetry> {
    init_sampled(service, format, filter, traces, None::<Sampler>)
}

/// [`init`] with `sampler` choosing the spans exported, instead of the
/// SDK's default (`OTEL_TRACES_SAMPLER`, else every span whose parent, if
/// any, was sampled). The tests export only while a test reads spans.
pub fn init_sampled(
    service: &str,
    format: &str,
    filter: &str,
    traces: &TracesConfig,
    sampler: Option<impl ShouldSample + 'static>,
) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match traces.traces_url() {
        Some(url) => Some(tracer_provider(service, &url, traces, sampler)?),
        None => None,
    };
    let otel = provider.as_ref().map(|provider| {
        // What each span costs is paid on the request path, so the layer
        // records only what a trace viewer needs: no thread attributes
        // (an allocation per span), no source location (three attributes
        // per span to encode and send; the span's name says where it is),
        // no OpenTelemetry context made current on every poll of an
        // instrumented future (nothing here reads `Context::current`:
        // propagation takes a span's context from the span), and no log
        // line copied into its span as an event unless it is a warning or
        // an error.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service.to_owned()))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_context_activation(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                metadata.is_span() || *metadata.level() <= tracing::Level::WARN
            }))
    });
    let (pretty, json) = if format == "none" {
        (None, None)
    } else if format == "pretty" {
        (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(log_lines()),
            ),
            None,
        )
    } else {
        let json = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(log_lines());
        (None, Some(json))
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(pretty)
        .with(json)
        .with(otel)
        .try_init()
        .is_ok();
    let provider = provider.filter(|_| installed);
    if provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider })
}

/// What the log layer sees: every event `RUST_LOG` lets through, and the
/// spans whose fields a log line should carry (a request's, a saga's, a
/// consumer's batch), but not the event store's spans around each
/// statement. The log layer formats every span it sees when the span
/// starts, whether or not a line is ever logged in it, and those are
/// several per request; without an exporter, nothing else wants them, so
/// they are not made at all. A line logged inside one carries the
/// request's fields instead.
fn log_lines() -> tracing_subscriber::filter::FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(|metadata| {
        !(metadata.is_span() && metadata.target().starts_with("event_store"))
    })
}

/// Logs only, for one-shot commands (`migrate`, `rebuild`): no spans are
/// exported whatever the environment says.
pub fn init_logs(format: &str, filter: &str) {
    let _no_exporter = init("", format, filter, &TracesConfig::default());
}

/// The SDK's tracer provider, batching spans to `url`.
fn tracer_provider(
    service: &str,
    url: &str,
    traces: &TracesConfig,
    sampler: Option<impl ShouldSample + 'static>,
) -> anyhow::Result<SdkTracerProvider> {
    let protocol = match traces.otlp_protocol.as_str() {
        "http/json" => Protocol::HttpJson,
        _ => Protocol::HttpBinary,
    };
    let client = RuntimeClient {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the OTLP client")?,
        runtime: tokio::runtime::Handle::try_current()
            .context("the OTLP exporter needs a Tokio runtime")?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url)
        .with_protocol(protocol)
        .build()
        .context("building the OTLP span exporter")?;
    let name = traces
        .service_name
        .clone()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| service.to_owned());
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(traces.max_queue_size.max(1))
                .with_scheduled_delay(Duration::from_millis(traces.schedule_delay_ms))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .build(),
        );
    Ok(match sampler {
        Some(sampler) => provider.with_sampler(sampler),
        None => provider,
    }
    .build())
}

/// The exporter's HTTP client: the SDK calls it from its own batch thread,
/// outside any runtime, so each request is spawned onto the runtime that
/// built it. (The exporter's own reqwest client would be a second reqwest
/// version; its hyper client would need a runtime on that thread.)
#[derive(Debug)]
struct RuntimeClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl HttpClient for RuntimeClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: opentelemetry_http::Request<Bytes>,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<opentelemetry_http::Response<Bytes>, HttpError>> + Send + 'b,
        >,
    >
    where
        'a: 'b,
        Self: 'b,
    {
        let http = self.http.clone();
        let sent = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = http.execute(request).await?;
            let mut answer = opentelemetry_http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(answer.body(body)?)
        });
        Box::pin(async move {
            let response = sent.await??;
            if response.status().is_success() {
                Ok(response)
            } else {
                Err(format!("the collector answered {}", response.status()).into())
            }
        })
    }
}

/// Whether this process exports spans: work done only for the exporter
/// (naming a span for OpenTelemetry, say) is skipped without.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of `span`, when spans are exported.
pub fn traceparent_of(span: &Span) -> Option<String> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The W3C `traceparent` of the current span, when spans are exported:
/// what an append stamps into its events' metadata, so consumers can link
/// to the span that wrote them.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&Span::current())
}

/// Makes `span` (not yet entered) a child of the trace context `headers`
/// carry (`traceparent`, `tracestate`), if any.
pub fn continue_from(span: &Span, headers: &HeaderMap) {
    if !exporting() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Adds `span`'s trace context to `headers` (`traceparent`), for the
/// service it calls to continue the trace.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if !exporting() {
        return;
    }
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// Links `span` (not yet entered) to the span `traceparent` names, as a
/// consumer's span links to the producer's (OpenTelemetry's messaging
/// conventions). A malformed `traceparent` adds nothing.
pub fn link(span: &Span, traceparent: &str) {
    if !exporting() {
        return;
    }
    if let Some(context) = parse_traceparent(traceparent) {
        span.add_link(context);
    }
}

/// Links `span` (not yet entered) to each of the first [`MAX_LINKS`]
/// traceparents: a span for a batch of messages links to every message's
/// producer (OpenTelemetry's messaging conventions for batches).
pub fn link_all(span: &Span, traceparents: impl IntoIterator<Item = impl AsRef<str>>) {
    if !exporting() || span.is_disabled() {
        return;
    }
    for traceparent in traceparents.into_iter().take(MAX_LINKS) {
        link(span, traceparent.as_ref());
    }
}

/// The span of a consumer's processing of one batch of messages from
/// `topic` (OpenTelemetry's messaging conventions: a `process` span, which
/// [`link_all`] links to each message's producer).
pub fn consumer_span(topic: &str, group: &str, messages: usize) -> Span {
    tracing::info_span!(
        "process",
        otel.name = format!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = topic,
        messaging.consumer.group.name = group,
        messaging.batch.message_count = messages,
    )
}

/// The `traceparent` an event's metadata holds, if any.
pub fn traceparent_in(metadata: &serde_json::Value) -> Option<&str> {
    metadata
        .get("traceparent")
        .and_then(serde_json::Value::as_str)
}

/// A W3C `traceparent` (`00-<trace id>-<span id>-<flags>`) as a remote
/// span context.
fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_parsed_and_a_malformed_one_is_not() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let context = parse_traceparent(good).expect("valid");
        assert_eq!(
            context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(context.span_id().to_string(), "b7ad6b7169203331");
        assert!(context.is_sampled());
        for bad in [
            "",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_traces_url_is_the_endpoint_with_its_signal_path() {
        let mut config = TracesConfig::default();
        assert_eq!(config.traces_url(), None);
        config.otlp_endpoint = Some("http://jaeger:4318/".into());
        assert_eq!(
            config.traces_url().as_deref(),
            Some("http://jaeger:4318/v1/traces")
        );
        config.otlp_traces_endpoint = Some("http://collector/traces".into());
        assert_eq!(
            config.traces_url().as_deref(),
            Some("http://collector/traces")
        );
    }

    #[test]
    fn without_an_exporter_no_context_is_found_or_sent() {
        let span = tracing::info_span!("nothing");
        assert_eq!(traceparent_of(&span), None);
        let mut headers = HeaderMap::new();
        inject(&span, &mut headers);
        assert!(headers.is_empty());
    }
}
