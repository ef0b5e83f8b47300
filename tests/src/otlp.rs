//! A small OTLP/HTTP receiver (`POST /v1/traces`, JSON encoding), and the
//! test binary's telemetry, which exports every span to it.
//!
//! The services of a test run in the test's process, and `tracing`'s
//! subscriber (with its OpenTelemetry layer and exporter) is process-wide:
//! so the harness installs it once per test binary, through the same
//! `service_kit::telemetry::init` the services' `main` calls, pointed at
//! this receiver, before the first test starts its services. Every test's
//! spans arrive here; a test finds its own by trace id and links from an
//! id it knows (its order's events carry the `traceparent` of the span
//! that appended them).
//!
//! Spans are exported only while a test that reads them holds a
//! [`Recording`] ([`record`]): the other tests' spans are made (their
//! events still store a `traceparent`) but not sampled, so they cost the
//! suite no export. While one records, every test's spans are exported.
//!
//! The receiver and the exporter's requests run on a thread with its own
//! runtime, so they outlive each test's runtime (like `infra`'s).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry::trace::{
    Link, SamplingDecision, SamplingResult, SpanKind, TraceContextExt, TraceId,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::ShouldSample;
use serde_json::Value;

/// The most spans kept; older ones are dropped (the suite's other tests
/// export spans too).
const KEPT: usize = 200_000;

/// A span as exported.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: Kind,
    /// Attributes, each value as text.
    pub attributes: HashMap<String, String>,
    /// The spans it links to: (trace id, span id).
    pub links: Vec<(String, String)>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// OpenTelemetry's span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// The spans received so far.
#[derive(Clone, Default)]
pub struct Collector {
    spans: Arc<Mutex<VecDeque<Span>>>,
}

impl Collector {
    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect()
    }

    fn take(&self, request: &Value) -> usize {
        let mut received = 0;
        let mut spans = self.spans.lock().expect("not poisoned");
        for resource in array(&request["resourceSpans"]) {
            for scope in array(&resource["scopeSpans"]) {
                for span in array(&scope["spans"]) {
                    if spans.len() == KEPT {
                        spans.pop_front();
                    }
                    spans.push_back(parse(span));
                    received += 1;
                }
            }
        }
        received
    }
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// One span of OTLP's JSON encoding (ids in hex; the kind as a number or
/// a name; attribute values as `{"<type>Value": ...}`).
fn parse(span: &Value) -> Span {
    let text = |value: &Value| value.as_str().unwrap_or("").to_owned();
    let kind = match &span["kind"] {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(name) => match name.as_str() {
            "SPAN_KIND_SERVER" => 2,
            "SPAN_KIND_CLIENT" => 3,
            "SPAN_KIND_PRODUCER" => 4,
            "SPAN_KIND_CONSUMER" => 5,
            _ => 1,
        },
        _ => 1,
    };
    let attributes = array(&span["attributes"])
        .iter()
        .map(|attribute| {
            let value = attribute["value"]
                .as_object()
                .and_then(|value| value.values().next())
                .map(|value| match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (text(&attribute["key"]), value)
        })
        .collect();
    Span {
        trace_id: text(&span["traceId"]),
        span_id: text(&span["spanId"]),
        parent_span_id: text(&span["parentSpanId"]),
        name: text(&span["name"]),
        kind: match kind {
            2 => Kind::Server,
            3 => Kind::Client,
            4 => Kind::Producer,
            5 => Kind::Consumer,
            _ => Kind::Internal,
        },
        attributes,
        links: array(&span["links"])
            .iter()
            .map(|link| (text(&link["traceId"]), text(&link["spanId"])))
            .collect(),
    }
}

async fn receive(State(collector): State<Collector>, body: Bytes) -> StatusCode {
    match serde_json::from_slice::<Value>(&body) {
        Ok(request) => {
            collector.take(&request);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// An OTLP/HTTP receiver on `listener` keeping what it receives in
/// `collector`, until the runtime ends.
pub async fn serve(listener: tokio::net::TcpListener, collector: Collector) {
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(collector);
    let _ = axum::serve(listener, app).await;
}

/// The test binary's receiver, started (and the binary's telemetry
/// installed, exporting to it) on first use.
pub fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let (started, ready) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("a runtime for the OTLP receiver");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("binding the OTLP receiver");
                    let url = format!("http://{}", listener.local_addr().expect("an address"));
                    let collector = Collector::default();
                    install_telemetry(&url);
                    started.send(collector.clone()).expect("the test waits");
                    serve(listener, collector).await;
                });
            })
            .expect("spawning the OTLP receiver's thread");
        ready.recv().expect("the OTLP receiver started")
    })
}

/// How many tests are recording spans now.
static RECORDING: AtomicUsize = AtomicUsize::new(0);

/// While held, every span of the test binary is exported to the receiver.
#[must_use = "spans are exported only while it is held"]
pub struct Recording(());

impl Drop for Recording {
    fn drop(&mut self) {
        RECORDING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts exporting spans (the receiver and the binary's telemetry first,
/// if need be) until the [`Recording`] is dropped; returns the receiver.
pub fn record() -> (&'static Collector, Recording) {
    let collector = collector();
    RECORDING.fetch_add(1, Ordering::SeqCst);
    (collector, Recording(()))
}

/// Samples every span while a test records, none otherwise.
#[derive(Debug, Clone, Copy)]
struct WhileRecording;

impl ShouldSample for WhileRecording {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        _trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let decision = if RECORDING.load(Ordering::Relaxed) > 0 {
            SamplingDecision::RecordAndSample
        } else {
            SamplingDecision::Drop
        };
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: parent_context
                .filter(|context| context.has_active_span())
                .map(|context| context.span().span_context().trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// The test binary's subscriber: spans exported as JSON to the receiver at
/// `url` while a test records; log lines only with `TEST_LOG=1`. Held for
/// the binary's life.
fn install_telemetry(url: &str) {
    let verbose = std::env::var("TEST_LOG").is_ok_and(|v| v == "1");
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let traces = service_kit::telemetry::TracesConfig {
        otlp_endpoint: Some(url.to_owned()),
        otlp_protocol: "http/json".into(),
        // Room for the spans of every test running at once, sent soon.
        max_queue_size: 1 << 16,
        schedule_delay_ms: 500,
        ..Default::default()
    };
    let format = if verbose { "pretty" } else { "none" };
    let telemetry = service_kit::telemetry::init_sampled(
        "platform-tests",
        format,
        &filter,
        &traces,
        Some(WhileRecording),
    )
    .expect("the tests' telemetry");
    // Never shut down: spans go on being exported until the binary exits.
    std::mem::forget(telemetry);
}
