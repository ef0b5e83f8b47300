//! Whether each background worker of a process (a Kafka consumer, the
//! relay) keeps up, so that a worker that is stuck says so instead of
//! stalling silently.
//!
//! A worker is *stalled* when it is behind (work waits for it) and has made
//! no progress for the process's `STALL_AFTER_MS`. Two parties feed a
//! [`Progress`]: the worker itself calls [`Progress::advanced`] whenever it
//! gets something done, and a monitor measures from the event store how far
//! behind it is ([`Progress::observe`]); being caught up counts as progress
//! too, so an idle worker never looks stuck. The measurement comes from
//! PostgreSQL, not from the broker, because a broker that does not answer
//! is exactly when the answer matters.
//!
//! The [`Watchdog`] holds every worker of a process: readiness names the
//! stalled ones, `/metrics` shows a gauge per worker, and worker loops ask
//! [`Watchdog::stalled_since`] when to recreate their Kafka client (of a
//! watchdog [`Watchdog::over`] the workers that client feeds).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::backoff::Backoff;

/// How often monitors measure and stall checks look.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

#[derive(Clone, Default)]
struct WorkerMetrics {
    stalled: Family<WorkerLabel, Gauge>,
    behind: Family<WorkerLabel, Gauge>,
    since_progress: Family<WorkerLabel, Gauge<f64, AtomicU64>>,
}

/// Every watched worker of a process.
#[derive(Clone)]
pub struct Watchdog {
    stall_after: Duration,
    workers: Arc<Mutex<Vec<Progress>>>,
    metrics: WorkerMetrics,
}

impl Watchdog {
    /// A watchdog whose workers stall after `stall_after` without progress,
    /// with its gauges in `registry`.
    pub fn new(stall_after: Duration, registry: &mut Registry) -> Self {
        let metrics = WorkerMetrics::default();
        registry.register(
            "worker_stalled",
            "1 while the worker is behind and has made no progress for STALL_AFTER_MS",
            metrics.stalled.clone(),
        );
        registry.register(
            "worker_behind",
            "Work waiting for the worker when last measured (events)",
            metrics.behind.clone(),
        );
        registry.register(
            "worker_seconds_since_progress",
            "Seconds since the worker last made progress or was caught up",
            metrics.since_progress.clone(),
        );
        Self {
            stall_after,
            workers: Arc::default(),
            metrics,
        }
    }

    pub fn stall_after(&self) -> Duration {
        self.stall_after
    }

    /// Starts watching a worker called `name`; it counts as having just
    /// made progress.
    pub fn watch(&self, name: impl Into<String>) -> Progress {
        let progress = Progress {
            name: name.into(),
            stall_after: self.stall_after,
            state: Arc::new(Mutex::new(State {
                behind: 0,
                position: None,
                waiting_for: String::new(),
                last_progress: Instant::now(),
                reported_stalled: false,
            })),
            metrics: self.metrics.clone(),
        };
        lock(&self.workers).push(progress.clone());
        progress
    }

    /// The same watchdog over `workers` only: what a worker loop that
    /// feeds just those is supervised by, so that another worker's stall
    /// (the orchestrator's failing step calls, say) does not recreate its
    /// Kafka client.
    pub fn over(&self, workers: &[&Progress]) -> Watchdog {
        Self {
            stall_after: self.stall_after,
            workers: Arc::new(Mutex::new(workers.iter().map(|&p| p.clone()).collect())),
            metrics: self.metrics.clone(),
        }
    }

    /// The worker called `name`, if watched.
    pub fn worker(&self, name: &str) -> Option<Progress> {
        lock(&self.workers).iter().find(|p| p.name == name).cloned()
    }

    /// Every worker that is stalled now.
    pub fn stalled(&self) -> Vec<WorkerReport> {
        lock(&self.workers)
            .iter()
            .map(Progress::report)
            .filter(|report| report.stalled)
            .collect()
    }

    /// Resolves once some worker is stalled and `since` (when the caller
    /// last recreated its client) is at least `STALL_AFTER_MS` ago, so a
    /// new client gets a whole period to make progress.
    pub async fn stalled_since(&self, since: Instant) -> Vec<WorkerReport> {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            if since.elapsed() < self.stall_after {
                continue;
            }
            let stalled = self.stalled();
            if !stalled.is_empty() {
                return stalled;
            }
        }
    }

    /// Whether any worker made progress since `since`.
    pub fn progressed_since(&self, since: Instant) -> bool {
        lock(&self.workers)
            .iter()
            .any(|p| p.state().last_progress > since)
    }
}

/// One worker's progress, shared by the worker and its monitor.
#[derive(Clone)]
pub struct Progress {
    name: String,
    stall_after: Duration,
    state: Arc<Mutex<State>>,
    metrics: WorkerMetrics,
}

#[derive(Debug)]
struct State {
    behind: u64,
    position: Option<i64>,
    waiting_for: String,
    last_progress: Instant,
    /// The verdict of the last observation: what every view reports, and
    /// what makes each stall and each recovery logged once.
    reported_stalled: bool,
}

/// What readiness and the logs say about a worker.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    pub name: String,
    pub stalled: bool,
    /// Work waiting for it when last measured.
    pub behind: u64,
    pub seconds_since_progress: f64,
    /// What it is waiting for.
    pub waiting_for: String,
}

impl Progress {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker got something done (handled a batch, published one).
    pub fn advanced(&self) {
        self.state().last_progress = Instant::now();
    }

    /// The worker got something done and has reached `position` (kept if
    /// higher than the one it had).
    pub fn advanced_to(&self, position: i64) {
        let mut state = self.state();
        state.last_progress = Instant::now();
        state.position = Some(state.position.map_or(position, |p| p.max(position)));
    }

    /// The highest position the worker has reached, as it or its monitor
    /// last said.
    pub fn position(&self) -> Option<i64> {
        self.state().position
    }

    /// The monitor's measurement: `behind` events wait for the worker, which
    /// has reached `position` (a move counts as progress; so does being
    /// caught up). `waiting_for` says what the worker waits for, for the log
    /// and readiness. Logs when the worker becomes stalled and when it
    /// recovers, and updates the gauges.
    pub fn observe(&self, behind: u64, position: Option<i64>, waiting_for: String) {
        let (report, was_stalled) = {
            let mut state = self.state();
            if behind == 0 || (position.is_some() && position != state.position) {
                state.last_progress = Instant::now();
            }
            state.behind = behind;
            if position.is_some() {
                state.position = position;
            }
            state.waiting_for = waiting_for;
            let report = self.report_of(&state);
            let was_stalled = std::mem::replace(&mut state.reported_stalled, report.stalled);
            (report, was_stalled)
        };
        match (was_stalled, report.stalled) {
            (false, true) => tracing::warn!(
                worker = %report.name,
                behind = report.behind,
                seconds_since_progress = report.seconds_since_progress,
                waiting_for = %report.waiting_for,
                "stalled: behind with no progress"
            ),
            (true, false) => tracing::info!(worker = %report.name, "making progress again"),
            _ => {}
        }
        let label = WorkerLabel {
            worker: self.name.clone(),
        };
        self.metrics
            .stalled
            .get_or_create(&label)
            .set(i64::from(report.stalled));
        self.metrics
            .behind
            .get_or_create(&label)
            .set(report.behind.min(i64::MAX as u64) as i64);
        self.metrics
            .since_progress
            .get_or_create(&label)
            .set(report.seconds_since_progress);
    }

    pub fn is_stalled(&self) -> bool {
        self.report().stalled
    }

    /// The worker as its monitor last judged it: readiness, the projections'
    /// status, the gauge and the log all give the same verdict, which
    /// changes only when the monitor observes (every [`CHECK_EVERY`]).
    pub fn report(&self) -> WorkerReport {
        let state = self.state();
        WorkerReport {
            stalled: state.reported_stalled,
            ..self.report_of(&state)
        }
    }

    fn report_of(&self, state: &State) -> WorkerReport {
        let since = state.last_progress.elapsed();
        WorkerReport {
            name: self.name.clone(),
            stalled: state.behind > 0 && since >= self.stall_after,
            behind: state.behind,
            seconds_since_progress: since.as_secs_f64(),
            waiting_for: state.waiting_for.clone(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded sections never panic; a poisoned lock still holds
    // consistent figures.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A monitor's pace: waits [`CHECK_EVERY`]; false once `shutdown` came
/// first. A monitor is `while progress::tick(&shutdown).await { measure }`.
pub async fn tick(shutdown: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(CHECK_EVERY) => true,
    }
}

/// Runs a worker until `shutdown`: `work` is started again after it fails,
/// and also when the watchdog finds a worker stalled (its Kafka client is
/// then recreated rather than waited on forever), waiting
/// [`Backoff::RESTART`] between restarts, reset by progress.
pub async fn supervise<F, Fut>(
    what: &str,
    watchdog: &Watchdog,
    shutdown: &tokio_util::sync::CancellationToken,
    work: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let stalled = |started| async move {
        let stalled = watchdog.stalled_since(started).await;
        let names: Vec<&str> = stalled.iter().map(|w| w.name.as_str()).collect();
        anyhow::anyhow!(
            "stalled ({}): behind with no progress for {} s; recreating the Kafka client",
            names.join(", "),
            watchdog.stall_after().as_secs()
        )
    };
    restart(what, Backoff::RESTART, shutdown, work, stalled, |started| {
        watchdog.progressed_since(started)
    })
    .await;
}

/// The restart loop under every long-running worker: runs `work` until
/// `shutdown`, and starts it again after it ends, fails, or `stalled(start
/// of this run)` resolves (with the reason), waiting what `backoff` says
/// between runs; a run after which `progressed(its start)` holds resets
/// the wait.
pub async fn restart<W, WFut, S, SFut>(
    what: &str,
    backoff: Backoff,
    shutdown: &tokio_util::sync::CancellationToken,
    mut work: W,
    stalled: S,
    mut progressed: impl FnMut(Instant) -> bool,
) where
    W: FnMut() -> WFut,
    WFut: std::future::Future<Output = anyhow::Result<()>>,
    S: Fn(Instant) -> SFut,
    SFut: std::future::Future<Output = anyhow::Error>,
{
    let mut retries = backoff.retries();
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            result = work() => result,
            error = stalled(started) => Err(error),
        };
        if progressed(started) {
            retries.reset();
        }
        let delay = retries.next_delay();
        match result {
            Ok(()) => tracing::info!("{what} ended; starting over"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                retry_in_ms = delay.as_millis() as u64,
                "{what} stopped; starting over"
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watchdog(stall_after: Duration) -> Watchdog {
        Watchdog::new(stall_after, &mut Registry::default())
    }

    #[test]
    fn a_worker_behind_without_progress_is_stalled_after_the_period() {
        let dog = watchdog(Duration::from_millis(30));
        let worker = dog.watch("consumer");
        worker.observe(5, Some(10), "events after 10".into());
        assert!(!worker.is_stalled(), "not before the period");
        std::thread::sleep(Duration::from_millis(40));
        worker.observe(7, Some(10), "events after 10".into());
        let stalled = dog.stalled();
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].name, "consumer");
        assert_eq!(stalled[0].behind, 7);
        assert_eq!(stalled[0].waiting_for, "events after 10");
    }

    #[test]
    fn an_idle_worker_that_is_caught_up_is_never_stalled() {
        let dog = watchdog(Duration::from_millis(20));
        let worker = dog.watch("relay");
        std::thread::sleep(Duration::from_millis(30));
        worker.observe(0, Some(3), String::new());
        assert!(!worker.is_stalled());
        // Work arriving after a long idle time is not a stall yet: being
        // caught up a moment ago counts as progress.
        worker.observe(4, Some(3), String::new());
        assert!(!worker.is_stalled());
    }

    #[test]
    fn moving_position_or_advancing_is_progress() {
        let dog = watchdog(Duration::from_millis(20));
        let worker = dog.watch("intake");
        worker.observe(9, Some(1), String::new());
        std::thread::sleep(Duration::from_millis(30));
        worker.observe(9, Some(2), String::new());
        assert!(!worker.is_stalled(), "the position moved");
        std::thread::sleep(Duration::from_millis(30));
        worker.advanced();
        worker.observe(9, Some(2), String::new());
        assert!(!worker.is_stalled(), "the worker said it advanced");
        std::thread::sleep(Duration::from_millis(30));
        worker.observe(9, Some(2), String::new());
        assert!(worker.is_stalled());
    }

    #[test]
    fn a_watchdog_over_some_workers_sees_only_their_stalls_and_progress() {
        let dog = watchdog(Duration::from_millis(20));
        let intake = dog.watch("intake");
        let steps = dog.watch("steps");
        let over_intake = dog.over(&[&intake]);
        intake.observe(2, Some(1), String::new());
        let since = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        steps.advanced();
        assert!(dog.progressed_since(since));
        assert!(!over_intake.progressed_since(since), "only steps advanced");

        // Steps stall while the intake keeps up: only the whole watchdog
        // sees a stall.
        intake.observe(0, Some(2), String::new());
        std::thread::sleep(Duration::from_millis(30));
        steps.observe(3, None, String::new());
        intake.observe(0, Some(2), String::new());
        assert_eq!(dog.stalled().len(), 1);
        assert!(over_intake.stalled().is_empty(), "steps is not watched");

        // The intake stalls too.
        intake.observe(4, Some(2), String::new());
        std::thread::sleep(Duration::from_millis(30));
        intake.observe(4, Some(2), String::new());
        let stalled = over_intake.stalled();
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].name, "intake");
        assert_eq!(dog.stalled().len(), 2, "the whole watchdog sees both");
    }
}
