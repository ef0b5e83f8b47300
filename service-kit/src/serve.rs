use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::Limits;
use crate::metrics::HttpMetrics;
use crate::{CommonConfig, shutdown, telemetry};

/// Serves `router` behind `limits`, each request in its span with its
/// correlation id (`http::trace`), on `listener` until `shutdown` is
/// cancelled, then lets in-flight requests finish. Every request's
/// duration goes to `http`, refusals by the limits included.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    http: &HttpMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let router = http.instrument(crate::http::trace::apply(limits.apply(router)));
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("HTTP server failed")
}

/// The body of every service's `main`: logging and traces, the listener,
/// the signal handler, then the service's own `run`; at the end the spans
/// still batched are sent.
pub async fn service_main<F, Fut>(
    service: &'static str,
    common: &CommonConfig,
    http_addr: SocketAddr,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let telemetry = telemetry::init(
        service,
        &common.log_format,
        &common.log_filter,
        &common.traces,
    )?;
    tracing::info!(
        service,
        config = ?common,
        exporting_spans = telemetry.exporting(),
        "starting"
    );
    let listener = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding {http_addr}"))?;
    let shutdown = shutdown::on_signal();
    let result = run(listener, shutdown).await;
    match &result {
        Ok(()) => tracing::info!(service, "stopped"),
        Err(error) => tracing::error!(service, error = format!("{error:#}"), "failed"),
    }
    telemetry.shutdown().await;
    result
}
