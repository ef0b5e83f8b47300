//! Builds the read models from the event stream, and rebuilds them from the event store.

use std::net::SocketAddr;

use prometheus_client::registry::Registry;
use service_kit::{CommonConfig, Deps};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The name this service reports in logs and metrics.
pub const SERVICE: &str = "projector";

/// Settings of the projector, from flags or environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "projector",
    version,
    about = "Builds the read models from the event stream, and rebuilds them from the event store."
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8084")]
    pub http_addr: SocketAddr,

    #[command(flatten)]
    pub common: CommonConfig,
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let deps = Deps::new(&config.common)?;
    let registry = Registry::default();
    let app = service_kit::ops::router(SERVICE, deps, registry);
    service_kit::serve(listener, app, shutdown).await
}
