//! The read side: HTTP queries over the read models, including saga
//! progress.
//!
//! Layout: `http` has what every route shares (errors, `min_version`
//! waiting, cursors); `routes` has one module per resource; `openapi`
//! gathers the annotations into `/openapi.json`. The read models are the
//! projector's tables (`rm_*`); this service only reads them.

mod http;
mod openapi;
mod routes;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use service_kit::auth::{Access, Authenticator, RouteTable};
use service_kit::http::Problem;
use service_kit::{CommonConfig, Deps};
use sqlx::PgPool;
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

    /// PostgreSQL schema the projector keeps the read models in.
    #[arg(long, env = "READ_MODEL_SCHEMA", default_value = "public", value_parser = service_kit::config::parse_schema)]
    pub read_model_schema: String,

    /// Longest a `min_version` request waits for the read model to catch up
    /// before answering 504, in milliseconds.
    #[arg(long, env = "MIN_VERSION_TIMEOUT_MS", default_value_t = 5000)]
    pub min_version_timeout_ms: u64,

    #[command(flatten)]
    pub common: CommonConfig,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub min_version_timeout: Duration,
}

/// The read API's routes, each with who may call it (the contract's
/// Security section): a customer reads their own orders, account and
/// sagas; the catalogue is public; reports are for readers.
pub fn routes() -> RouteTable<AppState> {
    use routes::*;
    RouteTable::new()
        .merge(service_kit::openapi::routes(openapi::document))
        .get("/v1/orders", Access::READ_OWN, orders::list)
        .get("/v1/orders/{id}", Access::READ_OWN, orders::get)
        .get("/v1/products/{sku}", Access::Public, products::get)
        .get("/v1/customers/{id}", Access::READ_OWN, customers::get)
        .get("/v1/sagas", Access::READ_OWN, sagas::list)
        .get("/v1/sagas/{order_id}", Access::READ_OWN, sagas::get)
        .get(
            "/v1/reports/daily-sales",
            Access::READ,
            reports::daily_sales,
        )
}

/// The read API: [`routes`] and `extra` (the operational endpoints)
/// behind their rules.
pub fn api(state: AppState, auth: Authenticator, extra: RouteTable<AppState>) -> Router {
    routes()
        .merge(extra)
        .build(auth)
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .with_state(state)
}

/// What the binary's `main` does: the settings from `args` (the program's
/// name, then flags; the environment fills in the rest), then [`run`] on
/// `HTTP_ADDR` until SIGTERM or Ctrl-C. The crash-safety test's
/// `platform-service` binary calls it too.
pub async fn main_with_args<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let Cli { command, config } = <Cli as clap::Parser>::parse_from(args);
    if let Some(Command::Migrate) = command {
        service_kit::telemetry::init_logs(&config.common.log_format, &config.common.log_filter);
        tracing::info!(
            service = SERVICE,
            "nothing to migrate: the read models are the projector's (`projector migrate`)"
        );
        return Ok(());
    }
    let common = config.common.clone();
    service_kit::service_main(SERVICE, &common, config.http_addr, |listener, shutdown| {
        run(config, listener, shutdown)
    })
    .await
}

/// The command line: the service's settings, and `migrate`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "query-service",
    version,
    about = "The read side: HTTP queries over the read models, including saga progress."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    config: Config,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Does nothing and exits: the query-service owns no tables (the read
    /// models and their grants are `projector migrate`'s). There so that
    /// every service is deployed the same way.
    Migrate,
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A request may wait this long for the read model, so the listener's
    // timeout must leave it room to answer 504 itself.
    anyhow::ensure!(
        config.common.limits.request_timeout_ms > config.min_version_timeout_ms,
        "REQUEST_TIMEOUT_MS ({}) must be longer than MIN_VERSION_TIMEOUT_MS ({})",
        config.common.limits.request_timeout_ms,
        config.min_version_timeout_ms
    );
    let deps = Deps::new(&config.common)?;
    let mut registry = service_kit::metrics::Metrics::new();
    // The query-service has no background workers to watch.
    let watchdog =
        service_kit::progress::Watchdog::new(config.common.stall_after(), registry.platform());
    let state = AppState {
        pool: service_kit::deps::read_model_pool(&config.common, &config.read_model_schema)?,
        min_version_timeout: Duration::from_millis(config.min_version_timeout_ms),
    };
    registry.observe_pool("read_models", state.pool.clone());
    let http = registry.http();
    let auth = Authenticator::new(&config.common.auth);
    auth.warm_up().await;
    let ops = RouteTable::new().public(
        &service_kit::ops::PATHS,
        service_kit::ops::router(SERVICE, deps, watchdog, registry),
    );
    let app = api(state, auth, ops);
    service_kit::serve(listener, app, &config.common.limits, &http, shutdown).await
}
