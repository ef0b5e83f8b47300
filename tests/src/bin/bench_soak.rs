//! The soak: the platform as `make up` runs it, on its defaults, under a
//! steady offered load for a long time (10 minutes and 200,000 events by
//! default), to see that nothing grows with the data.
//!
//! It talks to the running services over HTTP, reads the event store and
//! the read models with SQL, and reads the broker with a Kafka consumer of
//! its own. Orders are placed by a ticker (an open loop: a slow platform
//! faces the same offered load), a few of them cancelled, at the rate that
//! makes the store receive `--events-per-second` (the events one order
//! causes are counted in a calibration first). Every second it samples the
//! projections' lag (the projector's `GET /v1/projections`) and the relay's
//! (command-service's `/metrics`), and every minute it prints a line:
//! events written, orders confirmed, lag p50/p99. The broker's fetch
//! latency (the oldest and the newest messages of the events topic) is
//! measured at the start and at the end. At the end it waits until every
//! saga of the run has ended and every projection has caught up. The peak
//! resident memory of each of the platform's containers (the compose
//! project's, found with `docker ps`) over the load and the drain is
//! reported too.
//!
//! Run with `make soak` (compose/soak.sh, which starts the platform first);
//! see BENCHMARKS.md. Exits non-zero only when a saga did not end or a
//! projection did not catch up; the lag target is reported as PASS or MISS.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use harness::bench::{Catalogue, post};
use harness::memory::{self, PeakMemory};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(
    about = "A long steady load on the running platform: lag over time, broker fetch latency at the start and the end"
)]
struct Args {
    /// Seconds of steady load.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Events per second the store should receive; the order rate is this
    /// divided by the events one order causes (measured first). The
    /// default writes 210,000 events in 10 minutes.
    #[arg(long, default_value_t = 350.0, conflicts_with = "orders_per_second")]
    events_per_second: f64,
    /// Orders per second, instead of `--events-per-second`.
    #[arg(long)]
    orders_per_second: Option<f64>,
    /// Percentage of orders cancelled after placement (half of them at
    /// once, half two seconds later, mostly after their confirmation).
    #[arg(long, default_value_t = 5)]
    cancel_percent: u64,
    /// Orders placed to count the events one order causes.
    #[arg(long, default_value_t = 60)]
    calibration_orders: usize,
    /// Customers the orders are spread over.
    #[arg(long, default_value_t = 200)]
    customers: usize,
    /// Products the orders are spread over.
    #[arg(long, default_value_t = 50)]
    products: usize,
    /// The target: projection lag p99 under this many seconds.
    #[arg(long, default_value_t = 1.0)]
    lag_target_seconds: f64,
    /// Longest wait, after the load, for every saga to end and every
    /// projection to catch up, in seconds.
    #[arg(long, default_value_t = 120)]
    drain_timeout: u64,
    /// Messages fetched for each broker fetch-latency measurement.
    #[arg(long, default_value_t = 500)]
    fetch_messages: i64,
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    command_service_url: String,
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    query_service_url: String,
    #[arg(long, default_value = "http://127.0.0.1:8083")]
    saga_orchestrator_url: String,
    #[arg(long, default_value = "http://127.0.0.1:8084")]
    projector_url: String,
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/orders"
    )]
    database_url: String,
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "orders.")]
    kafka_topic_prefix: String,
    /// The compose project whose containers' memory is watched (compose's
    /// `--project-name`, as compose/compose.sh gives it).
    #[arg(long, default_value = "orders-platform")]
    compose_project: String,
}

impl Args {
    /// The topic the relay publishes to (as `CommonConfig::events_topic`).
    fn events_topic(&self) -> String {
        format!("{}events", self.kafka_topic_prefix)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    harness::bench::main(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .default_headers(harness::auth::binary_headers())
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?;
    for url in [
        &args.command_service_url,
        &args.query_service_url,
        &args.saga_orchestrator_url,
        &args.projector_url,
    ] {
        let ready = client.get(format!("{url}/health/ready")).send().await;
        if !ready.as_ref().is_ok_and(|r| r.status().is_success()) {
            bail!("{url} is not ready (start the platform with `make up`): {ready:?}");
        }
    }
    let pg = PgPoolOptions::new()
        .max_connections(4)
        .connect(&args.database_url)
        .await
        .context("connecting to PostgreSQL")?;

    let run_id = Uuid::new_v4().simple().to_string()[..8].to_owned();
    eprintln!(
        "soak {run_id}: creating {} products and {} customers",
        args.products, args.customers
    );
    let mut load = Load {
        client: client.clone(),
        url: args.command_service_url.clone(),
        catalogue: Arc::new(
            Catalogue::create(
                &client,
                &args.command_service_url,
                &format!("soak-{run_id}"),
                args.products,
                args.customers,
                1_000_000_000,
            )
            .await?,
        ),
        cancel_percent: args.cancel_percent,
        stats: Arc::default(),
    };

    // Calibration: what one order (with the same share of cancellations)
    // costs in events, which also shows that the whole chain runs.
    let before = last_position(&pg).await?;
    eprintln!(
        "calibrating: {} orders, waiting for their sagas to end",
        args.calibration_orders
    );
    let calibration = load.offer(args.calibration_orders, 20.0).await;
    let ended = wait_sagas_ended(&pg, &calibration, Duration::from_secs(120)).await?;
    if !ended.all_ended() {
        bail!("the calibration's sagas did not end: {ended:?}");
    }
    let (calibration_events,): (i64,) =
        sqlx::query_as("select count(*) from events where position > $1")
            .bind(before)
            .fetch_one(&pg)
            .await?;
    let events_per_order = calibration_events as f64 / calibration.orders.len().max(1) as f64;
    let orders_per_second = args
        .orders_per_second
        .unwrap_or(args.events_per_second / events_per_order);
    eprintln!(
        "one order causes {events_per_order:.1} events: offering {orders_per_second:.1} orders/s (about {:.0} events/s) for {} s",
        orders_per_second * events_per_order,
        args.seconds
    );

    // The steady load's own counts start here.
    load.stats = Arc::default();
    let topic = args.events_topic();
    eprintln!("measuring the broker's fetch latency (start)");
    let fetch_start = fetch_latency(&args.kafka_brokers, &topic, args.fetch_messages).await?;

    // The steady load, sampled every second and reported every minute.
    let memory = watch_memory(&args.compose_project)?;
    let start_position = last_position(&pg).await?;
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn(sample(
        client.clone(),
        args.projector_url.clone(),
        args.command_service_url.clone(),
        Arc::clone(&samples),
        sampling.clone(),
    ));
    let loading = CancellationToken::new();
    let reporter = tokio::spawn(report_minutes(
        pg.clone(),
        start_position,
        Arc::clone(&samples),
        Arc::clone(&load.stats),
        loading.clone(),
    ));
    let total = (orders_per_second * args.seconds as f64).round() as usize;
    let placed = load.offer(total, orders_per_second).await;
    let load_seconds = placed.offered.as_secs_f64();
    loading.cancel();
    reporter.await?;

    // Drain: every saga ends, every projection catches up.
    eprintln!(
        "load done: {} orders placed in {load_seconds:.1} s; waiting for their sagas to end",
        placed.orders.len()
    );
    let drain_started = Instant::now();
    let drain = Duration::from_secs(args.drain_timeout);
    let sagas = wait_sagas_ended(&pg, &placed, drain).await?;
    let caught_up = wait_caught_up(
        &client,
        &args.projector_url,
        drain.saturating_sub(drain_started.elapsed()),
    )
    .await;
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    sampling.cancel();
    sampler.await?;
    eprintln!("measuring the broker's fetch latency (end)");
    let fetch_end = fetch_latency(&args.kafka_brokers, &topic, args.fetch_messages).await?;

    let memory = match memory {
        Some(watch) => Some(watch.report("the load and the drain").await?),
        None => None,
    };
    let written = count_events(&pg, start_position).await?;
    let samples = std::mem::take(&mut *samples.lock().expect("not poisoned"));
    print_report(&Report {
        args: &args,
        events_per_order,
        orders_per_second,
        load_seconds,
        placed: &placed,
        stats: &load.stats,
        written: &written,
        samples: &samples,
        sagas: &sagas,
        caught_up: &caught_up,
        drain_seconds,
        fetch_start: &fetch_start,
        fetch_end: &fetch_end,
    });
    if let Some(memory) = memory {
        println!();
        print!("{memory}");
    }

    let mut failures = Vec::new();
    if !sagas.all_ended() {
        failures.push(format!(
            "{} of {} sagas did not end",
            sagas.total - sagas.ended(),
            sagas.total
        ));
    }
    if let Err(error) = &caught_up {
        failures.push(format!("the projections did not catch up: {error:#}"));
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// Watches the memory of this process and of the compose project's
/// containers; none when the project has none running here (the platform
/// under test is elsewhere).
fn watch_memory(project: &str) -> anyhow::Result<Option<PeakMemory>> {
    let containers = memory::compose_containers(project)?;
    if containers.is_empty() {
        eprintln!("no container of compose project {project} runs here: memory is not watched");
        return Ok(None);
    }
    let watch = PeakMemory::watch_containers(
        containers
            .iter()
            .map(|(service, id)| (service.as_str(), id.as_str())),
    )?;
    Ok(Some(watch))
}

/// The highest position in the event store (0 when empty).
async fn last_position(pg: &PgPool) -> anyhow::Result<i64> {
    let (position,): (i64,) = sqlx::query_as("select coalesce(max(position), 0) from events")
        .fetch_one(pg)
        .await
        .context("reading the log's last position")?;
    Ok(position)
}

/// Events after a position, by what they say about orders.
#[derive(Debug, Default, Clone, Copy)]
struct Written {
    events: i64,
    confirmed: i64,
    cancelled: i64,
    rejected: i64,
}

async fn count_events(pg: &PgPool, after: i64) -> anyhow::Result<Written> {
    let (events, confirmed, cancelled, rejected): (i64, i64, i64, i64) = sqlx::query_as(
        "select count(*),
                count(*) filter (where type = 'OrderConfirmed'),
                count(*) filter (where type = 'OrderCancelled'),
                count(*) filter (where type = 'OrderRejected')
         from events where position > $1",
    )
    .bind(after)
    .fetch_one(pg)
    .await
    .context("counting the events written")?;
    Ok(Written {
        events,
        confirmed,
        cancelled,
        rejected,
    })
}

/// What the load generator did, counted as it goes.
#[derive(Default)]
struct Stats {
    placed: AtomicU64,
    place_errors: AtomicU64,
    cancels_accepted: AtomicU64,
    /// Cancellations refused (409: the order had ended meanwhile).
    cancels_refused: AtomicU64,
    cancel_errors: AtomicU64,
}

/// Places orders on a ticker.
struct Load {
    client: reqwest::Client,
    url: String,
    catalogue: Arc<Catalogue>,
    cancel_percent: u64,
    stats: Arc<Stats>,
}

/// The orders one `offer` placed.
struct Placed {
    orders: Vec<Uuid>,
    /// Those whose cancellation was accepted: their sagas end
    /// `compensated`.
    cancelled: Vec<Uuid>,
    /// From the first placement to the last one sent.
    offered: Duration,
}

impl Load {
    /// Places `count` orders at `per_second`, without waiting for answers
    /// before the next, and cancels some; returns when every request has
    /// been answered.
    async fn offer(&self, count: usize, per_second: f64) -> Placed {
        let started = Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = JoinSet::new();
        let mut orders = Vec::with_capacity(count);
        let mut cancelled = Vec::new();
        let mut collect = |done: Result<Option<(Uuid, bool)>, tokio::task::JoinError>| {
            if let Ok(Some((order, was_cancelled))) = done {
                orders.push(order);
                if was_cancelled {
                    cancelled.push(order);
                }
            }
        };
        for n in 0..count {
            ticks.tick().await;
            tasks.spawn(self.place(n));
            while let Some(done) = tasks.try_join_next() {
                collect(done);
            }
        }
        let offered = started.elapsed();
        while let Some(done) = tasks.join_next().await {
            collect(done);
        }
        Placed {
            orders,
            cancelled,
            offered,
        }
    }

    /// Places the `n`th order and, for `cancel_percent` of them, cancels
    /// it; returns its id and whether its cancellation was accepted.
    fn place(&self, n: usize) -> impl Future<Output = Option<(Uuid, bool)>> + use<> {
        let (client, url, catalogue, stats) = (
            self.client.clone(),
            self.url.clone(),
            Arc::clone(&self.catalogue),
            Arc::clone(&self.stats),
        );
        // Spread evenly: n * 37 runs through every residue mod 100.
        let cancel = ((n as u64 * 37) % 100) < self.cancel_percent;
        async move {
            let placed = post(&client, &format!("{url}/v1/orders"), catalogue.order(n))
                .await
                .and_then(|order| {
                    order["order_id"]
                        .as_str()
                        .context("order_id")?
                        .parse::<Uuid>()
                        .context("order_id is a uuid")
                });
            let order = match placed {
                Ok(order) => order,
                Err(error) => {
                    if stats.place_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("placing failed: {error:#}");
                    }
                    return None;
                }
            };
            stats.placed.fetch_add(1, Ordering::Relaxed);
            if !cancel {
                return Some((order, false));
            }
            // Half while the saga runs, half mostly after it completed.
            if n.is_multiple_of(2) {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let answer = client
                .post(format!("{url}/v1/orders/{order}/cancel"))
                .json(&json!({"reason": "soak"}))
                .send()
                .await;
            let accepted = match answer {
                Ok(response) if response.status().is_success() => {
                    stats.cancels_accepted.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Ok(response) if response.status() == reqwest::StatusCode::CONFLICT => {
                    stats.cancels_refused.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Ok(response) => {
                    if stats.cancel_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("cancelling {order}: {}", response.status());
                    }
                    false
                }
                Err(error) => {
                    if stats.cancel_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("cancelling {order}: {error:#}");
                    }
                    false
                }
            };
            Some((order, accepted))
        }
    }
}

/// How the sagas of some orders stand in the read model (query-service's
/// `rm_sagas`).
#[derive(Debug, Default)]
struct SagaCounts {
    total: usize,
    completed: usize,
    compensated: usize,
    failed: usize,
    /// Cancelled orders whose saga has not been compensated yet (it may
    /// show `completed` for a moment before compensating).
    cancel_pending: usize,
}

impl SagaCounts {
    /// Sagas that reached their end: `completed` (not cancelled) or
    /// `compensated`.
    fn ended(&self) -> usize {
        self.completed + self.compensated - self.cancel_pending
    }

    fn all_ended(&self) -> bool {
        self.ended() == self.total
    }
}

async fn saga_counts(pg: &PgPool, placed: &Placed) -> anyhow::Result<SagaCounts> {
    let (completed, compensated, failed, cancel_pending): (i64, i64, i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'completed'),
                count(*) filter (where status = 'compensated'),
                count(*) filter (where status = 'failed'),
                count(*) filter (where status = 'completed' and order_id = any($2))
         from rm_sagas where order_id = any($1)",
    )
    .bind(&placed.orders)
    .bind(&placed.cancelled)
    .fetch_one(pg)
    .await
    .context("counting the run's sagas")?;
    Ok(SagaCounts {
        total: placed.orders.len(),
        completed: completed as usize,
        compensated: compensated as usize,
        failed: failed as usize,
        cancel_pending: cancel_pending as usize,
    })
}

/// Waits (at most `timeout`) until every saga of `placed` has ended;
/// returns how they stand.
async fn wait_sagas_ended(
    pg: &PgPool,
    placed: &Placed,
    timeout: Duration,
) -> anyhow::Result<SagaCounts> {
    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    loop {
        let counts = saga_counts(pg, placed).await?;
        if counts.all_ended() || Instant::now() > deadline {
            return Ok(counts);
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!("  {} of {} sagas ended", counts.ended(), counts.total);
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One projection as `GET /v1/projections` shows it.
#[derive(Debug, Deserialize)]
struct Projection {
    name: String,
    lag_events: i64,
    lag_seconds: f64,
}

async fn projections(client: &reqwest::Client, url: &str) -> anyhow::Result<Vec<Projection>> {
    let response = client
        .get(format!("{url}/v1/projections"))
        .send()
        .await?
        .error_for_status()?;
    Ok(response.json().await?)
}

/// Waits (at most `timeout`) until every projection's lag is 0 events;
/// returns how long it took.
async fn wait_caught_up(
    client: &reqwest::Client,
    projector_url: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let last = projections(client, projector_url).await;
        if let Ok(all) = &last
            && all.iter().all(|p| p.lag_events == 0)
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("still behind after {timeout:?}: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One second's look at the lags.
#[derive(Debug, Clone)]
struct Sample {
    /// Each projection's lag in seconds (the age of its oldest event not
    /// yet applied), by name.
    projections: BTreeMap<String, f64>,
    /// The relay's lag in seconds (the age of its oldest event not yet
    /// published).
    relay: Option<f64>,
}

impl Sample {
    /// The worst projection's lag.
    fn worst(&self) -> f64 {
        self.projections.values().copied().fold(0.0, f64::max)
    }
}

/// Samples the lags every second until `stop`.
async fn sample(
    client: reqwest::Client,
    projector_url: String,
    command_service_url: String,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (projected, relay) = tokio::join!(
            projections(&client, &projector_url),
            relay_lag(&client, &command_service_url)
        );
        match projected {
            Ok(all) => samples.lock().expect("not poisoned").push(Sample {
                projections: all.into_iter().map(|p| (p.name, p.lag_seconds)).collect(),
                relay,
            }),
            Err(error) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("sampling the projections' lag failed: {error:#}");
                }
            }
        }
    }
}

/// `orders_relay_lag_seconds` from command-service's metrics, if it is there.
async fn relay_lag(client: &reqwest::Client, url: &str) -> Option<f64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metric(&text, "orders_relay_lag_seconds")
}

/// The value of an unlabelled metric in Prometheus' text format.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Prints a line every minute until `stop`, and one for the last part of
/// a minute.
async fn report_minutes(
    pg: PgPool,
    start_position: i64,
    samples: Arc<Mutex<Vec<Sample>>>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    println!(
        "| minute | orders placed | events written | events/s | orders confirmed | projection lag p50 | p99 | max | relay lag p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut index = 0;
    let mut last = Written::default();
    let mut last_placed = 0;
    let mut seen_samples = 0;
    let mut minute_started = Instant::now();
    loop {
        let stopped = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep_until((minute_started + Duration::from_secs(60)).into()) => false,
        };
        let seconds = minute_started.elapsed().as_secs_f64();
        minute_started = Instant::now();
        let written = match count_events(&pg, start_position).await {
            Ok(written) => written,
            Err(error) => {
                eprintln!("{error:#}");
                last
            }
        };
        let placed = stats.placed.load(Ordering::Relaxed);
        let (worst, relay): (Vec<f64>, Vec<f64>) = {
            let samples = samples.lock().expect("not poisoned");
            let new = &samples[seen_samples..];
            seen_samples = samples.len();
            (
                new.iter().map(Sample::worst).collect(),
                new.iter().filter_map(|s| s.relay).collect(),
            )
        };
        if seconds >= 1.0 {
            index += 1;
            let events = written.events - last.events;
            println!(
                "| {index}{} | {} | {events} | {:.0} | {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s |",
                if seconds < 59.0 {
                    format!(" ({seconds:.0} s)")
                } else {
                    String::new()
                },
                placed - last_placed,
                events as f64 / seconds,
                written.confirmed - last.confirmed,
                percentile(worst.clone(), 0.50),
                percentile(worst.clone(), 0.99),
                percentile(worst, 1.0),
                percentile(relay, 0.99),
            );
        }
        last = written;
        last_placed = placed;
        if stopped {
            return;
        }
    }
}

/// The `p` quantile (nearest rank) of `values`; NaN when there are none.
fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1;
    values[index]
}

/// Fetching the oldest and the newest messages of one partition.
#[derive(Debug)]
struct FetchLatency {
    partition: i32,
    /// Messages in the partition when measured.
    messages: i64,
    oldest: Fetched,
    newest: Fetched,
}

/// The median of three fetches of `messages` messages.
#[derive(Debug, Clone, Copy)]
struct Fetched {
    messages: i64,
    elapsed: Duration,
}

impl Fetched {
    fn millis(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0
    }
}

/// Measures, on partition 0 of `topic`, how long a consumer of our own (no
/// group) takes to fetch the first `count` messages and the last `count`.
/// The consumers are closed before this returns.
async fn fetch_latency(brokers: &str, topic: &str, count: i64) -> anyhow::Result<FetchLatency> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let partition = 0;
        let (low, high) = consumer(&brokers)?
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .context("reading the events topic's offsets")?;
        let messages = high - low;
        anyhow::ensure!(messages > 0, "the events topic's partition 0 is empty");
        let count = count.min(messages);
        let time = |from: i64| -> anyhow::Result<Fetched> {
            let mut runs = Vec::new();
            for _ in 0..3 {
                runs.push(fetch(&brokers, &topic, partition, from, count)?);
            }
            runs.sort();
            Ok(Fetched {
                messages: count,
                elapsed: runs[1],
            })
        };
        Ok(FetchLatency {
            partition,
            messages,
            oldest: time(low)?,
            newest: time(high - count)?,
        })
    })
    .await?
}

fn consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // librdkafka assigns partitions only to a consumer with a group;
        // this one never joins it (no subscribe) and commits nothing.
        .set("group.id", "soak-fetch-probe")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100")
        .set("log_level", "3")
        .create()
        .context("creating a Kafka consumer")
}

/// Time from assigning the partition at `from` to holding `count`
/// messages, with a new consumer that has already connected.
fn fetch(
    brokers: &str,
    topic: &str,
    partition: i32,
    from: i64,
    count: i64,
) -> anyhow::Result<Duration> {
    let consumer = consumer(brokers)?;
    // Connects to the partition's leader, so the timing below is fetches.
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .context("connecting to the partition's leader")?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let mut received = 0;
    while received < count {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("fetched only {received} of {count} messages in 120 s");
        }
        match consumer.poll(Duration::from_secs(1)) {
            Some(Ok(_)) => received += 1,
            Some(Err(error)) => bail!("fetching: {error}"),
            None => {}
        }
    }
    Ok(started.elapsed())
}

struct Report<'a> {
    args: &'a Args,
    events_per_order: f64,
    orders_per_second: f64,
    load_seconds: f64,
    placed: &'a Placed,
    stats: &'a Stats,
    written: &'a Written,
    samples: &'a [Sample],
    sagas: &'a SagaCounts,
    caught_up: &'a anyhow::Result<Duration>,
    drain_seconds: f64,
    fetch_start: &'a FetchLatency,
    fetch_end: &'a FetchLatency,
}

fn print_report(report: &Report<'_>) {
    let Report {
        args,
        written,
        samples,
        sagas,
        stats,
        ..
    } = report;
    let events_per_second = written.events as f64 / report.load_seconds;
    println!();
    println!(
        "Load: {} orders placed in {:.1} s ({:.1}/s offered, one order = {:.1} events in the calibration; {} placements failed); cancellations: {} accepted, {} refused, {} failed.",
        report.placed.orders.len(),
        report.load_seconds,
        report.orders_per_second,
        report.events_per_order,
        stats.place_errors.load(Ordering::Relaxed),
        stats.cancels_accepted.load(Ordering::Relaxed),
        stats.cancels_refused.load(Ordering::Relaxed),
        stats.cancel_errors.load(Ordering::Relaxed),
    );
    println!(
        "Events written from the load's start until its sagas ended: {} ({events_per_second:.0} per second of load); orders confirmed {}, cancelled {}, rejected {}.",
        written.events, written.confirmed, written.cancelled, written.rejected,
    );
    println!();
    println!("| projection lag over the load (1 s samples) | p50 | p99 | max |");
    println!("|---|---|---|---|");
    let mut names: Vec<&String> = samples.iter().flat_map(|s| s.projections.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let lags: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.projections.get(name).copied())
            .collect();
        println!(
            "| {name} | {:.2} s | {:.2} s | {:.2} s |",
            percentile(lags.clone(), 0.5),
            percentile(lags.clone(), 0.99),
            percentile(lags, 1.0)
        );
    }
    let worst: Vec<f64> = samples.iter().map(Sample::worst).collect();
    let p99 = percentile(worst.clone(), 0.99);
    println!(
        "| the worst of them | {:.2} s | {p99:.2} s | {:.2} s |",
        percentile(worst.clone(), 0.5),
        percentile(worst, 1.0)
    );
    let relay: Vec<f64> = samples.iter().filter_map(|s| s.relay).collect();
    println!(
        "| (the relay) | {:.2} s | {:.2} s | {:.2} s |",
        percentile(relay.clone(), 0.5),
        percentile(relay.clone(), 0.99),
        percentile(relay, 1.0)
    );
    println!();
    println!(
        "| broker fetch, partition {} of {} | start ({} messages in it) | end ({} messages in it) | end / start |",
        report.fetch_start.partition,
        args.events_topic(),
        report.fetch_start.messages,
        report.fetch_end.messages
    );
    println!("|---|---|---|---|");
    for (what, start, end) in [
        ("oldest", report.fetch_start.oldest, report.fetch_end.oldest),
        ("newest", report.fetch_start.newest, report.fetch_end.newest),
    ] {
        println!(
            "| the {what} messages | {} in {:.0} ms | {} in {:.0} ms | {:.2} |",
            start.messages,
            start.millis(),
            end.messages,
            end.millis(),
            (end.millis() / end.messages as f64) / (start.millis() / start.messages as f64)
        );
    }
    println!();
    let verdict = if p99 < args.lag_target_seconds {
        "PASS"
    } else {
        "MISS"
    };
    let rate_note = if events_per_second >= 300.0 {
        String::new()
    } else {
        format!(" (at {events_per_second:.0} events/s, below the target's 300)")
    };
    println!(
        "{verdict}: projection lag p99 {p99:.2} s against the target of {:.1} s at 300 events/s sustained{rate_note}; {} events{}.",
        args.lag_target_seconds,
        written.events,
        if written.events >= 200_000 {
            ""
        } else {
            ", fewer than the soak's 200,000"
        }
    );
    println!(
        "Sagas: {} of {} ended ({} completed, {} compensated, {} failed){}.",
        sagas.ended(),
        sagas.total,
        sagas.completed - sagas.cancel_pending,
        sagas.compensated,
        sagas.failed,
        if sagas.all_ended() {
            String::new()
        } else {
            " -- NOT ALL ENDED".into()
        }
    );
    match report.caught_up {
        Ok(after) => println!(
            "Projections: every one at lag 0, {:.1} s after the sagas ended ({:.1} s after the load).",
            after.as_secs_f64(),
            report.drain_seconds
        ),
        Err(error) => println!("Projections: NOT caught up: {error:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_unlabelled_metric() {
        let text = "# HELP relay_lag_seconds Age\n# TYPE relay_lag_seconds gauge\nrelay_lag_seconds 0.25\nrelay_lag_seconds_total 3\n";
        assert_eq!(metric(text, "relay_lag_seconds"), Some(0.25));
        assert_eq!(metric(text, "relay_lag"), None);
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(values.clone(), 0.5), 50.0);
        assert_eq!(percentile(values.clone(), 0.99), 99.0);
        assert_eq!(percentile(values, 1.0), 100.0);
        assert!(percentile(Vec::new(), 0.5).is_nan());
    }
}
