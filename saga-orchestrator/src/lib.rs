//! Runs each order's fulfilment saga durably, with compensations.
//!
//! Layout: `decide` is the pure "what next" over a saga's state; `record`
//! reads and appends the saga's stream; `instances` is the table of which
//! sagas are due and who runs each; `client` calls command-service's step
//! API and classifies the outcome, behind a circuit breaker; `intake`
//! starts and cancels sagas from the order events on Kafka; `executor`
//! claims due sagas and drives them (`executor::interpret` says, without
//! I/O, what each call's answer leads to); `api` is the operator's retry.

pub mod api;
mod bulk;
pub mod cli;
mod client;
pub mod decide;
mod executor;
mod instances;
mod intake;
mod metrics;
mod openapi;
mod record;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use event_store::EventStore;
use service_kit::{CommonConfig, Deps};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The name this service reports in logs and metrics.
pub const SERVICE: &str = "saga-orchestrator";

/// Settings of the saga-orchestrator, from flags or environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "saga-orchestrator",
    version,
    about = "Runs each order's fulfilment saga durably, with compensations."
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8083")]
    pub http_addr: SocketAddr,

    /// Base URL of the command-service's internal listener, whose step API
    /// runs the saga's steps (its `INTERNAL_HTTP_ADDR`).
    #[arg(
        long,
        env = "COMMAND_SERVICE_INTERNAL_URL",
        default_value = "http://127.0.0.1:9081"
    )]
    pub command_service_internal_url: String,

    /// A file holding the bearer token (a JWT with the `service` role) sent
    /// to the step API; read again every minute and after any 401, so the
    /// platform may renew it in place. Without it, calls carry no token.
    #[arg(long, env = "SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<std::path::PathBuf>,

    /// Longest one call to the command-service may take, in milliseconds.
    #[arg(long, env = "STEP_TIMEOUT_MS", default_value_t = 2_000)]
    pub step_timeout_ms: u64,

    /// How long a step may keep failing transiently, from its first attempt,
    /// before it is failed and the saga compensates, in milliseconds.
    #[arg(long, env = "STEP_DEADLINE_MS", default_value_t = 30_000)]
    pub step_deadline_ms: u64,

    /// First retry delay; it doubles per attempt (with jitter), in
    /// milliseconds.
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 200)]
    pub retry_base_ms: u64,

    /// Largest retry delay, in milliseconds.
    #[arg(long, env = "RETRY_MAX_MS", default_value_t = 5_000)]
    pub retry_max_ms: u64,

    /// Attempts at one compensation before the saga fails and waits for an
    /// operator.
    #[arg(long, env = "COMPENSATION_ATTEMPTS", default_value_t = 5)]
    pub compensation_attempts: u32,

    /// Consecutive transient failures that open the circuit breaker.
    #[arg(long, env = "BREAKER_FAILURES", default_value_t = 10)]
    pub breaker_failures: u32,

    /// How long the open breaker suspends calls, in milliseconds.
    #[arg(long, env = "BREAKER_OPEN_MS", default_value_t = 2_000)]
    pub breaker_open_ms: u64,

    /// How long a claimed saga stays with this instance without renewal
    /// (after a crash, another instance takes it over after this), in
    /// milliseconds.
    #[arg(long, env = "SAGA_LEASE_MS", default_value_t = 10_000)]
    pub lease_ms: u64,

    /// How often due sagas are looked for, in milliseconds (new, cancelled
    /// and retried sagas wake the executor at once).
    #[arg(long, env = "SAGA_POLL_MS", default_value_t = 200)]
    pub poll_ms: u64,

    /// Sagas one instance executes at once.
    #[arg(long, env = "SAGA_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,

    /// The order consumer's `fetch.wait.max.ms`. The broker (tansu 0.6)
    /// answers every fetch only once this has passed, data or not, so a
    /// saga starts one to two of these after its placement is published;
    /// but every fetch costs the broker a few milliseconds of CPU
    /// (BENCHMARKS.md), so shorter waits cost CPU even when idle.
    #[arg(long, env = "SAGA_FETCH_WAIT_MS", default_value_t = 100)]
    pub fetch_wait_ms: u32,

    /// PostgreSQL schema the projector keeps the read models in: a bulk
    /// retry selects failed sagas from its `rm_sagas`.
    #[arg(long, env = "READ_MODEL_SCHEMA", default_value = "public", value_parser = service_kit::config::parse_schema)]
    pub read_model_schema: String,

    /// How often the sagas of every instance are counted by standing
    /// (`orders_sagas`), in milliseconds: one scan of `saga_instances`.
    #[arg(long, env = "SAGA_COUNT_INTERVAL_MS", default_value_t = 10_000)]
    pub count_interval_ms: u64,

    #[command(flatten)]
    pub common: CommonConfig,
}

impl Config {
    /// The defaults, for `config` to adjust (tests, benchmarks).
    pub fn new(
        http_addr: SocketAddr,
        command_service_internal_url: String,
        common: CommonConfig,
    ) -> Self {
        Self {
            http_addr,
            command_service_internal_url,
            service_token_file: None,
            step_timeout_ms: 2_000,
            step_deadline_ms: 30_000,
            retry_base_ms: 200,
            retry_max_ms: 5_000,
            compensation_attempts: 5,
            breaker_failures: 10,
            breaker_open_ms: 2_000,
            lease_ms: 10_000,
            poll_ms: 200,
            concurrency: 64,
            fetch_wait_ms: 100,
            read_model_schema: "public".into(),
            count_interval_ms: 10_000,
            common,
        }
    }
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
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    // The operator's command line needs none of the service's settings.
    if args.get(1).is_some_and(|arg| arg == "sagas") {
        return cli::run(args, &mut std::io::stdout()).await;
    }
    let Cli { command, config } = <Cli as clap::Parser>::parse_from(args);
    if let Some(Command::Migrate) = command {
        return service_kit::db::migrate_command(SERVICE, &config.common, |pool| async move {
            migrate(&pool).await
        })
        .await;
    }
    let common = config.common.clone();
    service_kit::service_main(SERVICE, &common, config.http_addr, |listener, shutdown| {
        run(config, listener, shutdown)
    })
    .await
}

/// The command line: the service's settings, and `migrate` (`sagas` is
/// the operator's command line, [`cli`]).
#[derive(Debug, clap::Parser)]
#[command(
    name = "saga-orchestrator",
    version,
    about = "Runs each order's fulfilment saga durably, with compensations."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    config: Config,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Applies the event store's and the orchestrator's migrations (tables
    /// and the grants of each service's database role) as the owner, whose
    /// DATABASE_URL it must be given, then exits. The service itself never
    /// migrates: its role may not change the schema.
    Migrate,
}

/// Runs the service on `listener` until `shutdown` is cancelled. Every
/// worker runs inside this future, so dropping it (a killed process, in
/// tests) stops everything at once.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let deps = Deps::new(&config.common)?;
    let store = EventStore::new(deps.pg.clone());
    let mut registry = service_kit::metrics::Metrics::new();
    let watchdog =
        service_kit::progress::Watchdog::new(config.common.stall_after(), registry.platform());
    let client = Arc::new(step_client(&config, watchdog.watch("saga-steps"))?);
    let metrics = metrics::Metrics::register(registry.platform(), client.breaker_open.clone());
    let http = registry.http();
    // The schema is made by `saga-orchestrator migrate`; wait for it.
    if !migrated(&deps.pg, &shutdown).await {
        return Ok(());
    }
    let wake = Arc::new(Notify::new());
    let executor = Arc::new(executor::Executor::new(
        executor_settings(&config),
        store.clone(),
        deps.pg.clone(),
        client,
        metrics.clone(),
        Arc::clone(&wake),
    ));
    let (handoff, adopted) = executor::Handoff::to(&executor);
    let intake_progress = watchdog.watch("saga-intake");
    let intake = intake::Intake {
        store: store.clone(),
        pool: deps.pg.clone(),
        kafka: deps.kafka_config(),
        topic: config.common.events_topic(),
        group: config.common.consumer_group("saga-orchestrator"),
        fetch_wait_ms: config.fetch_wait_ms,
        metrics: metrics.clone(),
        wake: Arc::clone(&wake),
        handoff,
        // Its consumer is recreated when the intake stalls, not when the
        // step calls do.
        watchdog: watchdog.over(&[&intake_progress]),
        progress: intake_progress,
    };
    let pool = deps.pg.clone();
    let read_models =
        service_kit::deps::read_model_pool(&config.common, &config.read_model_schema)?;
    let jobs = bulk::Jobs::new(store.clone(), pool.clone(), read_models, Arc::clone(&wake));
    let counting = metrics.count_sagas(
        pool.clone(),
        Duration::from_millis(config.count_interval_ms.max(1)),
        shutdown.clone(),
    );
    jobs.resume();
    let app = api_router(
        &config,
        deps,
        watchdog,
        registry,
        api::ApiState {
            store,
            pool,
            wake,
            jobs,
        },
    )
    .await;
    let (served, (), (), ()) = tokio::join!(
        async {
            let served = service_kit::serve(
                listener,
                app,
                &config.common.limits,
                &http,
                shutdown.clone(),
            )
            .await;
            shutdown.cancel();
            served
        },
        intake.run(shutdown.clone()),
        executor.run(adopted, shutdown.clone()),
        counting,
    );
    served
}

/// Waits until every migration the service needs is applied; false if
/// `shutdown` came first.
async fn migrated(pool: &sqlx::PgPool, shutdown: &CancellationToken) -> bool {
    let migrators = [&event_store::migrator(), &own_migrator()];
    service_kit::db::wait_until_migrated(pool, &migrators, "saga-orchestrator migrate", shutdown)
        .await
}

/// The operator's API with the operational endpoints, its tokens checked
/// as `config` says.
async fn api_router(
    config: &Config,
    deps: Deps,
    watchdog: service_kit::progress::Watchdog,
    registry: service_kit::metrics::Metrics,
    state: api::ApiState,
) -> axum::Router {
    let auth = service_kit::auth::Authenticator::new(&config.common.auth);
    auth.warm_up().await;
    let ops = service_kit::auth::RouteTable::new().public(
        &service_kit::ops::PATHS,
        service_kit::ops::router(SERVICE, deps, watchdog, registry),
    );
    api::router(state, auth, ops)
}

/// The client of command-service's step API that `config` describes.
fn step_client(
    config: &Config,
    progress: service_kit::progress::Progress,
) -> anyhow::Result<client::StepClient> {
    client::StepClient::new(
        &config.command_service_internal_url,
        Duration::from_millis(config.step_timeout_ms),
        client::BreakerConfig {
            failures: config.breaker_failures.max(1),
            open_for: Duration::from_millis(config.breaker_open_ms),
        },
        config.service_token_file.clone(),
        progress,
    )
}

/// How the executor retries, waits and shares work, as `config` says;
/// each process is an instance of its own.
fn executor_settings(config: &Config) -> executor::Settings {
    executor::Settings {
        instance: format!("{}-{}", SERVICE, Uuid::new_v4().simple()),
        step_deadline: Duration::from_millis(config.step_deadline_ms),
        retry_base: Duration::from_millis(config.retry_base_ms),
        retry_max: Duration::from_millis(config.retry_max_ms),
        compensation_attempts: config.compensation_attempts.max(1),
        lease: Duration::from_millis(config.lease_ms),
        poll_interval: Duration::from_millis(config.poll_ms),
        concurrency: config.concurrency.max(1),
    }
}

/// `saga-orchestrator migrate`: the event store's migrations, then the
/// orchestrator's own, on `pool`, which must be the owner's.
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    service_kit::db::migrate(
        pool,
        &[
            ("the event store", event_store::migrator()),
            ("the orchestrator's tables", own_migrator()),
        ],
    )
    .await
}

fn own_migrator() -> sqlx::migrate::Migrator {
    service_kit::db::own_migrator(sqlx::migrate!("./migrations"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `Config::new` repeats the flags' defaults (tests and benchmarks
    /// build their settings from it); this keeps the two lists equal.
    #[test]
    fn new_has_the_same_defaults_as_the_command_line() {
        let parsed =
            Config::try_parse_from(["saga-orchestrator"]).expect("every setting has a default");
        let built = Config::new(
            parsed.http_addr,
            parsed.command_service_internal_url.clone(),
            parsed.common.clone(),
        );
        assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
    }
}
