//! The write side: HTTP commands decided by the domain and appended to the event store.

use std::net::SocketAddr;

use std::time::Duration;

use event_store::EventStore;
use event_store::relay::{self, RelayConfig, RelayMetrics};
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
    let mut registry = Registry::default();
    let relay_metrics = RelayMetrics::register(&mut registry);
    let store = EventStore::new(deps.pg.clone());
    let relay_config = RelayConfig::new(
        format!("{}events", config.common.kafka_topic_prefix),
        "/command-service",
    );
    // The relay starts once the schema is in place; the HTTP server (and so
    // /health) is up meanwhile.
    let relay = tokio::spawn({
        let (store, kafka, shutdown) = (store.clone(), deps.kafka_config(), shutdown.clone());
        async move {
            if migrate(&store, &shutdown).await {
                relay::run(store, kafka, relay_config, relay_metrics, shutdown).await;
            }
        }
    });
    let app = service_kit::ops::router(SERVICE, deps, registry);
    let served = service_kit::serve(listener, app, shutdown.clone()).await;
    shutdown.cancel();
    relay.await?;
    served
}

/// Applies the event store's migrations, retrying while PostgreSQL is
/// unreachable; false if shut down first.
async fn migrate(store: &EventStore, shutdown: &CancellationToken) -> bool {
    loop {
        match store.migrate().await {
            Ok(()) => return true,
            Err(error) => tracing::warn!(%error, "migrating the event store failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
