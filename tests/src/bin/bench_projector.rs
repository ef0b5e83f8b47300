//! Read-side benchmarks, each against its floor measured in the same run on
//! the same database:
//!
//! - rebuilding every read model from an event store of `--events` events
//!   (orders, products and customers with realistic data), against `COPY`
//!   out of the events table;
//! - projection lag (from an append's commit to the row being visible in
//!   the read model) at a steady offered rate, through the relay, the
//!   broker and the live projector.
//!
//! Run with `make bench-projector` (see BENCHMARKS.md). PostgreSQL keeps its
//! default durability (fsync on).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use event_relay::{self as relay, RelayConfig, RelayMetrics};
use event_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use futures::TryStreamExt;
use harness::memory::PeakMemory;
use harness::{infra, services};
use projector::rebuild::{Rebuild, Silent};
use projector::views::Projection;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Projector rebuild throughput against COPY, and projection lag")]
struct Args {
    /// Events in the store for the rebuild comparison (at least 1M in the
    /// issue's terms).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Rounds of the rebuild comparison; the median of each side is
    /// reported.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Offered rates of the lag measurement, events per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,300")]
    rates: Vec<u64>,
    /// Seconds the lag measurement runs.
    #[arg(long, default_value_t = 30)]
    lag_seconds: u64,
    /// The projector's fetch wait (PROJECTOR_FETCH_WAIT_MS).
    #[arg(long, default_value_t = 100)]
    fetch_wait_ms: u32,
    /// Skip the rebuild comparison.
    #[arg(long)]
    no_rebuild: bool,
    /// Skip the lag measurement.
    #[arg(long)]
    no_lag: bool,
    #[command(flatten)]
    relay: harness::bench::RelayFormatArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    harness::bench::main(run(args))
}

/// Starts the containers, measures, and removes the containers again,
/// after the relay and the projector using them have stopped.
async fn run(args: Args) -> anyhow::Result<()> {
    let bench = infra::start_for_benchmark().await?;
    let result = measure(&bench, &args).await;
    drop(bench);
    result
}

async fn measure(bench: &infra::BenchInfra, args: &Args) -> anyhow::Result<()> {
    let (pg_base, brokers) = (bench.pg_base.clone(), bench.brokers.clone());

    let mut rows = Vec::new();
    let mut memory = None;
    if !args.no_rebuild {
        let pool = database(&pg_base, "bench_rebuild").await?;
        let store = EventStore::new(pool.clone());
        projector::migrate(&pool, &pool, &store, "public").await?;
        let filled = fill(&pool, args.events).await?;
        let (mut floors, mut ours) = (Vec::new(), Vec::new());
        let watch = PeakMemory::watch(bench)?;
        for round in 0..args.rounds {
            floors.push(copy_out(&pool).await?);
            let rate = rebuild(&pool, &store).await?;
            eprintln!(
                "round {}: rebuild {rate:.0} events/s, COPY {:.0} rows/s",
                round + 1,
                floors[round]
            );
            ours.push(rate);
        }
        memory = Some(watch.report("the rebuilds").await?);
        let (ours, floor) = (median(ours), median(floors));
        rows.push(format!(
            "| rebuild all read models from {filled} events | {ours:.0} events/s | {floor:.0} rows/s (COPY out) | {:.0}% |",
            100.0 * ours / floor
        ));
    }

    let mut lags = Vec::new();
    if !args.no_lag {
        for (i, &rate) in args.rates.iter().enumerate() {
            lags.push(lag(&pg_base, &brokers, &format!("bench_lag{i}"), rate, args).await?);
        }
    }
    println!("| case | ours | floor | ratio |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
    if let Some(memory) = memory {
        println!("{memory}");
    }
    println!(
        "| offered | appended | visible within 60 s of the last append | lag p50 | lag p99 | lag max |"
    );
    println!("|---|---|---|---|---|---|");
    for lag in lags {
        println!("{lag}");
    }
    Ok(())
}

async fn database(pg_base: &str, name: &str) -> anyhow::Result<PgPool> {
    let url = infra::create_database(pg_base, name).await?;
    Ok(PgPoolOptions::new()
        .max_connections(32)
        .connect(&url)
        .await?)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Fills the log with about `events` valid domain events: 40% orders
/// (placed, then confirmed), 40% stock movements on 1,000 products, 20%
/// customers (registered, then deposits). Versions ascend in insertion
/// order, as real appends would leave them.
async fn fill(pool: &PgPool, events: u64) -> anyhow::Result<u64> {
    eprintln!("filling the log with {events} events");
    let orders = (events * 4 / 10 / 2) as i64;
    let per_product = (events * 4 / 10 / 1_000) as i64;
    let customers = (events * 2 / 10 / 4) as i64;
    let metadata = "jsonb_build_object('correlation_id', 'bench', 'causation_id', 'bench')";
    let statements = [
        format!(
            "insert into events (event_id, stream_id, version, type, schema_version, data, metadata)
             select gen_random_uuid(), 'product-p' || p, v,
                    case when v = 1 then 'ProductCreated' else 'InventoryReserved' end, 1,
                    case when v = 1
                      then jsonb_build_object('sku', 'p' || p, 'name', 'Product ' || p,
                                              'price_cents', 100 + p, 'initial_stock', 1000000)
                      else jsonb_build_object('sku', 'p' || p, 'order_id', gen_random_uuid(),
                                              'quantity', 1 + v % 3)
                    end,
                    {metadata}
             from generate_series(1, {per_product}) v, generate_series(1, 1000) p
             order by v, p"
        ),
        format!(
            "insert into events (event_id, stream_id, version, type, schema_version, data, metadata)
             select gen_random_uuid(), 'customer-' || md5('c' || c)::uuid, v,
                    case when v = 1 then 'CustomerRegistered' else 'FundsDeposited' end, 1,
                    case when v = 1
                      then jsonb_build_object('customer_id', md5('c' || c)::uuid, 'name', 'Customer ' || c,
                                              'email', 'c' || c || '@example.com')
                      else jsonb_build_object('customer_id', md5('c' || c)::uuid, 'amount_cents', 1000 * v)
                    end,
                    {metadata}
             from generate_series(1, 4) v, generate_series(1, {customers}) c
             order by v, c"
        ),
        format!(
            "insert into events (event_id, stream_id, version, type, schema_version, data, metadata)
             select gen_random_uuid(), 'order-' || md5('o' || o)::uuid, v,
                    case when v = 1 then 'OrderPlaced' else 'OrderConfirmed' end, 1,
                    case when v = 1
                      then jsonb_build_object(
                             'order_id', md5('o' || o)::uuid, 'customer_id', md5('c' || (o % 1000 + 1))::uuid,
                             'lines', jsonb_build_array(jsonb_build_object('sku', 'p' || (o % 1000 + 1),
                                                        'quantity', 1 + o % 3, 'unit_price_cents', 250)),
                             'total_cents', 250 * (1 + o % 3),
                             'shipping_address', jsonb_build_object('name', 'Ada', 'line1', '1 Main St',
                                                 'city', 'London', 'postal_code', 'N1', 'country', 'GB'))
                      else jsonb_build_object('order_id', md5('o' || o)::uuid, 'tracking_number', 'TRK-' || o)
                    end,
                    {metadata}
             from generate_series(1, 2) v, generate_series(1, {orders}) o
             order by v, o"
        ),
    ];
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(pool)
            .await
            .context("filling the log")?;
    }
    sqlx::query("vacuum analyze events").execute(pool).await?;
    let count: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(pool)
        .await?;
    Ok(count as u64)
}

async fn copy_out(pool: &PgPool) -> anyhow::Result<f64> {
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut rows = 0u64;
    let mut stream = conn.copy_out_raw("copy events to stdout").await?;
    while let Some(chunk) = stream.try_next().await? {
        rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

async fn rebuild(pool: &PgPool, store: &EventStore) -> anyhow::Result<f64> {
    let rebuild = Rebuild::acquire(pool, &Projection::ALL)
        .await
        .map_err(anyhow::Error::new)?;
    let report = rebuild.run(pool, store, &Silent).await?;
    anyhow::ensure!(report.refused == 0, "{} events refused", report.refused);
    eprintln!(
        "rebuild phases: read and fold {:.1} s, write {:.1} s, index {:.1} s, catch up and swap {:.1} s",
        report.phases[0].as_secs_f64(),
        report.phases[1].as_secs_f64(),
        report.phases[2].as_secs_f64(),
        report.phases[3].as_secs_f64()
    );
    Ok(report.events_read as f64 / report.elapsed.as_secs_f64())
}

/// Appends one restock at a time at `--rate` to 200 products while the
/// relay and the projector run, and measures how long each takes from its
/// commit to being visible in `rm_products`.
async fn lag(
    pg_base: &str,
    brokers: &str,
    name: &str,
    rate: u64,
    args: &Args,
) -> anyhow::Result<String> {
    let pool = database(pg_base, name).await?;
    let store = EventStore::new(pool.clone());
    store.migrate().await?;
    let stop = CancellationToken::new();
    let common = service_kit::CommonConfig {
        database_url: format!("{pg_base}/{name}"),
        database_max_connections: 16,
        kafka_brokers: brokers.to_owned(),
        kafka_topic_prefix: format!("{name}."),
        log_format: "json".into(),
        log_filter: "warn".into(),
        ready_timeout_ms: 2000,
        stall_after_ms: 30_000,
        auth: harness::auth::auth_config(),
        limits: service_kit::http::Limits::default(),
        traces: service_kit::telemetry::TracesConfig::default(),
    };
    let relay_metrics = RelayMetrics::default();
    let relay = tokio::spawn(relay::run(
        store.clone(),
        {
            let mut config = rdkafka::ClientConfig::new();
            config
                .set("bootstrap.servers", brokers)
                .set("log_level", "3");
            config
        },
        {
            let mut config = RelayConfig::new(common.events_topic(), "/bench");
            config.format = args.relay.format();
            config
        },
        relay_metrics.clone(),
        |_| std::future::pending(),
        stop.clone(),
    ));
    let config = projector::Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        read_model_schema: "public".into(),
        consumer_group: None,
        batch_size: 500,
        fetch_wait_ms: args.fetch_wait_ms,
        common,
    };
    let projector = services::start(projector::SERVICE, |listener, stop| {
        projector::run(config, listener, stop)
    })
    .await;
    let measured = offer_lag(&pool, &store, &relay_metrics, rate, args).await;
    // Both stop (their Kafka clients closed) while the broker still runs.
    let stopped = projector.stop().await;
    stop.cancel();
    relay.await?;
    let row = measured?;
    stopped?;
    Ok(row)
}

/// Offers `rate` restocks per second while the relay and the projector
/// run; returns the table's row.
async fn offer_lag(
    pool: &PgPool,
    store: &EventStore,
    relay_metrics: &RelayMetrics,
    rate: u64,
    args: &Args,
) -> anyhow::Result<String> {
    let products = 200;
    let metadata = Metadata {
        correlation_id: "bench".into(),
        causation_id: "bench".into(),
        ..Metadata::default()
    };
    for p in 0..products {
        let sku = format!("lag{p}");
        let created = NewEvent::new(
            "ProductCreated",
            json!({"sku": sku, "name": sku, "price_cents": 100, "initial_stock": 0}),
            metadata.clone(),
        );
        store
            .append(&[StreamAppend::new(
                domain::stream::product(&sku),
                ExpectedVersion::NoStream,
                vec![created],
            )])
            .await?;
    }
    eprintln!("waiting for the projector to join its group and catch up");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let count: i64 = sqlx::query_scalar("select count(*) from rm_products")
            .fetch_one(pool)
            .await
            .unwrap_or(0);
        if count == products {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the projector did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // (sku, version) -> when its append committed.
    let committed: Arc<Mutex<HashMap<(String, u64), Instant>>> = Arc::default();
    let lags: Arc<Mutex<Vec<f64>>> = Arc::default();
    let watching = CancellationToken::new();
    let watcher = tokio::spawn(watch(
        pool.clone(),
        Arc::clone(&committed),
        Arc::clone(&lags),
        watching.clone(),
    ));

    eprintln!("offering {rate} events/s for {} s", args.lag_seconds);
    let total = rate * args.lag_seconds;
    let started = Instant::now();
    let reporter = {
        let (committed, lags, relay_metrics) = (
            Arc::clone(&committed),
            Arc::clone(&lags),
            relay_metrics.clone(),
        );
        let stop = watching.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_secs(2)).await;
                eprintln!(
                    "{:>5.1} s: {} appended, {} relayed, {} visible",
                    started.elapsed().as_secs_f64(),
                    committed.lock().expect("not poisoned").len(),
                    relay_metrics.published.get(),
                    lags.lock().expect("not poisoned").len(),
                );
            }
        })
    };
    let mut appends = tokio::task::JoinSet::new();
    for i in 0..total {
        // Open loop: each append starts on schedule whether or not earlier
        // ones have finished.
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (store, committed, metadata) =
            (store.clone(), Arc::clone(&committed), metadata.clone());
        appends.spawn(async move {
            let sku = format!("lag{}", i % products as u64);
            let event = NewEvent::new(
                "ProductRestocked",
                json!({"sku": sku, "quantity": 1}),
                metadata,
            );
            let appended = store
                .append(&[StreamAppend::new(
                    domain::stream::product(&sku),
                    ExpectedVersion::Any,
                    vec![event],
                )])
                .await?;
            let now = Instant::now();
            committed
                .lock()
                .expect("not poisoned")
                .insert((sku, appended[0].version), now);
            anyhow::Ok(())
        });
        while let Some(done) = appends.try_join_next() {
            done??;
        }
    }
    while let Some(done) = appends.join_next().await {
        done??;
    }
    let offered = total as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lags.lock().expect("not poisoned").len() < total as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watching.cancel();
    watcher.await??;
    reporter.abort();

    // Events not visible by the deadline count as infinitely late, so the
    // percentiles never flatter a pipeline that fell behind.
    let mut lags = std::mem::take(&mut *lags.lock().expect("not poisoned"));
    let visible = lags.len();
    lags.resize(total as usize, f64::INFINITY);
    lags.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let lag = lags[((lags.len() - 1) as f64 * p).round() as usize];
        if lag.is_finite() {
            format!("{:.0} ms", lag * 1000.0)
        } else {
            "not visible".to_owned()
        }
    };
    Ok(format!(
        "| {offered:.0} events/s | {total} | {visible} | {} | {} | {} |",
        percentile(0.5),
        percentile(0.99),
        percentile(1.0),
    ))
}

/// Polls `rm_products` every 5 ms; every version that became visible since
/// the last poll gets its lag from its commit.
async fn watch(
    pool: PgPool,
    committed: Arc<Mutex<HashMap<(String, u64), Instant>>>,
    lags: Arc<Mutex<Vec<f64>>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut seen: HashMap<String, u64> = HashMap::new();
    while !stop.is_cancelled() {
        let rows: Vec<(String, i64)> = sqlx::query_as("select sku, version from rm_products")
            .fetch_all(&pool)
            .await?;
        let now = Instant::now();
        {
            let committed = committed.lock().expect("not poisoned");
            let mut lags = lags.lock().expect("not poisoned");
            for (sku, version) in rows {
                let version = version as u64;
                let previous = seen.get(&sku).copied().unwrap_or(1);
                let mut newest = previous;
                for v in previous + 1..=version {
                    // An append may show up before its task recorded the
                    // commit time; it is picked up on the next poll.
                    let Some(at) = committed.get(&(sku.clone(), v)) else {
                        break;
                    };
                    lags.push(now.saturating_duration_since(*at).as_secs_f64());
                    newest = v;
                }
                seen.insert(sku, newest);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
