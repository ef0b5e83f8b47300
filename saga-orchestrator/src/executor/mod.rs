//! Executes sagas: claims the ones that are due, drives each until it has
//! to wait (a retry later) or ends, and records every transition in its
//! stream: an attempt's start before the call, a failure after it. A
//! success is recorded by the call itself, in the same append as the
//! step's effect, at the saga's version the call was made with (so is the
//! end of a compensation, by the rejection or cancellation); a forward
//! step's success records the next step's first start too, so that step
//! is called straight away, with no append of the executor's between.
//!
//! A saga the intake has just started comes straight to this instance's
//! executor (`Handoff`): the intake records its start and its first step's
//! start in one append, and leases it to this instance as it makes it
//! known, so the executor neither claims nor reads it and calls the first
//! step at once. Only when the executor has no free place does a new saga
//! wait in `saga_instances` to be claimed like any other.
//!
//! A saga is executed by at most one instance at a time: it is claimed with
//! a lease on its `saga_instances` row (`for update skip locked`, only when
//! no live lease exists), the lease is renewed whenever a third of it has
//! gone by for as long as the saga is driven (a step call that outlasts
//! the lease included), driving stops once it is lost, and every
//! append (the executor's own and a step call's) expects the version the
//! decision was made on, so even an instance that lost its lease without
//! noticing cannot record anything over another's work, and a step called
//! again after a crash or a lost lease takes effect at most once. Within
//! an instance, a claim passes over the sagas it is driving already.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use event_store::EventStore;
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::StepClient;
use crate::instances::{self, Released, Standing};
use crate::metrics::Metrics;
use crate::record;

mod drive;
pub mod interpret;

use interpret::Flow;

/// How the executor retries, waits and shares work.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names this instance in leases.
    pub instance: String,
    /// A step still failing this long after its first attempt is failed.
    pub step_deadline: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Attempts at one compensation before the saga fails.
    pub compensation_attempts: u32,
    pub lease: Duration,
    pub poll_interval: Duration,
    /// Sagas executed at once by this instance.
    pub concurrency: usize,
}

pub struct Executor {
    pub store: EventStore,
    pub pool: PgPool,
    pub client: Arc<StepClient>,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Woken when a saga becomes due now (started, cancelled, retried).
    pub wake: Arc<Notify>,
    /// One permit per saga this instance may execute at once
    /// (`Settings::concurrency`), held by each saga it executes or that the
    /// intake is handing over.
    pub slots: Arc<Semaphore>,
    /// The sagas this instance executes or is being handed, until their
    /// leases are given back: a claim passes over them, so one saga is
    /// never driven twice at once here, even if its lease ran out meanwhile.
    driving: Driving,
}

/// The sagas an instance drives (see `Executor::driving`).
#[derive(Clone, Default)]
struct Driving(Arc<Mutex<HashSet<Uuid>>>);

impl Driving {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.0.lock().expect("not poisoned")
    }

    fn mark(&self, order_ids: &[Uuid]) {
        self.lock().extend(order_ids);
    }

    fn unmark<'a>(&self, order_ids: impl IntoIterator<Item = &'a Uuid>) {
        let mut driving = self.lock();
        for order_id in order_ids {
            driving.remove(order_id);
        }
    }

    fn all(&self) -> Vec<Uuid> {
        self.lock().iter().copied().collect()
    }
}

/// A saga the intake has just started and leased to this instance: its
/// first step's start is recorded and the step not yet called.
pub struct Adopted {
    order_id: Uuid,
    loaded: record::SagaRecord,
    /// When the lease was asked for.
    leased_at: Instant,
    slot: OwnedSemaphorePermit,
}

/// How the intake gives the sagas it starts straight to this instance's
/// executor.
#[derive(Clone)]
pub struct Handoff {
    slots: Arc<Semaphore>,
    driving: Driving,
    to_executor: mpsc::UnboundedSender<Adopted>,
    /// The executor's lease owner name and lease length.
    instance: String,
    lease: Duration,
}

impl Handoff {
    /// The handoff to `executor`, and what its `run` takes the sagas from.
    pub fn to(executor: &Executor) -> (Self, mpsc::UnboundedReceiver<Adopted>) {
        let (to_executor, adopted) = mpsc::unbounded_channel();
        let handoff = Self {
            slots: Arc::clone(&executor.slots),
            driving: executor.driving.clone(),
            to_executor,
            instance: executor.settings.instance.clone(),
            lease: executor.settings.lease,
        };
        (handoff, adopted)
    }

    /// Up to `wanted` free places in the executor, each held until the saga
    /// given it is handed over (or the place is dropped).
    pub fn places(&self, wanted: usize) -> Vec<OwnedSemaphorePermit> {
        std::iter::from_fn(|| Arc::clone(&self.slots).try_acquire_owned().ok())
            .take(wanted)
            .collect()
    }

    /// Leases the new sagas `chosen` (a place each) to this instance, and
    /// returns those it leased: each to be handed over. They count as
    /// driven here from before their lease, so the executor's claims cannot
    /// take one before it is handed over, however long that takes.
    pub async fn lease_new(&self, pool: &PgPool, chosen: &[Uuid]) -> anyhow::Result<Vec<Uuid>> {
        self.driving.mark(chosen);
        let leased = instances::lease_new(pool, &self.instance, self.lease, chosen).await;
        let kept = leased.as_deref().unwrap_or_default();
        self.driving
            .unmark(chosen.iter().filter(|order_id| !kept.contains(order_id)));
        leased
    }

    /// Gives the executor a saga leased to it at `leased_at` (by
    /// [`Self::lease_new`]), whose stream is `loaded`, in a place from
    /// [`Self::places`].
    pub fn hand_over(
        &self,
        order_id: Uuid,
        loaded: record::SagaRecord,
        leased_at: Instant,
        slot: OwnedSemaphorePermit,
    ) {
        // Gone only when the executor has stopped; the lease then expires
        // and whoever runs next claims the saga.
        if self
            .to_executor
            .send(Adopted {
                order_id,
                loaded,
                leased_at,
                slot,
            })
            .is_err()
        {
            self.driving.unmark([&order_id]);
        }
    }
}

/// A finished run's lease to give back, and where to say it was.
struct Release {
    released: Released,
    done: oneshot::Sender<()>,
}

/// A saga to execute, leased to this instance.
struct Run {
    order_id: Uuid,
    /// Its `nudges` when leased.
    nudges: i64,
    leased_at: Instant,
    /// Its stream, when handed over by the intake.
    loaded: Option<record::SagaRecord>,
    slot: OwnedSemaphorePermit,
}

impl Executor {
    /// An executor with `settings.concurrency` places.
    pub fn new(
        settings: Settings,
        store: EventStore,
        pool: PgPool,
        client: Arc<StepClient>,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            pool,
            client,
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            metrics,
            wake,
            driving: Driving::default(),
        }
    }

    pub async fn run(
        self: Arc<Self>,
        mut adopted: mpsc::UnboundedReceiver<Adopted>,
        shutdown: CancellationToken,
    ) {
        let (release, releases) = mpsc::unbounded_channel();
        let releaser = tokio::spawn(Arc::clone(&self).release_all(releases));
        // Sagas being executed; dropping the set (when this future is
        // dropped) aborts them, like a killed process.
        let mut running = JoinSet::new();
        let mut poll = tokio::time::interval(self.settings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether due sagas may be waiting in the table: after a claim that
        // found fewer than it asked for, only a wake-up or the poll says so.
        let mut look = true;
        loop {
            if look {
                look = self.claim_due(&mut running, &release).await;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(saga) = adopted.recv() => {
                    let run = Run {
                        order_id: saga.order_id,
                        // The intake made its row.
                        nudges: 0,
                        leased_at: saga.leased_at,
                        loaded: Some(saga.loaded),
                        slot: saga.slot,
                    };
                    self.spawn(&mut running, run, &release);
                }
                () = self.wake.notified() => look = true,
                _ = poll.tick() => look = true,
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        // Unfinished work is safe to abandon: the next owner of each lease
        // picks up from the stream.
        running.shutdown().await;
        drop(release);
        let _ = releaser.await;
    }

    /// Claims due sagas for this instance's free places and starts them;
    /// whether to look again once a place is free: more may be waiting
    /// (no free place, or every place found a saga, or the claim failed).
    ///
    /// The free places are counted, not taken, while the claim runs: a
    /// saga the intake starts meanwhile takes a place and skips the queue
    /// (see [`Handoff`]) instead of finding the executor full, which would
    /// make it due and have its first step started a second time. A
    /// claimed saga left without a place is given back, due at once.
    async fn claim_due(
        self: &Arc<Self>,
        running: &mut JoinSet<()>,
        release: &mpsc::UnboundedSender<Release>,
    ) -> bool {
        let free = self.slots.available_permits();
        if free == 0 {
            return true;
        }
        let claimed_at = Instant::now();
        let settings = &self.settings;
        let driving = self.driving.all();
        let claimed = match instances::claim(
            &self.pool,
            &settings.instance,
            settings.lease,
            free,
            &driving,
        )
        .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "claiming sagas failed");
                return true;
            }
        };
        let more = claimed.len() == free;
        for (order_id, nudges) in claimed {
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                let (done, _) = oneshot::channel();
                let released = Released {
                    order_id,
                    standing: Standing::Active,
                    due: Utc::now(),
                    nudges,
                };
                let _ = release.send(Release { released, done });
                continue;
            };
            let run = Run {
                order_id,
                nudges,
                leased_at: claimed_at,
                loaded: None,
                slot,
            };
            self.spawn(running, run, release);
        }
        more
    }

    /// Executes `run` in a task of `running`, known as driven until its
    /// lease is given back.
    fn spawn(
        self: &Arc<Self>,
        running: &mut JoinSet<()>,
        run: Run,
        release: &mpsc::UnboundedSender<Release>,
    ) {
        self.driving.mark(&[run.order_id]);
        running.spawn(Arc::clone(self).execute(run, release.clone()));
    }

    async fn execute(self: Arc<Self>, run: Run, release: mpsc::UnboundedSender<Release>) {
        self.metrics.running.inc();
        let order_id = run.order_id;
        let flow = match self.drive(order_id, run.loaded, run.leased_at).await {
            Ok(flow) => flow,
            Err(error) => {
                tracing::warn!(%order_id, error = format!("{error:#}"), "saga interrupted; retrying soon");
                Flow::WaitUntil(Utc::now() + chrono::Duration::seconds(1))
            }
        };
        let (standing, due) = match flow {
            Flow::Settled(standing) => (standing, Utc::now()),
            Flow::WaitUntil(at) => (Standing::Active, at),
            // `drive` goes on until it must wait or has settled.
            Flow::Continue => (Standing::Active, Utc::now()),
        };
        let (done, released) = oneshot::channel();
        let asked = release.send(Release {
            released: Released {
                order_id,
                standing,
                due,
                nudges: run.nudges,
            },
            done,
        });
        if asked.is_ok() {
            let _ = released.await;
        }
        self.driving.unmark([&order_id]);
        self.metrics.running.dec();
        drop(run.slot);
    }

    /// Gives back the leases of finished runs, those that finished while
    /// the last statement ran together in one statement.
    async fn release_all(self: Arc<Self>, mut releases: mpsc::UnboundedReceiver<Release>) {
        const MOST: usize = 256;
        let mut batch = Vec::new();
        while releases.recv_many(&mut batch, MOST).await > 0 {
            let released: Vec<Released> = batch.iter().map(|r| r.released.clone()).collect();
            if let Err(error) =
                instances::release(&self.pool, &self.settings.instance, &released).await
            {
                tracing::warn!(
                    sagas = batch.len(),
                    error = format!("{error:#}"),
                    "releasing the sagas' leases failed; they expire"
                );
            }
            for release in batch.drain(..) {
                let _ = release.done.send(());
            }
        }
    }
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::zero())
}
