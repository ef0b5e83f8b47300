//! The write side: HTTP commands decided by the domain and appended to the
//! event store, which the relay (run here) publishes to Kafka.
//!
//! Layout: `http` holds the plumbing every route shares (problem documents,
//! extractors that never panic, the request context with correlation id,
//! trace context and `If-Match`); `commands` loads an aggregate, decides
//! and appends with retries; `routes` has one module per resource of the
//! contract.

pub mod catalogue;
mod commands;
pub mod http;
mod openapi;
mod routes;
pub mod warm;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use axum::Router;
use axum::extract::DefaultBodyLimit;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use event_relay::{self as relay, MessageFormat, RelayConfig, RelayMetrics};
use event_store::EventStore;
use service_kit::auth::{Access, Authenticator, RouteTable};
use service_kit::progress::{Progress, Watchdog};
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

    /// Address the saga's internal step API listens on (only there; the
    /// public listener answers 404 for `/internal/...`). Loopback by
    /// default: only the orchestrator calls it.
    #[arg(long, env = "INTERNAL_HTTP_ADDR", default_value = "127.0.0.1:9081")]
    pub internal_http_addr: SocketAddr,

    /// Countries shipments may go to, ISO 3166-1 alpha-2, comma-separated.
    #[arg(
        long,
        env = "SHIPPING_COUNTRIES",
        default_value = "US,CA,GB,DE,FR,NL,SE,JP,AU",
        value_delimiter = ',',
        value_parser = routes::steps::parse_country
    )]
    pub shipping_countries: Vec<String>,

    /// How long an `Idempotency-Key` and its response are kept, in hours.
    #[arg(long, env = "IDEMPOTENCY_RETENTION_HOURS", default_value_t = 24)]
    pub idempotency_retention_hours: u64,

    /// What each Kafka message of the relay holds: `cloudevents`, one event
    /// with the CloudEvents binary-mode headers; `plain`, one event without
    /// headers; `batch`, the events of one publish round and partition as a
    /// JSON array, without key or headers. The broker tansu stores every
    /// record and header as rows, so `plain` and even more `batch` cost it
    /// far less (BENCHMARKS.md); the platform's consumers read all three.
    #[arg(
        long,
        env = "RELAY_MESSAGE_FORMAT",
        default_value = "cloudevents",
        value_parser = message_format_parser()
    )]
    pub relay_message_format: MessageFormat,

    /// How long the relay's producer waits for more events before it sends
    /// a batch (`linger.ms`), in milliseconds. Every produce request costs
    /// the broker (tansu) queries per partition, so a longer wait sends
    /// fewer, larger requests and delays every event by about as much
    /// (BENCHMARKS.md: 25 ms against 5 ms).
    #[arg(long, env = "RELAY_LINGER_MS", default_value_t = event_relay::DEFAULT_LINGER_MS)]
    pub relay_linger_ms: u32,

    #[command(flatten)]
    pub common: CommonConfig,
}

/// Reads a relay message format by name, listing the names in `--help`.
pub fn message_format_parser() -> impl TypedValueParser<Value = MessageFormat> {
    PossibleValuesParser::new(MessageFormat::NAMES)
        .map(|name| name.parse::<MessageFormat>().expect("one of the names"))
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    /// Prices and customers already seen, which never change.
    pub catalogue: catalogue::Catalogue,
    /// ISO 3166-1 alpha-2 codes shipments may go to.
    pub shipping_countries: Vec<String>,
    pub idempotency: http::idempotency::Idempotency,
    /// The state each stream had after this process's last append to it.
    pub warm: warm::Warm,
    /// Each saga as this process last recorded an outcome in it.
    pub sagas: routes::steps::KeptSagas,
    /// `orders_command_lost_races_total`.
    pub lost_races: commands::LostRaces,
}

/// The public write API's routes, each with who may call it (the
/// contract's Security section). The operational endpoints are added by
/// [`run`]; the tests read the rules.
pub fn routes() -> RouteTable<AppState> {
    use routes::*;
    RouteTable::new()
        .merge(service_kit::openapi::routes(openapi::public))
        .post("/v1/products", Access::WRITE, products::create)
        .post(
            "/v1/products/{sku}/restock",
            Access::WRITE,
            products::restock,
        )
        .post("/v1/customers", Access::WRITE_OWN, customers::register)
        .post(
            "/v1/customers/{id}/deposits",
            Access::WRITE_OWN,
            customers::deposit,
        )
        .post("/v1/orders", Access::WRITE_OWN, orders::place)
        .post("/v1/orders/{id}/cancel", Access::WRITE_OWN, orders::cancel)
        .get("/v1/orders/{id}/state", Access::READ, orders::state)
        .get("/v1/orders/{id}/trace", Access::READ, trace::trace)
        .get(
            "/v1/streams/{stream_id}/events",
            Access::READ,
            streams::events,
        )
}

/// The public write API: [`routes`] (with `extra`, the operational
/// endpoints) behind their rules, with idempotency inside the guard so a
/// stored response is replayed only to a caller checked again.
pub fn api(state: AppState, auth: Authenticator, extra: RouteTable<AppState>) -> Router {
    let idempotency = state.idempotency.clone();
    routes()
        .merge(extra)
        .build_with(auth, |router| {
            router.layer(axum::middleware::from_fn_with_state(
                idempotency,
                http::idempotency::middleware,
            ))
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(http::extract::BODY_LIMIT))
        .with_state(state)
}

/// The saga's internal step API's routes (`routes::steps`), all for the
/// `service` role only, and their document with its page (public).
pub fn internal_routes() -> RouteTable<AppState> {
    routes::steps::routes().merge(service_kit::openapi::routes(openapi::internal))
}

/// The internal listener's router: [`internal_routes`] behind their rules.
/// No idempotency layer: each call counts at most once because it records
/// its outcome in the saga's stream at the version it names.
pub fn internal_api(state: AppState, auth: Authenticator) -> Router {
    internal_routes()
        .build(auth)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(http::extract::BODY_LIMIT))
        .with_state(state)
}

async fn not_found() -> http::ApiError {
    http::Problem::not_found("no such endpoint").into()
}

async fn method_not_allowed() -> http::ApiError {
    http::Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this endpoint does not take that method",
    )
    .into()
}

/// What the binary's `main` does: the settings from `args` (the program's
/// name, then flags; the environment fills in the rest), then [`run`] on
/// `HTTP_ADDR` and `INTERNAL_HTTP_ADDR` until SIGTERM or Ctrl-C. The
/// crash-safety test's `platform-service` binary calls it too.
pub async fn main_with_args<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let Cli { command, config } = <Cli as clap::Parser>::parse_from(args);
    if let Some(Command::Migrate) = command {
        return service_kit::db::migrate_command(SERVICE, &config.common, |pool| async move {
            migrate(&pool).await
        })
        .await;
    }
    let common = config.common.clone();
    service_kit::service_main(
        SERVICE,
        &common,
        config.http_addr,
        |listener, shutdown| async move {
            let internal = config.internal_http_addr;
            let internal = TcpListener::bind(internal)
                .await
                .with_context(|| format!("binding {internal} (INTERNAL_HTTP_ADDR)"))?;
            run(config, listener, internal, shutdown).await
        },
    )
    .await
}

/// The command line: the service's settings, and `migrate`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "command-service",
    version,
    about = "The write side: HTTP commands decided by the domain and appended to the event store."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    config: Config,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Applies the event store's and command-service's migrations (tables
    /// and the grants of each service's database role) as the owner, whose
    /// DATABASE_URL it must be given, then exits. The service itself never
    /// migrates: its role may not change the schema.
    Migrate,
}

/// Runs the service until `shutdown` is cancelled: the public API on
/// `listener`, the saga's step API on `internal_listener`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    internal_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let deps = Deps::new(&config.common)?;
    let mut registry = service_kit::metrics::Metrics::new();
    let relay_metrics = RelayMetrics::register(registry.platform());
    let watchdog = Watchdog::new(config.common.stall_after(), registry.platform());
    let http = registry.http();
    let store = EventStore::new(deps.pg.clone());
    let relay_config = relay_config(&config);
    // The API needs the schema, which `command-service migrate` makes; while
    // it is missing or PostgreSQL is unreachable this waits (and logs).
    let migrators = [&event_store::migrator(), &own_migrator()];
    if !service_kit::db::wait_until_migrated(
        &deps.pg,
        &migrators,
        "command-service migrate",
        &shutdown,
    )
    .await
    {
        return Ok(());
    }
    let (relay, monitor) = start_relay(
        &store,
        &deps,
        relay_config,
        relay_metrics,
        &watchdog,
        &shutdown,
    );
    let lost_races = commands::LostRaces::register(registry.platform());
    let state = AppState::new(&config, store, deps.pg.clone(), lost_races);
    let auth = Authenticator::new(&config.common.auth);
    auth.warm_up().await;
    let limits = &config.common.limits;
    let internal = internal_api(state.clone(), auth.clone());
    let ops = RouteTable::new().public(
        &service_kit::ops::PATHS,
        service_kit::ops::router(SERVICE, deps, watchdog, registry),
    );
    let app = api(state, auth, ops);
    let served = serve_both(
        (listener, app),
        (internal_listener, internal),
        limits,
        &http,
        &shutdown,
    )
    .await;
    relay.await?;
    monitor.await?;
    served
}

impl AppState {
    /// What every handler shares, as `config` says.
    fn new(
        config: &Config,
        store: EventStore,
        pool: sqlx::PgPool,
        lost_races: commands::LostRaces,
    ) -> Self {
        Self {
            idempotency: http::idempotency::Idempotency {
                pool,
                retention: Duration::from_secs(config.idempotency_retention_hours * 3600),
                abandon_after: Duration::from_secs(30),
                wait_for_first: Duration::from_secs(10),
            },
            shipping_countries: config.shipping_countries.clone(),
            store,
            catalogue: catalogue::Catalogue::default(),
            warm: warm::Warm::default(),
            sagas: routes::steps::KeptSagas::default(),
            lost_races,
        }
    }
}

/// The relay's settings, as `config` says.
fn relay_config(config: &Config) -> RelayConfig {
    let mut relay_config = RelayConfig::new(config.common.events_topic(), "/command-service");
    relay_config.format = config.relay_message_format;
    relay_config.linger_ms = config.relay_linger_ms;
    relay_config
}

/// Starts the relay of the stored log to Kafka and its monitor (which
/// tells the watchdog whether it keeps up).
fn start_relay(
    store: &EventStore,
    deps: &Deps,
    relay_config: RelayConfig,
    relay_metrics: RelayMetrics,
    watchdog: &Watchdog,
    shutdown: &CancellationToken,
) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    let monitor = tokio::spawn(watch_relay(
        store.clone(),
        relay_metrics.clone(),
        watchdog.watch("relay"),
        relay_config.clone(),
        shutdown.clone(),
    ));
    let watchdog = watchdog.clone();
    let relay = tokio::spawn(relay::run(
        store.clone(),
        deps.kafka_config(),
        relay_config,
        relay_metrics,
        move |since| {
            let watchdog = watchdog.clone();
            async move {
                watchdog.stalled_since(since).await;
            }
        },
        shutdown.clone(),
    ));
    (relay, monitor)
}

/// Serves the public and the internal listener until `shutdown`; either
/// server failing stops the other, and the workers.
async fn serve_both(
    (listener, app): (TcpListener, Router),
    (internal_listener, internal): (TcpListener, Router),
    limits: &service_kit::http::limits::Limits,
    http: &service_kit::metrics::HttpMetrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let (served, served_internal) = tokio::join!(
        async {
            let served = service_kit::serve(listener, app, limits, http, shutdown.clone()).await;
            shutdown.cancel();
            served
        },
        async {
            let served =
                service_kit::serve(internal_listener, internal, limits, http, shutdown.clone())
                    .await;
            shutdown.cancel();
            served
        },
    );
    served.and(served_internal)
}

/// Every second until `shutdown`: tells the watchdog whether the relay
/// published since the last look, and, while this process is the active
/// relay, how many stored events wait after its checkpoint (a standby
/// waits for nothing).
async fn watch_relay(
    store: EventStore,
    metrics: RelayMetrics,
    progress: Progress,
    config: RelayConfig,
    shutdown: CancellationToken,
) {
    let mut published = metrics.published.get();
    while service_kit::progress::tick(&shutdown).await {
        let now = metrics.published.get();
        if now > published {
            progress.advanced();
            published = now;
        }
        if metrics.active.get() == 0 {
            progress.observe(
                0,
                None,
                "nothing: another process is the active relay".into(),
            );
            continue;
        }
        match relay::backlog(&store, &config.name).await {
            Ok((position, behind)) => progress.observe(
                behind,
                Some(position),
                format!(
                    "the broker to acknowledge the events after position {position} \
                     on topic {} ({behind} stored events wait)",
                    config.topic
                ),
            ),
            Err(error) => {
                tracing::debug!(error = format!("{error:#}"), "measuring relay lag failed");
            }
        }
    }
}

/// `command-service migrate`: the event store's migrations, then this
/// service's own, on `pool`, which must be the owner's.
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    service_kit::db::migrate(
        pool,
        &[
            ("the event store", event_store::migrator()),
            ("command-service's tables", own_migrator()),
        ],
    )
    .await
}

fn own_migrator() -> sqlx::migrate::Migrator {
    service_kit::db::own_migrator(sqlx::migrate!("./migrations"))
}
