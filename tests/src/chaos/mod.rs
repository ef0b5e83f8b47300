//! The crash-safety suite: a load of orders and cancellations while the
//! platform's processes, the broker and PostgreSQL are killed with SIGKILL,
//! then checks against the event store itself.
//!
//! - [`load`]: products and customers made for the run, then clients that
//!   place orders at an offered rate (some made to be rejected: more than
//!   the stock, an unserved country, not enough balance) and cancel about
//!   one in eight, each POST with an `Idempotency-Key`, repeated with the
//!   same key and body until a definite answer; every acknowledged request
//!   is recorded.
//! - [`faults`]: the [`Faults`] trait (kill a target with SIGKILL; its
//!   supervisor starts it again), the schedule, the probes that say a
//!   target serves again, and [`faults::ComposeFaults`] for `make chaos`.
//! - [`local`]: the short form's platform: its own PostgreSQL and broker
//!   containers and the services as child processes of the test.
//! - [`check`]: the fold of the `events` table and everything held against
//!   it.
//!
//! [`run`] puts them together and returns a [`Report`]: the figures
//! (orders, faults, seconds to settle) and every failed check.

pub mod check;
pub mod faults;
pub mod load;
pub mod local;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;

pub use faults::{FaultRecord, Faults, Target};
pub use load::LoadSettings;

/// Where the platform is.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub command: String,
    pub query: String,
    pub orchestrator: String,
    pub projector: String,
    /// The event store's database.
    pub database_url: String,
    pub kafka_brokers: String,
}

/// One run of the suite.
#[derive(Debug, Clone)]
pub struct Settings {
    pub load: LoadSettings,
    /// What to kill, in order, spread over the load.
    pub faults: Vec<Target>,
    /// Everything must have settled this long after the last fault (or the
    /// end of the load, if that is later).
    pub settle_bound: Duration,
    /// How long a killed target may take to serve again.
    pub recovery_bound: Duration,
    /// How long a client repeats one request before giving up on it.
    pub request_budget: Duration,
}

/// What a run did and found.
#[derive(Debug)]
pub struct Report {
    pub run: String,
    pub offered: u64,
    pub acknowledged: usize,
    pub refused: usize,
    pub unanswered: usize,
    pub cancels_acknowledged: usize,
    pub cancels_refused: usize,
    pub retries: u64,
    /// Orders of the run in the store, acknowledged or not.
    pub orders_in_store: usize,
    pub events_folded: usize,
    pub outcomes: BTreeMap<String, usize>,
    pub faults: Vec<FaultRecord>,
    pub unplanned_restarts: BTreeMap<Target, u32>,
    pub load_seconds: f64,
    /// From the last fault, and from the end of the load, until every saga
    /// had ended; and until everything had settled (sagas ended,
    /// projections at lag 0, read models equal to the store).
    pub sagas_ended_after_fault: Option<Duration>,
    /// Sagas that had not ended when the settle bound ran out.
    pub sagas_not_ended: usize,
    /// From the last fault until the projections were at lag 0 and the
    /// read models equal to the store (sagas that had not ended included).
    pub read_side_after_fault: Option<Duration>,
    pub settled_after_fault: Option<Duration>,
    pub settled_after_load: Option<Duration>,
    pub settle_bound: Duration,
    pub failures: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The figures on one line.
    pub fn figures(&self) -> String {
        let mut line = format!(
            "chaos figures (run {}): orders {} offered in {:.0} s, {} acknowledged, {} refused, {} unanswered; \
             cancels {} acknowledged, {} refused (order already ended); {} client retries; \
             {} orders in the store ({}); faults {}",
            self.run,
            self.offered,
            self.load_seconds,
            self.acknowledged,
            self.refused,
            self.unanswered,
            self.cancels_acknowledged,
            self.cancels_refused,
            self.retries,
            self.orders_in_store,
            self.outcomes
                .iter()
                .map(|(outcome, n)| format!("{n} {outcome}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.faults.len(),
        );
        let mut per_target: BTreeMap<Target, u32> = BTreeMap::new();
        for fault in &self.faults {
            *per_target.entry(fault.target).or_default() += 1;
        }
        if !per_target.is_empty() {
            let _ = write!(
                line,
                " ({})",
                per_target
                    .iter()
                    .map(|(t, n)| format!("{} {n}", t.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let recoveries: Vec<f64> = self
            .faults
            .iter()
            .filter_map(|f| f.recovered_after.map(|d| d.as_secs_f64()))
            .collect();
        if let Some(max) = recoveries.iter().copied().reduce(f64::max) {
            let _ = write!(line, ", longest recovery {max:.1} s");
        }
        let secs = |d: Option<Duration>| {
            d.map_or_else(
                || "never".to_owned(),
                |d| format!("{:.1} s", d.as_secs_f64()),
            )
        };
        let _ = write!(
            line,
            "; unplanned restarts {}; sagas all ended {} after {after}{}; read models equal to the store and projections at lag 0 {} after {after}; settled {} after {after} ({} after the load ended; bound {} s); {} failed checks",
            if self.unplanned_restarts.is_empty() {
                "none".to_owned()
            } else {
                self.unplanned_restarts
                    .iter()
                    .map(|(t, n)| format!("{} {n}", t.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            secs(self.sagas_ended_after_fault),
            if self.sagas_not_ended > 0 {
                format!(" ({} never ended)", self.sagas_not_ended)
            } else {
                String::new()
            },
            secs(self.read_side_after_fault),
            secs(self.settled_after_fault),
            secs(self.settled_after_load),
            self.settle_bound.as_secs(),
            self.failures.len(),
            after = if self.faults.is_empty() {
                "the end of the load"
            } else {
                "the last fault"
            },
        );
        line
    }

    /// The figures, each fault, and the failed checks (the first `limit`).
    pub fn details(&self, limit: usize) -> String {
        let mut text = self.figures();
        for fault in &self.faults {
            let _ = write!(
                text,
                "\n  fault: {} killed at {:.1} s, {}",
                fault.target.name(),
                fault.at.as_secs_f64(),
                match (&fault.recovered_after, &fault.error) {
                    (Some(after), _) => format!("serving again after {:.1} s", after.as_secs_f64()),
                    (None, Some(error)) => error.clone(),
                    (None, None) => "not recovered".into(),
                }
            );
        }
        for failure in self.failures.iter().take(limit) {
            let _ = write!(text, "\n  FAILED: {failure}");
        }
        if self.failures.len() > limit {
            let _ = write!(
                text,
                "\n  ... and {} more failed checks",
                self.failures.len() - limit
            );
        }
        text
    }
}

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Progress lines on stderr: on for the `chaos` binary, and in tests with
/// `TEST_LOG=1`.
pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

pub(crate) fn say(line: impl AsRef<str>) {
    if VERBOSE.load(Ordering::Relaxed) || std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
        eprintln!("[chaos] {}", line.as_ref());
    }
}

/// Bounded polling: calls `check` until it succeeds or `bound` has passed,
/// then returns the last error (unlike [`crate::eventually`], which panics,
/// so a run can report every failure rather than stop at the first).
pub async fn poll_until<T, F, Fut>(bound: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + bound;
    let mut pause = Duration::from_millis(20);
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!("{what}: still failing after {bound:?}")));
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Runs the suite against the platform at `endpoints`, killing through
/// `faults`: waits until the platform is ready, sets up the run's catalogue
/// and customers, runs the load with the faults spread over it, waits
/// (bounded) until everything has settled, and checks.
pub async fn run(
    endpoints: &Endpoints,
    faults: &impl Faults,
    settings: &Settings,
) -> anyhow::Result<Report> {
    for target in [
        Target::CommandService,
        Target::QueryService,
        Target::SagaOrchestrator,
        Target::Projector,
    ] {
        faults::serves_again(target, endpoints, Duration::from_secs(120))
            .await
            .context("the platform is not ready")?;
    }
    let pg = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&endpoints.database_url)
        .await
        .context("connecting to the event store's database")?;
    let poster = Arc::new(load::Poster::new(settings.request_budget)?);
    let rate = settings.load.rate;
    let catalogue = Arc::new(
        load::setup(
            &poster,
            endpoints,
            rate,
            settings.load.duration.as_secs_f64(),
        )
        .await
        .context("setting up the run's products and customers")?,
    );
    // Sagas older than this are not the run's (with room for clock skew
    // between this machine and the database's).
    let sagas_since = chrono::Utc::now() - chrono::Duration::minutes(10);
    say(format!(
        "run {}: {} products, {} customers; {rate} orders/s for {:?} from {} clients; faults: {}",
        catalogue.run,
        catalogue.products().count(),
        catalogue.customers().count(),
        settings.load.duration,
        settings.load.clients,
        settings
            .faults
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let start = Instant::now();
    let (record, fault_records) = tokio::join!(
        load::run(
            Arc::clone(&poster),
            endpoints,
            Arc::clone(&catalogue),
            &settings.load,
            start
        ),
        faults::inject(
            faults,
            endpoints,
            &settings.faults,
            start,
            settings.load.duration,
            settings.recovery_bound,
        )
    );
    let load_end = record.finished.unwrap_or_else(Instant::now);
    let last_fault = fault_records.iter().map(|f| f.instant).max();
    let reference = last_fault.map_or(load_end, |f| f.max(load_end));
    let deadline = reference + settings.settle_bound;

    // Settling: every saga ended, every projection at lag 0, the read
    // models equal to the store.
    let http = reqwest::Client::builder()
        .default_headers(crate::auth::binary_headers())
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut orders = poll_until(settings.settle_bound, "finding the run's orders", || {
        check::discover_orders(&pg, &catalogue)
    })
    .await?;
    let mut sagas_ended_at = None;
    // When the projections were at lag 0 and the read models equal to the
    // store, sagas that had not ended included: so a few stuck sagas do
    // not hide how long everything else took.
    let mut read_side_at = None;
    let mut unended: Vec<String> = Vec::new();
    let mut settled: Option<(Instant, check::StoreFold)> = None;
    let mut unsettled = String::new();
    loop {
        let attempt = async {
            if sagas_ended_at.is_none() {
                unended = check::unended_sagas(&pg, &orders).await?;
                if unended.is_empty() {
                    sagas_ended_at = Some(Instant::now());
                }
            }
            let behind = check::projections_behind(&http, endpoints).await?;
            if !behind.is_empty() {
                anyhow::bail!("{}", behind.join("; "));
            }
            let fold = check::fold(&pg, &catalogue, &orders).await?;
            let differences =
                check::read_model_differences(&http, endpoints, &fold, &catalogue, sagas_since)
                    .await?;
            if let Some(example) = differences.first() {
                anyhow::bail!(
                    "{} read-model values differ from the store, e.g. {example}",
                    differences.len()
                );
            }
            read_side_at.get_or_insert_with(Instant::now);
            if let Some(example) = unended.first() {
                anyhow::bail!("{} sagas have not ended, e.g. {example}", unended.len());
            }
            Ok(fold)
        }
        .await;
        match attempt {
            Ok(fold) => {
                settled = Some((Instant::now(), fold));
                break;
            }
            Err(error) => {
                unsettled = format!("{error:#}");
                if Instant::now() >= deadline {
                    break;
                }
                say(format!("settling: {unsettled}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let settled_at = settled.as_ref().map(|(at, _)| *at);
    say(match settled_at {
        Some(at) => format!(
            "settled {:.1} s after the load ended",
            at.saturating_duration_since(load_end).as_secs_f64()
        ),
        None => format!("not settled: {unsettled}"),
    });

    // The final checks, on the settled fold or, if it never settled, on
    // the store as it is now (with any order that appeared meanwhile).
    let mut failures = Vec::new();
    let latest = check::discover_orders(&pg, &catalogue).await?;
    let fold = match settled {
        Some((_, fold)) if latest.len() == orders.len() => fold,
        _ => {
            orders = latest;
            check::fold(&pg, &catalogue, &orders).await?
        }
    };
    if settled_at.is_none() {
        failures.push(format!(
            "not settled within {:?} of the last fault or the end of the load: {unsettled}",
            settings.settle_bound
        ));
        if let Ok(differences) =
            check::read_model_differences(&http, endpoints, &fold, &catalogue, sagas_since).await
        {
            failures.extend(differences);
        }
        if let Ok(behind) = check::projections_behind(&http, endpoints).await {
            failures.extend(behind);
        }
    }
    for fault in &fault_records {
        if let Some(error) = &fault.error {
            failures.push(format!("fault on {}: {error}", fault.target.name()));
        }
    }
    failures.extend(fold.violations.iter().cloned());
    failures.extend(check::check_store(&fold, &catalogue, &record));
    let unplanned_restarts = faults.unplanned_restarts().await.unwrap_or_else(|error| {
        failures.push(format!("counting restarts failed: {error:#}"));
        BTreeMap::new()
    });

    let since_fault = |at: Option<Instant>| {
        at.map(|at| at.saturating_duration_since(last_fault.unwrap_or(load_end)))
    };
    Ok(Report {
        run: catalogue.run.clone(),
        offered: record.offered,
        acknowledged: record.placed.len(),
        refused: record.refused.len(),
        unanswered: record.unanswered.len(),
        cancels_acknowledged: record
            .placed
            .iter()
            .filter(|o| o.cancel == load::Cancel::Acknowledged)
            .count(),
        cancels_refused: record
            .placed
            .iter()
            .filter(|o| o.cancel == load::Cancel::Refused)
            .count(),
        retries: record.retries,
        orders_in_store: fold.orders.len(),
        events_folded: fold.events,
        outcomes: fold.outcomes(),
        faults: fault_records,
        unplanned_restarts,
        load_seconds: load_end.saturating_duration_since(start).as_secs_f64(),
        sagas_ended_after_fault: since_fault(sagas_ended_at),
        sagas_not_ended: if sagas_ended_at.is_some() {
            0
        } else {
            unended.len()
        },
        read_side_after_fault: since_fault(read_side_at),
        settled_after_fault: since_fault(settled_at),
        settled_after_load: settled_at.map(|at| at.saturating_duration_since(load_end)),
        settle_bound: settings.settle_bound,
        failures,
    })
}
