//! `POST /v1/orders` under load, against its floor: a minimal axum handler
//! doing one `INSERT` per request into the same database. Both run in this
//! process (release build) against PostgreSQL and the broker in containers;
//! `wrk` (Debian's package) drives them at each connection count in turn.
//!
//! Run with `make bench-orders` (see BENCHMARKS.md).

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use clap::Parser;
use harness::bench::Services;
use harness::infra;
use harness::memory::PeakMemory;
use harness::services::{self, RunningService};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(about = "POST /v1/orders throughput and latency against a one-INSERT floor")]
struct Args {
    /// Seconds of load per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connection counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    connections: Vec<u32>,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    #[command(flatten)]
    relay: harness::bench::RelayFormatArgs,
    /// The relay's linger (RELAY_LINGER_MS).
    #[arg(long, default_value_t = event_relay::DEFAULT_LINGER_MS)]
    relay_linger_ms: u32,
    /// The services' log filter, as the services' `RUST_LOG` (their
    /// default, `info`, is what makes request spans); log lines go to
    /// stderr as JSON.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_filter: String,
    /// Where the services' spans go, as for the services (export is off
    /// unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set).
    #[command(flatten)]
    traces: service_kit::telemetry::TracesConfig,
}

#[derive(Debug, Clone, Copy)]
struct Load {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    harness::bench::main(run(args))
}

/// Starts the containers, measures, and removes the containers again,
/// after the services using them have stopped.
async fn run(args: Args) -> anyhow::Result<()> {
    which_wrk()?;
    // As the service's `main` does, so the overhead of tracing is measured.
    let telemetry = service_kit::telemetry::init(
        command_service::SERVICE,
        "json",
        &args.log_filter,
        &args.traces,
    )?;
    eprintln!(
        "log filter {:?}, spans exported: {}",
        args.log_filter,
        telemetry.exporting()
    );
    let bench = infra::start_for_benchmark().await?;
    let result = measure(&bench, &args).await;
    drop(bench);
    telemetry.shutdown().await;
    result
}

async fn measure(bench: &infra::BenchInfra, args: &Args) -> anyhow::Result<()> {
    let database_url = infra::create_database(&bench.pg_base, "bench").await?;
    let mut services = Services::new();
    let started = async {
        let command_service =
            services.add(start_command_service(&database_url, &bench.brokers, args).await);
        let floor = services.add(start_floor(&database_url).await?);
        services.wait_ready(Duration::from_secs(30)).await?;
        anyhow::Ok((command_service, floor))
    }
    .await;
    let watch = PeakMemory::watch(bench)?;
    let rows = match started {
        Ok((command_service, floor)) => load(&database_url, &command_service, &floor, args).await,
        Err(error) => Err(error),
    };
    let memory = watch.report("the load (ours and the floor's)").await;
    services.stop().await;
    let (rows, memory) = (rows?, memory?);
    println!("| connections | POST /v1/orders | floor (one INSERT) | throughput ratio |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
    println!("{memory}");
    Ok(())
}

/// Drives both servers at each connection count; returns the table's rows.
async fn load(
    database_url: &str,
    command_service: &str,
    floor: &str,
    args: &Args,
) -> anyhow::Result<Vec<String>> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;

    let client = reqwest::Client::builder()
        .default_headers(harness::auth::binary_headers())
        .build()?;
    let order_body = prepare(&client, command_service).await?;

    let mut rows = Vec::new();
    for &connections in &args.connections {
        // Each phase starts with the relay caught up, so neither pays for
        // publishing the previous phase's orders.
        relay_caught_up(&pool).await?;
        let floor_load = wrk(&format!("{floor}/floor"), &order_body, connections, args).await?;
        let ours = wrk(
            &format!("{command_service}/v1/orders"),
            &order_body,
            connections,
            args,
        )
        .await?;
        let behind = relay_caught_up(&pool).await?;
        eprintln!(
            "{connections} connections: the relay caught up {:.1} s after the load ended",
            behind.as_secs_f64()
        );
        eprintln!("{connections} connections: ours {ours:?}, floor {floor_load:?}");
        if ours.non_2xx > 0 || floor_load.non_2xx > 0 {
            bail!(
                "some requests failed: ours {}, floor {}",
                ours.non_2xx,
                floor_load.non_2xx
            );
        }
        rows.push(format!(
            "| {connections} | {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms | {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms | {:.0}% |",
            ours.requests_per_second,
            ours.p50_ms,
            ours.p99_ms,
            floor_load.requests_per_second,
            floor_load.p50_ms,
            floor_load.p99_ms,
            100.0 * ours.requests_per_second / floor_load.requests_per_second
        ));
    }
    Ok(rows)
}

fn which_wrk() -> anyhow::Result<()> {
    Command::new("wrk")
        .arg("--version")
        .output()
        .context("wrk is not installed (apt-get install wrk; compose/bench.sh does it)")?;
    Ok(())
}

/// Waits until the relay has published every stored event; returns how
/// long that took.
async fn relay_caught_up(pool: &PgPool) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    loop {
        let unpublished: i64 = sqlx::query_scalar(
            "select count(*) from events e left join event_relay_checkpoints c on true
             where c.name is null or (e.transaction_id, e.position) > (c.transaction_id, c.position)",
        )
        .fetch_one(pool)
        .await?;
        if unpublished == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the relay is still {unpublished} events behind after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn start_command_service(database_url: &str, brokers: &str, args: &Args) -> RunningService {
    let config = command_service::Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        internal_http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        shipping_countries: vec!["GB".into()],
        idempotency_retention_hours: 24,
        relay_message_format: args.relay.format(),
        relay_linger_ms: args.relay_linger_ms,
        common: service_kit::CommonConfig {
            database_url: database_url.into(),
            database_max_connections: 32,
            kafka_brokers: brokers.into(),
            kafka_topic_prefix: "bench.".into(),
            log_format: "json".into(),
            log_filter: "warn".into(),
            ready_timeout_ms: 2000,
            stall_after_ms: 30_000,
            auth: harness::auth::auth_config(),
            limits: service_kit::http::Limits::default(),
            traces: service_kit::telemetry::TracesConfig::default(),
        },
    };
    services::start_with_internal(command_service::SERVICE, |listener, internal, stop| {
        command_service::run(config, listener, internal, stop)
    })
    .await
}

/// The floor: parse the same JSON body, one INSERT, answer 202.
async fn start_floor(database_url: &str) -> anyhow::Result<RunningService> {
    let pool = PgPoolOptions::new()
        .max_connections(32)
        .connect(database_url)
        .await?;
    sqlx::query("create table floor_orders (order_id uuid primary key, body jsonb not null, created_at timestamptz not null default now())")
        .execute(&pool)
        .await?;
    async fn insert(State(pool): State<PgPool>, axum::Json(body): axum::Json<Value>) -> StatusCode {
        let inserted = sqlx::query("insert into floor_orders (order_id, body) values ($1, $2)")
            .bind(Uuid::now_v7())
            .bind(&body)
            .execute(&pool)
            .await;
        if inserted.is_ok() {
            StatusCode::ACCEPTED
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
    let app = Router::new()
        .route("/floor", post(insert))
        .route("/health/ready", get(|| async { StatusCode::OK }))
        .with_state(pool);
    Ok(services::start("floor", |listener, stop| async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .map_err(anyhow::Error::from)
    })
    .await)
}

/// A product and a customer to order with; returns the order body.
async fn prepare(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    client
        .post(format!("{url}/v1/products"))
        .json(&json!({"sku": "bench-mug", "name": "Mug", "price_cents": 1200, "initial_stock": 1_000_000}))
        .send()
        .await?
        .error_for_status()?;
    let customer: Value = client
        .post(format!("{url}/v1/customers"))
        .json(&json!({"name": "Load", "email": "load@example.com"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(json!({
        "customer_id": customer["customer_id"],
        "lines": [{"sku": "bench-mug", "quantity": 1}],
        "shipping_address": {"name": "Ada", "line1": "1 Analytical Way", "city": "London", "postal_code": "N1", "country": "GB"}
    })
    .to_string())
}

async fn wrk(url: &str, body: &str, connections: u32, args: &Args) -> anyhow::Result<Load> {
    let script = std::env::temp_dir().join(format!("bench-orders-{}.lua", Uuid::new_v4()));
    let escaped = body.replace('\\', "\\\\").replace('\'', "\\'");
    // Every write needs a token since the security issue; a writer's, as
    // a shop front would hold (the floor ignores it).
    let token = harness::auth::token("writer", "bench-orders");
    std::fs::write(
        &script,
        format!(
            "wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n\
             wrk.headers['Authorization'] = 'Bearer {token}'\nwrk.body = '{escaped}'\n"
        ),
    )?;
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", args.seconds))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(url)
        .output()
        .await
        .context("running wrk")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> anyhow::Result<Load> {
    let mut load = Load {
        requests_per_second: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        non_2xx: 0,
    };
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(value)) => load.requests_per_second = value.parse()?,
            (Some("50%"), Some(value)) => load.p50_ms = millis(value)?,
            (Some("99%"), Some(value)) => load.p99_ms = millis(value)?,
            (Some("Non-2xx"), _) => {
                load.non_2xx = line.rsplit(' ').next().unwrap_or("0").parse()?;
            }
            _ => {}
        }
    }
    if load.requests_per_second == 0.0 {
        bail!("no Requests/sec line");
    }
    Ok(load)
}

/// wrk prints durations as `812.00us`, `1.23ms` or `1.02s`.
fn millis(value: &str) -> anyhow::Result<f64> {
    let (number, factor) = if let Some(n) = value.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("unknown duration {value}")
    };
    Ok(number.parse::<f64>()? * factor)
}
