//! `make chaos`: the crash-safety suite against the platform `make up`
//! runs. Clients place and cancel orders (70 per second offered, for 150 s,
//! by default) with idempotency-key retries while the platform's containers
//! are killed with SIGKILL one after the other (command-service three
//! times, then every other service, the broker and PostgreSQL), relying on
//! compose's `restart: unless-stopped`; then everything is checked against
//! the event store (see `harness::chaos`). Prints the figures and every
//! failed check; exits non-zero if any check failed.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use harness::chaos::faults::ComposeFaults;
use harness::chaos::{self, Endpoints, LoadSettings, Settings, Target};

#[derive(Parser, Debug)]
#[command(
    about = "Crash safety: kills the platform's containers with SIGKILL under load, then checks the event store"
)]
struct Args {
    /// Orders per second offered, over all clients.
    #[arg(long, default_value_t = 70.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 150)]
    seconds: u64,
    /// Clients placing and cancelling orders, each one request at a time.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Everything must have settled this many seconds after the last fault
    /// (or the end of the load, if later).
    #[arg(long, default_value_t = 60)]
    settle_seconds: u64,
    /// Longest a killed container may take to serve again.
    #[arg(long, default_value_t = 90)]
    recovery_seconds: u64,
    /// Longest a client repeats one request before giving up on it.
    #[arg(long, default_value_t = 120)]
    request_budget_seconds: u64,
    /// Share of acknowledged orders that are cancelled.
    #[arg(long, default_value_t = 0.12)]
    cancel_fraction: f64,
    /// What to kill, in order, spread from 10% to 85% of the load, comma
    /// separated: command-service, query-service, saga-orchestrator,
    /// projector, kafka, postgres; `none` for a run without faults (to
    /// tell what the faults cause from what the load alone does).
    #[arg(
        long,
        default_value = "command-service,saga-orchestrator,command-service,projector,kafka,command-service,query-service,postgres",
        value_parser = parse_targets
    )]
    faults: Targets,
    /// Seed of the clients' choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Compose project of the platform (compose/compose.sh).
    #[arg(long, default_value = "orders-platform")]
    project: String,
    /// The event store's database.
    #[arg(
        long,
        env = "CHAOS_DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/orders"
    )]
    database_url: String,
    #[arg(long, env = "KAFKA_PORT", default_value_t = 9092)]
    kafka_port: u16,
    #[arg(long, env = "COMMAND_SERVICE_PORT", default_value_t = 8081)]
    command_service_port: u16,
    #[arg(long, env = "QUERY_SERVICE_PORT", default_value_t = 8082)]
    query_service_port: u16,
    #[arg(long, env = "SAGA_ORCHESTRATOR_PORT", default_value_t = 8083)]
    saga_orchestrator_port: u16,
    #[arg(long, env = "PROJECTOR_PORT", default_value_t = 8084)]
    projector_port: u16,
}

#[derive(Debug, Clone)]
struct Targets(Vec<Target>);

fn parse_targets(list: &str) -> Result<Targets, String> {
    if list.trim() == "none" {
        return Ok(Targets(vec![]));
    }
    list.split(',')
        .map(|name| {
            Target::parse(name.trim()).ok_or_else(|| {
                format!(
                    "unknown target {name}; one of {}, or none",
                    Target::ALL.map(Target::name).join(", ")
                )
            })
        })
        .collect::<Result<_, _>>()
        .map(Targets)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("chaos: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    chaos::set_verbose(true);
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let endpoints = Endpoints {
        command: url(args.command_service_port),
        query: url(args.query_service_port),
        orchestrator: url(args.saga_orchestrator_port),
        projector: url(args.projector_port),
        database_url: args.database_url.clone(),
        kafka_brokers: format!("127.0.0.1:{}", args.kafka_port),
    };
    let faults = ComposeFaults::find(&args.project)
        .await
        .context("finding the platform's containers")?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(21, |d| d.as_secs())
    });
    let settings = Settings {
        load: LoadSettings {
            rate: args.rate,
            duration: Duration::from_secs(args.seconds),
            clients: args.clients.max(1),
            cancel_fraction: args.cancel_fraction,
            cancel_within: Duration::from_secs(3),
            seed,
        },
        faults: args.faults.0.clone(),
        settle_bound: Duration::from_secs(args.settle_seconds),
        recovery_bound: Duration::from_secs(args.recovery_seconds),
        request_budget: Duration::from_secs(args.request_budget_seconds),
    };
    let report = chaos::run(&endpoints, &faults, &settings).await?;
    println!("{}", report.details(100));
    println!("seed {seed}");
    if report.passed() {
        println!("chaos: every check passed");
    } else {
        println!("chaos: {} checks failed", report.failures.len());
    }
    Ok(report.passed())
}
