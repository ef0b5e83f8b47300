//! The operator's views over `--sagas` sagas:
//!
//! - the saga list (`GET /v1/sagas`): the latency of each filter the
//!   console offers, first pages and a page deep in the list through its
//!   cursor, through a running query-service;
//! - the console's first view: from opening `/console/` (signed in) in
//!   headless Chromium, through the gateway, to the list's rows shown;
//! - an order's causal trace (`EventStore::trace`, what
//!   `GET /v1/orders/{id}/trace` runs) with a causal chain of 15 events per
//!   saga's order in the event store (1,500,000 events for 100,000);
//! - the peak resident memory of each process (this one, with the
//!   query-service and the browser, PostgreSQL's, the broker's) over the
//!   list's requests and the console's views.
//!
//! Run with `make bench-saga-list` (see BENCHMARKS.md).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use harness::memory::PeakMemory;
use harness::{infra, services};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;

#[derive(Parser, Debug)]
#[command(about = "GET /v1/sagas latency with its filters over a large read model")]
struct Args {
    /// Sagas in the read model.
    #[arg(long, default_value_t = 100_000)]
    sagas: u64,
    /// Requests per case; p50 and p99 are over these.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Pages followed through `next_cursor` for the deep-page case.
    #[arg(long, default_value_t = 50)]
    pages: usize,
    /// Times the console's first view is loaded.
    #[arg(long, default_value_t = 10)]
    views: usize,
    /// Skip the console (it needs nginx, chromium and chromedriver).
    #[arg(long)]
    no_console: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    harness::bench::main(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bench = infra::start_for_benchmark().await?;
    let result = measure(&bench, &args).await;
    drop(bench);
    result
}

async fn measure(bench: &infra::BenchInfra, args: &Args) -> anyhow::Result<()> {
    let database_url = infra::create_database(&bench.pg_base, "bench_saga_list").await?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&database_url)
        .await?;
    let store = event_store::EventStore::new(pool.clone());
    projector::migrate(&pool, &pool, &store, "public").await?;
    let started = Instant::now();
    fill(&pool, args.sagas).await?;
    eprintln!("{} sagas in {:.1?}", args.sagas, started.elapsed());
    let watch = PeakMemory::watch(bench)?;

    let common = service_kit::CommonConfig {
        database_url,
        database_max_connections: 8,
        kafka_brokers: bench.brokers.clone(),
        kafka_topic_prefix: "bench.".into(),
        log_format: "json".into(),
        log_filter: "warn".into(),
        ready_timeout_ms: 2000,
        stall_after_ms: 30_000,
        auth: harness::auth::auth_config(),
        limits: service_kit::http::Limits::default(),
        traces: service_kit::telemetry::TracesConfig::default(),
    };
    let config = query_service::Config {
        http_addr: ([127, 0, 0, 1], 0).into(),
        read_model_schema: "public".into(),
        min_version_timeout_ms: 5000,
        common,
    };
    let query = services::start(query_service::SERVICE, |listener, stop| {
        query_service::run(config, listener, stop)
    })
    .await;
    let client = harness::auth::client("reader");
    let url = format!("{}/v1/sagas", query.url);
    let cases = [
        ("newest first, no filter", ""),
        ("status=failed", "status=failed"),
        (
            "status=running&step=charge_payment",
            "status=running&step=charge_payment",
        ),
        ("failure=timed out", "failure=timed%20out"),
        ("min_attempts=4", "min_attempts=4"),
        ("stuck_for=3600", "stuck_for=3600"),
        (
            "placed in one day",
            "placed_from=2026-11-20T00:00:00Z&placed_to=2026-11-21T00:00:00Z",
        ),
        (
            "status=failed&failure=declined&min_attempts=2",
            "status=failed&failure=declined&min_attempts=2",
        ),
    ];
    println!(
        "| {} sagas: case | items on the first page | p50 | p99 |",
        args.sagas
    );
    println!("|---|---|---|---|");
    for (name, filter) in cases {
        let mut times = Vec::with_capacity(args.requests);
        let mut items = 0;
        for _ in 0..args.requests {
            let at = Instant::now();
            let page = get(&client, &format!("{url}?{filter}")).await?;
            times.push(at.elapsed());
            items = page["items"].as_array().map_or(0, Vec::len);
        }
        let (p50, p99) = percentiles(times);
        println!("| {name} | {items} | {p50:.1?} | {p99:.1?} |");
    }
    // Deep in the list: each page after the first through its cursor.
    let mut times = Vec::with_capacity(args.pages);
    let mut next = format!("{url}?limit=50");
    for _ in 0..args.pages {
        let at = Instant::now();
        let page = get(&client, &next).await?;
        times.push(at.elapsed());
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        next = format!("{url}?limit=50&cursor={cursor}");
    }
    let pages = times.len();
    let (p50, p99) = percentiles(times);
    println!("| {pages} pages in a row through next_cursor | 50 | {p50:.1?} | {p99:.1?} |");
    if !args.no_console {
        first_view(&query.url, args.views).await?;
    }
    let memory = watch
        .report("the list's requests and the console's views")
        .await?;
    println!();
    print!("{memory}");
    query.stop().await?;
    trace(&pool, &store, args).await
}

/// The console's first view, signed in: from opening it to the first page
/// of sagas shown, in headless Chromium through a real gateway.
async fn first_view(query_url: &str, views: usize) -> anyhow::Result<()> {
    use harness::browser::Browser;
    use harness::gateway::{Gateway, Upstreams};
    // Only the query-service answers: the list is all the first view asks.
    let gateway = Gateway::start_for(Upstreams {
        command_service: query_url.to_owned(),
        query_service: query_url.to_owned(),
        saga_orchestrator: query_url.to_owned(),
        projector: query_url.to_owned(),
    })
    .await;
    let browser = Browser::start().await;
    let console = format!("{}/console/", gateway.url);
    browser.goto(&console).await;
    let token = harness::auth::token("operator", "bench-operator");
    browser
        .execute(
            "sessionStorage.setItem('orders-console.token', arguments[0]);",
            vec![Value::String(token)],
        )
        .await;
    let mut times = Vec::with_capacity(views);
    for _ in 0..views {
        browser.goto("about:blank").await;
        let at = Instant::now();
        browser.goto(&format!("{console}#/sagas")).await;
        browser.wait_for("#saga-list tbody tr").await;
        times.push(at.elapsed());
    }
    browser.close().await;
    let (p50, p99) = percentiles(times);
    println!();
    println!(
        "| console's first view (signed in, to the list's rows shown), {views} loads | p50 | max |"
    );
    println!("|---|---|---|");
    println!("| headless Chromium through the gateway | {p50:.1?} | {p99:.1?} |");
    Ok(())
}

/// An order's causal trace with `--sagas` orders' chains in the store.
async fn trace(
    pool: &sqlx::PgPool,
    store: &event_store::EventStore,
    args: &Args,
) -> anyhow::Result<()> {
    let started = Instant::now();
    fill_chains(pool, args.sagas).await?;
    eprintln!("{} events in {:.1?}", args.sagas * 15, started.elapsed());
    let mut times = Vec::with_capacity(args.requests);
    for i in 0..args.requests as u64 {
        let order = 1 + (i * 7_919) % args.sagas;
        let at = Instant::now();
        let events = store.trace(&format!("order-{order}"), 10_001).await?;
        times.push(at.elapsed());
        anyhow::ensure!(events.len() == 15, "order {order}: {} events", events.len());
    }
    let (p50, p99) = percentiles(times);
    println!();
    println!(
        "| {} events: an order's causal trace (15 events) | p50 | p99 |",
        args.sagas * 15
    );
    println!("|---|---|---|");
    println!("| EventStore::trace | {p50:.1?} | {p99:.1?} |");
    Ok(())
}

/// For each of `orders` orders, the chain its placement causes, as the
/// platform writes it: `OrderPlaced`, ten saga events each caused by the
/// one before, and the steps' effects (reservation, charge, shipment,
/// confirmation) each caused by the saga event that started its step.
async fn fill_chains(pool: &sqlx::PgPool, orders: u64) -> anyhow::Result<()> {
    sqlx::query(
        "insert into events (event_id, stream_id, version, type, schema_version, data, metadata)
         select md5(n || '/' || k)::uuid,
                case when k = 1 or k = 15 then 'order-' || n
                     when k <= 11 then 'saga-' || n
                     when k = 12 then 'product-' || n
                     when k = 13 then 'customer-' || n
                     else 'shipment-' || n end,
                case when k = 15 then 2 when k between 2 and 11 then k - 1 else 1 end,
                'Event' || k, 1, '{}'::jsonb,
                jsonb_build_object(
                    'correlation_id', 'bench-' || n,
                    'causation_id', case
                        when k = 1 then md5('command/' || n)::uuid::text
                        when k <= 11 then md5(n || '/' || (k - 1))::uuid::text
                        else md5(n || '/' || (2 * (k - 11) + 1))::uuid::text end)
         from generate_series(1, $1) as n, generate_series(1, 15) as k",
    )
    .bind(orders as i64)
    .execute(pool)
    .await?;
    sqlx::query("analyze events").execute(pool).await?;
    Ok(())
}

async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = client.get(url).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    Ok(response.json().await?)
}

fn percentiles(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// `sagas` rows as the projector writes them, in one statement: placed
/// over the 30 days before 2026-12-01, mostly completed, some compensated,
/// running, compensating and failed, with attempts and errors to filter on.
async fn fill(pool: &sqlx::PgPool, sagas: u64) -> anyhow::Result<()> {
    sqlx::query(
        "insert into rm_sagas (order_id, status, current_step, failure_reason, started_at,
                               updated_at, finished_at, attempts, errors, state, detail, version)
         select gen_random_uuid(), s.status,
                case when s.status in ('running', 'compensating')
                     then (array['reserve_inventory', 'charge_payment', 'create_shipment'])[1 + n % 3]
                end,
                case s.status when 'compensated' then 'payment_declined'
                              when 'failed' then 'refund-payment failed after 5 attempts: timed out'
                end,
                s.placed, s.placed + interval '2 seconds',
                case when s.status in ('completed', 'compensated', 'failed')
                     then s.placed + interval '2 seconds' end,
                1 + n % 5,
                case s.status when 'compensated' then 'payment_declined'
                              when 'failed' then 'refund-payment failed after 5 attempts: timed out'
                              when 'running' then 'charge-payment: timed out'
                              else '' end,
                '{}'::jsonb, '{}'::jsonb, 8
         from generate_series(1, $1) as n,
         lateral (select
             case when n % 100 < 85 then 'completed'
                  when n % 100 < 93 then 'compensated'
                  when n % 100 < 97 then 'running'
                  when n % 100 < 98 then 'compensating'
                  else 'failed' end as status,
             timestamptz '2026-12-01' - (n * interval '30 days') / $1 as placed) as s",
    )
    .bind(sagas as i64)
    .execute(pool)
    .await?;
    sqlx::query("analyze rm_sagas").execute(pool).await?;
    Ok(())
}
