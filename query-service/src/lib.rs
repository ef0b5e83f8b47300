//! The read side: HTTP queries over the read models, including saga progress.

use std::net::SocketAddr;

use prometheus_client::registry::Registry;
use service_kit::{CommonConfig, Deps};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The name this service reports in logs and metrics.
pub const SERVICE: &str = "query-service";

/// Settings of the query-service, from flags or environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "query-service",
    version,
    about = "The read side: HTTP queries over the read models, including saga progress."
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8082")]
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
