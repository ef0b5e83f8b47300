//! The order fulfilment saga end to end, with the whole platform on this
//! machine: command-service (with its relay), the broker, the
//! saga-orchestrator, the projector and the query-service all run, the
//! services in this process (release build), PostgreSQL and the broker in
//! containers. Orders are placed over HTTP at a steady offered rate; each
//! one's saga reserves stock, charges the customer, creates a shipment and
//! confirms the order.
//!
//! For each rate it reports sagas completed per second and the time from
//! placement to `confirmed`, both taken from the event store's clock (the
//! `recorded_at` of each order's `OrderPlaced` and `OrderConfirmed`), so the
//! load generator's own scheduling does not distort them.
//!
//! Run with `make bench-sagas` (see BENCHMARKS.md). PostgreSQL keeps its
//! default durability (fsync on).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use harness::bench::{Catalogue, Services, post};
use harness::memory::PeakMemory;
use harness::{infra, services};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinSet;
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "Sagas completed per second and placement-to-confirmed latency, end to end")]
struct Args {
    /// Offered rates, orders per second, measured one after the other.
    #[arg(long, value_delimiter = ',', default_value = "100,250")]
    rates: Vec<u32>,
    /// Seconds each rate is offered.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Customers the orders are spread over.
    #[arg(long, default_value_t = 200)]
    customers: usize,
    /// Products the orders are spread over.
    #[arg(long, default_value_t = 50)]
    products: usize,
    /// Sagas the orchestrator executes at once (SAGA_CONCURRENCY).
    #[arg(long, default_value_t = 64)]
    saga_concurrency: usize,
    /// The orchestrator's order consumer's fetch wait (SAGA_FETCH_WAIT_MS);
    /// the orchestrator's default unless given.
    #[arg(long)]
    saga_fetch_wait_ms: Option<u32>,
    /// The relay's linger (RELAY_LINGER_MS).
    #[arg(long, default_value_t = event_relay::DEFAULT_LINGER_MS)]
    relay_linger_ms: u32,
    /// Connections each service's pool may open (DATABASE_MAX_CONNECTIONS).
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// Longest wait for the last saga of a rate to complete, in seconds.
    #[arg(long, default_value_t = 180)]
    drain_timeout: u64,
    #[command(flatten)]
    relay: harness::bench::RelayFormatArgs,
    /// Also print, per second of placements, the median and slowest time
    /// to confirmation (to stderr).
    #[arg(long)]
    by_second: bool,
}

/// What one offered rate achieved.
struct Round {
    offered: u32,
    placed: usize,
    place_errors: usize,
    confirmed: usize,
    not_confirmed: usize,
    /// Sagas confirmed per second, from the first placement to the last
    /// confirmation.
    completed_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Median time from placement to the saga's start: the trip through
    /// the relay, the broker and the orchestrator's consumer.
    to_started_p50_ms: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The services' warnings (RUST_LOG to see more).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    harness::bench::main(run(args))
}

/// Starts the containers, measures, and removes the containers again,
/// after the services using them have stopped.
async fn run(args: Args) -> anyhow::Result<()> {
    let bench = infra::start_for_benchmark().await?;
    let result = measure(&bench, &args).await;
    drop(bench);
    result
}

async fn measure(bench: &infra::BenchInfra, args: &Args) -> anyhow::Result<()> {
    let (pg_base, brokers) = (bench.pg_base.clone(), bench.brokers.clone());
    let database_url = infra::create_database(&pg_base, "bench").await?;
    let pg = PgPoolOptions::new()
        .max_connections(4)
        .connect(&database_url)
        .await?;

    let common = service_kit::CommonConfig {
        database_url: database_url.clone(),
        database_max_connections: args.pool,
        kafka_brokers: brokers.clone(),
        kafka_topic_prefix: "bench.".into(),
        log_format: "json".into(),
        log_filter: "warn".into(),
        ready_timeout_ms: 2000,
        stall_after_ms: 30_000,
        auth: harness::auth::auth_config(),
        limits: service_kit::http::Limits::default(),
        traces: service_kit::telemetry::TracesConfig::default(),
    };
    let (services, command_service) = start_platform(&common, args).await?;
    let watch = PeakMemory::watch(bench)?;
    let rounds = offer_rates(&pg, &command_service, args).await;
    let memory = watch.report("the offered rates").await;
    services.stop().await;
    let rounds = rounds?;
    let memory = memory?;

    println!(
        "| offered | placed | confirmed | sagas completed per second | placement to confirmed p50 | p99 | max | placement to saga started p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for round in &rounds {
        println!(
            "| {} orders/s for {} s | {} | {} | {:.0} /s | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            round.offered,
            args.seconds,
            round.placed,
            round.confirmed,
            round.completed_per_second,
            round.p50_ms,
            round.p99_ms,
            round.max_ms,
            round.to_started_p50_ms
        );
    }
    println!();
    println!("{memory}");
    for round in &rounds {
        if round.place_errors > 0 || round.not_confirmed > 0 {
            bail!(
                "at {} orders/s: {} placements failed and {} sagas did not end confirmed",
                round.offered,
                round.place_errors,
                round.not_confirmed
            );
        }
    }
    Ok(())
}

/// Creates the catalogue, warms up, and offers each rate in turn.
async fn offer_rates(
    pg: &PgPool,
    command_service: &str,
    args: &Args,
) -> anyhow::Result<Vec<Round>> {
    let client = reqwest::Client::builder()
        .default_headers(harness::auth::binary_headers())
        .pool_max_idle_per_host(512)
        .build()?;
    eprintln!(
        "creating {} products and {} customers",
        args.products, args.customers
    );
    let catalogue = Arc::new(
        Catalogue::create(
            &client,
            command_service,
            "bench",
            args.products,
            args.customers,
            100_000_000,
        )
        .await?,
    );

    // The orchestrator's and the projector's consumer groups take a few
    // seconds to join the broker; a first order shows when the whole
    // chain runs.
    eprintln!("warming up: waiting for a first saga to complete");
    let warm_up = place(&catalogue, &client, command_service, 0).await?;
    wait_confirmed(pg, &[warm_up], Duration::from_secs(120)).await?;

    let mut rounds = Vec::new();
    for &rate in &args.rates {
        let round = offer(&client, command_service, &catalogue, pg, rate, args).await?;
        let stalled = round.not_confirmed > 0;
        rounds.push(round);
        if stalled {
            eprintln!("not every saga ended; higher rates are not offered");
            break;
        }
    }
    Ok(rounds)
}

/// Starts the four services in this process; returns them and the
/// command-service's URL once every service reports ready.
async fn start_platform(
    common: &service_kit::CommonConfig,
    args: &Args,
) -> anyhow::Result<(Services, String)> {
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut services = Services::new();

    let config = command_service::Config {
        http_addr: localhost,
        internal_http_addr: localhost,
        shipping_countries: vec!["GB".into(), "US".into()],
        idempotency_retention_hours: 24,
        relay_message_format: args.relay.format(),
        relay_linger_ms: args.relay_linger_ms,
        common: common.clone(),
    };
    let command =
        services::start_with_internal(command_service::SERVICE, |listener, internal, stop| {
            command_service::run(config, listener, internal, stop)
        })
        .await;
    let steps_url = command.internal_url.clone().expect("an internal listener");
    let command_url = services.add(command);

    let mut config = saga_orchestrator::Config::new(localhost, steps_url, common.clone());
    config.service_token_file = Some(harness::auth::service_token_file());
    config.concurrency = args.saga_concurrency;
    if let Some(ms) = args.saga_fetch_wait_ms {
        config.fetch_wait_ms = ms;
    }
    services.add(
        services::start(saga_orchestrator::SERVICE, |listener, stop| {
            saga_orchestrator::run(config, listener, stop)
        })
        .await,
    );

    let config = projector::Config {
        http_addr: localhost,
        read_model_schema: "public".into(),
        consumer_group: None,
        batch_size: 500,
        fetch_wait_ms: 100,
        common: common.clone(),
    };
    services.add(
        services::start(projector::SERVICE, |listener, stop| {
            projector::run(config, listener, stop)
        })
        .await,
    );

    let config = query_service::Config {
        http_addr: localhost,
        read_model_schema: "public".into(),
        min_version_timeout_ms: 5000,
        common: common.clone(),
    };
    services.add(
        services::start(query_service::SERVICE, |listener, stop| {
            query_service::run(config, listener, stop)
        })
        .await,
    );

    if let Err(error) = services.wait_ready(Duration::from_secs(60)).await {
        services.stop().await;
        return Err(error);
    }
    Ok((services, command_url))
}

/// Places the `n`th order of `catalogue`; returns its id.
async fn place(
    catalogue: &Catalogue,
    client: &reqwest::Client,
    url: &str,
    n: usize,
) -> anyhow::Result<Uuid> {
    let order = post(client, &format!("{url}/v1/orders"), catalogue.order(n)).await?;
    order["order_id"]
        .as_str()
        .context("order_id")?
        .parse()
        .context("order_id is a uuid")
}

/// Places orders at `rate` per second for `--seconds`, without waiting for
/// answers before the next (an open loop, so a slow platform faces the
/// same offered load), then waits for every saga to complete.
async fn offer(
    client: &reqwest::Client,
    url: &str,
    catalogue: &Arc<Catalogue>,
    pg: &PgPool,
    rate: u32,
    args: &Args,
) -> anyhow::Result<Round> {
    eprintln!("offering {rate} orders/s for {} s", args.seconds);
    let total = rate as u64 * args.seconds;
    let mut placing = JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..total {
        ticks.tick().await;
        let (client, url, catalogue) = (client.clone(), url.to_owned(), Arc::clone(catalogue));
        placing.spawn(async move { place(&catalogue, &client, &url, n as usize + 1).await });
    }
    let mut orders = Vec::new();
    let mut place_errors = 0;
    while let Some(placed) = placing.join_next().await {
        match placed? {
            Ok(order_id) => orders.push(order_id),
            Err(error) => {
                place_errors += 1;
                if place_errors <= 3 {
                    eprintln!("placing failed: {error:#}");
                }
            }
        }
    }
    eprintln!(
        "placed {} orders; waiting for their sagas to complete",
        orders.len()
    );
    // A platform that stalls is reported as it stood, not hidden.
    if let Err(error) = wait_confirmed(pg, &orders, Duration::from_secs(args.drain_timeout)).await {
        eprintln!("{error:#}");
    }

    let timings = timings(pg, &orders).await?;
    let mut to_started = started_after_placement(pg, &orders).await?;
    to_started.sort_by(f64::total_cmp);
    let mut latencies: Vec<f64> = timings
        .iter()
        .filter_map(|(placed, confirmed)| {
            confirmed.map(|c| (c - *placed).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let first_placed = timings.iter().map(|(p, _)| *p).min();
    if args.by_second
        && let Some(first) = first_placed
    {
        print_by_second(&timings, first);
    }
    let last_confirmed = timings.iter().filter_map(|(_, c)| *c).max();
    let span = match (first_placed, last_confirmed) {
        (Some(first), Some(last)) => (last - first).num_microseconds().unwrap_or(1) as f64 / 1e6,
        _ => f64::INFINITY,
    };
    let round = Round {
        offered: rate,
        placed: orders.len(),
        place_errors,
        confirmed: latencies.len(),
        not_confirmed: orders.len() - latencies.len(),
        completed_per_second: latencies.len() as f64 / span,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        to_started_p50_ms: percentile(&to_started, 0.50),
    };
    eprintln!(
        "{rate} orders/s: {} confirmed, {:.0} sagas/s, p50 {:.0} ms, p99 {:.0} ms, to saga started p50 {:.0} ms",
        round.confirmed,
        round.completed_per_second,
        round.p50_ms,
        round.p99_ms,
        round.to_started_p50_ms
    );
    Ok(round)
}

/// Waits until every saga of `orders` has ended (completed, compensated
/// or failed), printing progress.
async fn wait_confirmed(pg: &PgPool, orders: &[Uuid], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    loop {
        let (ended,): (i64,) = sqlx::query_as(
            "select count(*) from saga_instances
             where order_id = any($1) and status <> 'active'",
        )
        .bind(orders)
        .fetch_one(pg)
        .await
        .context("counting ended sagas")?;
        if ended as usize == orders.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {ended} of {} sagas ended within {timeout:?}",
                orders.len()
            );
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!("  {ended} of {} sagas ended", orders.len());
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each order's placement time and, if it was confirmed, its confirmation
/// time, as the event store recorded them.
async fn timings(
    pg: &PgPool,
    orders: &[Uuid],
) -> anyhow::Result<Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>> {
    let streams: Vec<String> = orders.iter().map(|&id| domain::stream::order(id)).collect();
    let rows: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select min(recorded_at) filter (where type = 'OrderPlaced'),
                min(recorded_at) filter (where type = 'OrderConfirmed')
         from events where stream_id = any($1)
         group by stream_id",
    )
    .bind(&streams)
    .fetch_all(pg)
    .await
    .context("reading placement and confirmation times")?;
    Ok(rows)
}

/// For each order whose saga started, milliseconds from `OrderPlaced` to
/// `SagaStarted`, as the event store recorded them.
async fn started_after_placement(pg: &PgPool, orders: &[Uuid]) -> anyhow::Result<Vec<f64>> {
    let streams: Vec<String> = orders.iter().map(|&id| domain::stream::order(id)).collect();
    let sagas: Vec<String> = orders.iter().map(|&id| domain::stream::saga(id)).collect();
    let millis: Vec<(f64,)> = sqlx::query_as(
        "select extract(epoch from s.recorded_at - o.recorded_at)::float8 * 1000
         from events o
         join events s on s.stream_id = 'saga-' || substr(o.stream_id, 7) and s.version = 1
         where o.stream_id = any($1) and o.version = 1 and s.stream_id = any($2)",
    )
    .bind(&streams)
    .bind(&sagas)
    .fetch_all(pg)
    .await
    .context("reading saga start times")?;
    Ok(millis.into_iter().map(|(m,)| m).collect())
}

/// For each second of the round, by placement: how many were placed and
/// the median and slowest time to confirmation, to see when a tail forms.
fn print_by_second(timings: &[(DateTime<Utc>, Option<DateTime<Utc>>)], first: DateTime<Utc>) {
    let mut seconds: Vec<Vec<f64>> = Vec::new();
    for (placed, confirmed) in timings {
        let second = (*placed - first).num_seconds().max(0) as usize;
        if seconds.len() <= second {
            seconds.resize_with(second + 1, Vec::new);
        }
        let millis = confirmed.map_or(f64::INFINITY, |c| {
            (c - *placed).num_microseconds().unwrap_or(0) as f64 / 1000.0
        });
        seconds[second].push(millis);
    }
    for (second, mut millis) in seconds.into_iter().enumerate() {
        millis.sort_by(f64::total_cmp);
        eprintln!(
            "  second {second:>3}: {:>4} placed, p50 {:>6.0} ms, max {:>6.0} ms",
            millis.len(),
            percentile(&millis, 0.5),
            millis.last().copied().unwrap_or(f64::NAN)
        );
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}
