//! Builds the read models from the event stream, and rebuilds them from the
//! event store.
//!
//! Layout: `views` holds each projection's row and the pure fold of events
//! into it; `store` loads, applies and writes rows (generic over views);
//! `live` consumes Kafka and applies batches; `rebuild` replays the event
//! store into shadow tables and swaps them in; `status` and `api` are the
//! operator's view; `cli` is `projector rebuild` and `projector migrate`.

pub mod api;
pub mod cli;
mod live;
mod metrics;
mod openapi;
pub mod rebuild;
mod status;
mod store;
pub mod views;

use std::net::SocketAddr;

use anyhow::Context;
use event_store::EventStore;
use service_kit::{CommonConfig, Deps};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use metrics::Metrics;

/// The name this service reports in logs and metrics.
pub const SERVICE: &str = "projector";

/// Settings of the projector, from flags or environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8084")]
    pub http_addr: SocketAddr,

    /// PostgreSQL schema the read models live in (created if missing); the
    /// query-service must read the same one.
    #[arg(long, env = "READ_MODEL_SCHEMA", default_value = "public", value_parser = service_kit::config::parse_schema)]
    pub read_model_schema: String,

    /// Kafka consumer group; instances in one group share the work.
    /// Default: `<KAFKA_TOPIC_PREFIX>projector`.
    #[arg(long, env = "PROJECTOR_GROUP")]
    pub consumer_group: Option<String>,

    /// Most messages applied in one transaction.
    #[arg(long, env = "PROJECTOR_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,

    /// Longest the broker may hold a fetch waiting for new messages, in
    /// milliseconds: lower means less lag when events trickle in, and more
    /// requests for the broker to answer.
    #[arg(long, env = "PROJECTOR_FETCH_WAIT_MS", default_value_t = 100)]
    pub fetch_wait_ms: u32,

    #[command(flatten)]
    pub common: CommonConfig,
}

/// What the binary's `main` does: the command line from `args` (the
/// program's name, then flags; the environment fills in the rest), then
/// either `projector rebuild` or [`run`] on `HTTP_ADDR` until SIGTERM or
/// Ctrl-C. The crash-safety test's `platform-service` binary calls it too.
pub async fn main_with_args<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use cli::{Cli, Command};
    let Cli { command, config } = <Cli as clap::Parser>::parse_from(args);
    match command {
        Some(Command::Rebuild { projection }) => {
            service_kit::telemetry::init_logs(&config.common.log_format, "warn");
            cli::rebuild(config, projection).await
        }
        Some(Command::Migrate) => {
            let (common, schema) = (&config.common, &config.read_model_schema);
            service_kit::db::migrate_command(SERVICE, common, |default_pool| async move {
                let pool = service_kit::deps::read_model_pool(common, schema)?;
                let store = EventStore::new(default_pool.clone());
                migrate(&default_pool, &pool, &store, schema).await?;
                tracing::info!(schema = %schema, "read models migrated");
                Ok(())
            })
            .await
        }
        None => {
            let common = config.common.clone();
            service_kit::service_main(SERVICE, &common, config.http_addr, |listener, shutdown| {
                run(config, listener, shutdown)
            })
            .await
        }
    }
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let deps = Deps::new(&config.common)?;
    let pool = service_kit::deps::read_model_pool(&config.common, &config.read_model_schema)?;
    let store = EventStore::new(deps.pg.clone());
    let mut registry = service_kit::metrics::Metrics::new();
    let metrics = Metrics::register(registry.platform());
    let watchdog =
        service_kit::progress::Watchdog::new(config.common.stall_after(), registry.platform());
    registry.observe_pool("read_models", pool.clone());
    let http = registry.http();
    if !wait_until_migrated(&deps.pg, &pool, &shutdown).await {
        return Ok(());
    }
    store::register(&pool).await?;
    let live = tokio::spawn(live::run(
        pool.clone(),
        store.clone(),
        deps.kafka_config(),
        live::LiveConfig {
            topic: config.common.events_topic(),
            group: config
                .consumer_group
                .clone()
                .unwrap_or_else(|| config.common.consumer_group("projector")),
            batch_size: config.batch_size.max(1),
            fetch_wait_ms: config.fetch_wait_ms,
        },
        metrics.clone(),
        watchdog.clone(),
        shutdown.clone(),
    ));
    let lag = tokio::spawn(status::report_lag(
        pool.clone(),
        store.clone(),
        metrics.clone(),
        watchdog.clone(),
        config.common.events_topic(),
        shutdown.clone(),
    ));
    let auth = service_kit::auth::Authenticator::new(&config.common.auth);
    auth.warm_up().await;
    let state = api::ApiState {
        pool,
        store,
        metrics,
        watchdog: watchdog.clone(),
    };
    let ops = service_kit::auth::RouteTable::new().public(
        &service_kit::ops::PATHS,
        service_kit::ops::router(SERVICE, deps, watchdog, registry),
    );
    let app = api::router(state, auth, ops);
    let served = service_kit::serve(
        listener,
        app,
        &config.common.limits,
        &http,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    live.await?;
    lag.await?;
    served
}

/// `projector migrate`: creates the read-model schema and applies the event
/// store's and the read models' migrations, as the owner (`default_pool`
/// and `pool`, the latter with the read-model schema first in its
/// `search_path`, must be the owner's). The read models' migrations hand
/// their tables to the projector's role.
pub async fn migrate(
    default_pool: &PgPool,
    pool: &PgPool,
    store: &EventStore,
    schema: &str,
) -> anyhow::Result<()> {
    // The name was checked by `parse_schema`.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "create schema if not exists {schema}"
    )))
    .execute(default_pool)
    .await
    .context("creating the read model schema")?;
    store.migrate().await.context("migrating the event store")?;
    service_kit::db::migrate(pool, &[("the read models", own_migrator())]).await
}

fn own_migrator() -> sqlx::migrate::Migrator {
    service_kit::db::own_migrator(sqlx::migrate!("./migrations"))
}

/// Waits until `projector migrate` has been run for this schema (the read
/// models' migrations are recorded in the schema's own bookkeeping table
/// when it is not `public`); false if shut down first.
pub async fn wait_until_migrated(
    default_pool: &PgPool,
    pool: &PgPool,
    shutdown: &CancellationToken,
) -> bool {
    service_kit::db::wait_until_migrated(
        default_pool,
        &[&event_store::migrator()],
        "projector migrate",
        shutdown,
    )
    .await
        && service_kit::db::wait_until_migrated(
            pool,
            &[&own_migrator()],
            "projector migrate",
            shutdown,
        )
        .await
}
