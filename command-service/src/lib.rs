//! The write side: HTTP commands decided by the domain and appended to the event store.

use std::net::SocketAddr;

use prometheus_client::registry::Registry;
use service_kit::{CommonConfig, Deps};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The name this service reports in logs and metrics.
pub const SERVICE: &str = "command-service";

/// Settings of the command-service, from flags or environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "command-service",
    version,
    about = "The write side: HTTP commands decided by the domain and appended to the event store."
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8081")]
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
