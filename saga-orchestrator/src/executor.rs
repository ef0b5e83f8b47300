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
//! gone by, checked before each call, and every
//! append (the executor's own and a step call's) expects the version the
//! decision was made on, so even an instance that lost its lease without
//! noticing cannot record anything over another's work, and a step called
//! again after a crash or a lost lease takes effect at most once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use domain::saga::{self, Ending, SagaEvent, SagaStatus, SagaStep};
use event_store::EventStore;
use serde_json::json;
use service_kit::backoff::{Backoff, Jitter};
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::{Recorded, Reply, StepClient};
use crate::decide::{self, Action};
use crate::metrics::Metrics;
use crate::record;

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
    to_executor: mpsc::UnboundedSender<Adopted>,
    /// The executor's lease owner name and lease length.
    pub instance: String,
    pub lease: Duration,
}

impl Handoff {
    /// The handoff to `executor`, and what its `run` takes the sagas from.
    pub fn to(executor: &Executor) -> (Self, mpsc::UnboundedReceiver<Adopted>) {
        let (to_executor, adopted) = mpsc::unbounded_channel();
        let handoff = Self {
            slots: Arc::clone(&executor.slots),
            to_executor,
            instance: executor.settings.instance.clone(),
            lease: executor.settings.lease,
        };
        (handoff, adopted)
    }

    /// Up to `wanted` free places in the executor, each held until the saga
    /// given it is handed over (or the place is dropped).
    pub fn places(&self, wanted: usize) -> Vec<OwnedSemaphorePermit> {
        take_slots(&self.slots, wanted)
    }

    /// Gives the executor a saga leased to it at `leased_at`, whose stream
    /// is `loaded`, in a place from [`Self::places`].
    pub fn hand_over(
        &self,
        order_id: Uuid,
        loaded: record::SagaRecord,
        leased_at: Instant,
        slot: OwnedSemaphorePermit,
    ) {
        // Gone only when the executor has stopped; the lease then expires
        // and whoever runs next claims the saga.
        let _ = self.to_executor.send(Adopted {
            order_id,
            loaded,
            leased_at,
            slot,
        });
    }
}

fn take_slots(slots: &Arc<Semaphore>, wanted: usize) -> Vec<OwnedSemaphorePermit> {
    std::iter::from_fn(|| Arc::clone(slots).try_acquire_owned().ok())
        .take(wanted)
        .collect()
}

/// A finished run's lease to give back, and where to say it was.
struct Release {
    order_id: Uuid,
    status: &'static str,
    due: DateTime<Utc>,
    nudges: i64,
    done: oneshot::Sender<()>,
}

/// A saga being driven: its state as recorded.
struct Saga {
    order_id: Uuid,
    loaded: record::SagaRecord,
    causation: String,
    /// A step's attempt whose start was recorded for this executor (by the
    /// previous step's call, or by the intake for the first step) and that
    /// is to be called next, without recording its start again.
    started: Option<(SagaStep, u32)>,
}

impl Saga {
    /// What a step call made at the current version must record (`then`:
    /// the next step's attempt that starts with this one's success).
    fn recording(&self, attempt: u32, then: Option<(SagaStep, u32)>) -> Recorded {
        Recorded {
            version: self.loaded.version,
            attempt,
            then,
        }
    }

    /// Takes in `events`, which a successful step call recorded in the
    /// saga's stream, at the version it was called with.
    fn recorded(&mut self, events: &[SagaEvent]) {
        let now = Utc::now();
        for event in events {
            self.loaded.apply(event, now);
        }
        self.loaded.version += events.len() as u64;
    }
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

/// Where a saga stands after being driven.
enum Next {
    /// Ended (`done`) or waiting for an operator (`failed`).
    Settled(&'static str),
    /// Has more to do at this time.
    At(DateTime<Utc>),
}

impl Executor {
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
                let slots = take_slots(&self.slots, self.settings.concurrency);
                if !slots.is_empty() {
                    let claimed_at = Instant::now();
                    match self.claim(slots.len()).await {
                        Ok(claimed) => {
                            look = claimed.len() == slots.len();
                            for ((order_id, nudges), slot) in claimed.into_iter().zip(slots) {
                                let run = Run {
                                    order_id,
                                    nudges,
                                    leased_at: claimed_at,
                                    loaded: None,
                                    slot,
                                };
                                running.spawn(Arc::clone(&self).execute(run, release.clone()));
                            }
                        }
                        Err(error) => {
                            tracing::warn!(error = format!("{error:#}"), "claiming sagas failed");
                        }
                    }
                }
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
                    running.spawn(Arc::clone(&self).execute(run, release.clone()));
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

    /// Leases up to `limit` due sagas to this instance.
    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<(Uuid, i64)>> {
        let claimed = sqlx::query_as(
            "update saga_instances s
             set lease_owner = $1, lease_until = now() + $2 * interval '1 millisecond'
             where order_id in (
               select order_id from saga_instances
               where status = 'active' and due_at <= now()
                 and (lease_until is null or lease_until < now())
               order by due_at
               limit $3
               -- Instances claiming at once take different rows.
               for update skip locked)
             returning s.order_id, s.nudges",
        )
        .bind(&self.settings.instance)
        .bind(self.settings.lease.as_millis() as f64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .context("claiming due sagas")?;
        Ok(claimed)
    }

    async fn execute(self: Arc<Self>, run: Run, release: mpsc::UnboundedSender<Release>) {
        self.metrics.running.inc();
        let order_id = run.order_id;
        let next = match self.drive(order_id, run.loaded, run.leased_at).await {
            Ok(next) => next,
            Err(error) => {
                tracing::warn!(%order_id, error = format!("{error:#}"), "saga interrupted; retrying soon");
                Next::At(Utc::now() + chrono::Duration::seconds(1))
            }
        };
        let (status, due) = match next {
            Next::Settled(status) => (status, Utc::now()),
            Next::At(at) => ("active", at),
        };
        let (done, released) = oneshot::channel();
        let asked = release.send(Release {
            order_id,
            status,
            due,
            nudges: run.nudges,
            done,
        });
        if asked.is_ok() {
            let _ = released.await;
        }
        self.metrics.running.dec();
        drop(run.slot);
    }

    /// Gives back the leases of finished runs, those that finished while
    /// the last statement ran together in one statement.
    async fn release_all(self: Arc<Self>, mut releases: mpsc::UnboundedReceiver<Release>) {
        const MOST: usize = 256;
        let mut batch = Vec::new();
        while releases.recv_many(&mut batch, MOST).await > 0 {
            let order_ids: Vec<Uuid> = batch.iter().map(|r| r.order_id).collect();
            let statuses: Vec<&str> = batch.iter().map(|r| r.status).collect();
            let dues: Vec<DateTime<Utc>> = batch.iter().map(|r| r.due).collect();
            let nudges: Vec<i64> = batch.iter().map(|r| r.nudges).collect();
            // A saga nudged meanwhile (a cancellation, an operator retry)
            // stays active and due now, whatever its run concluded.
            let released = sqlx::query(
                "update saga_instances s
                 set status = case when s.nudges = r.nudges then r.status else 'active' end,
                     due_at = case when s.nudges = r.nudges then r.due_at else now() end,
                     lease_owner = null, lease_until = null, updated_at = now()
                 from unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::bigint[])
                   as r(order_id, status, due_at, nudges)
                 where s.order_id = r.order_id and s.lease_owner = $5",
            )
            .bind(&order_ids)
            .bind(&statuses)
            .bind(&dues)
            .bind(&nudges)
            .bind(&self.settings.instance)
            .execute(&self.pool)
            .await;
            if let Err(error) = released {
                tracing::warn!(
                    sagas = batch.len(),
                    %error,
                    "releasing the sagas' leases failed; they expire"
                );
            }
            for release in batch.drain(..) {
                let _ = release.done.send(());
            }
        }
    }

    /// Keeps the lease for another period; an error if it was lost.
    async fn renew(&self, order_id: Uuid) -> anyhow::Result<()> {
        let renewed = sqlx::query(
            "update saga_instances set lease_until = now() + $3 * interval '1 millisecond'
             where order_id = $1 and lease_owner = $2",
        )
        .bind(order_id)
        .bind(&self.settings.instance)
        .bind(self.settings.lease.as_millis() as f64)
        .execute(&self.pool)
        .await
        .context("renewing the lease")?;
        anyhow::ensure!(renewed.rows_affected() == 1, "lost the lease");
        Ok(())
    }

    /// Runs the saga until it must wait or has ended. `adopted`: its
    /// stream as the intake just started it (the first step's start
    /// recorded, the step not called); otherwise it is read.
    /// `leased_at`: when the lease was asked for.
    async fn drive(
        &self,
        order_id: Uuid,
        adopted: Option<record::SagaRecord>,
        leased_at: Instant,
    ) -> anyhow::Result<Next> {
        let (loaded, started) = match adopted {
            Some(loaded) => (loaded, Some((SagaStep::ReserveInventory, 1))),
            None => (record::load(&self.store, order_id).await?, None),
        };
        let mut saga = Saga {
            order_id,
            loaded,
            causation: format!("saga-orchestrator:{}", self.settings.instance),
            started,
        };
        self.drive_loaded(&mut saga, leased_at).await
    }

    async fn drive_loaded(&self, saga: &mut Saga, leased_at: Instant) -> anyhow::Result<Next> {
        let order_id = saga.order_id;
        // Renewed once a third of the lease has gone by, so a step call
        // (bounded by its timeout) always starts with most of the lease
        // left; not before every transition, which would cost a commit
        // each.
        let mut renewed = leased_at;
        loop {
            if renewed.elapsed() >= self.settings.lease / 3 {
                let at = Instant::now();
                self.renew(order_id).await?;
                renewed = at;
            }
            let state = &saga.loaded.state;
            match decide::next(state) {
                Action::Done => {
                    return Ok(Next::Settled(match state.status {
                        SagaStatus::Failed => "failed",
                        _ => "done",
                    }));
                }
                Action::StartCompensation { reason } => {
                    self.record(saga, vec![SagaEvent::CompensationStarted { reason }])
                        .await?;
                }
                Action::Run { step, attempt } => {
                    if let Some(until) = self.client.open_until() {
                        return Ok(Next::At(Utc::now() + to_chrono(until - Instant::now())));
                    }
                    if self.past_deadline(&saga.loaded, step) {
                        let error = format!(
                            "deadline of {} s exceeded after {} attempts{}",
                            self.settings.step_deadline.as_secs(),
                            attempt - 1,
                            state
                                .step(step)
                                .last_error
                                .as_ref()
                                .map_or(String::new(), |e| format!("; last error: {e}"))
                        );
                        let failed = SagaEvent::StepFailed {
                            step,
                            attempt: attempt - 1,
                            error,
                            retryable: false,
                        };
                        self.record(saga, vec![failed]).await?;
                        continue;
                    }
                    // The attempt whose start was recorded for this
                    // executor (by the previous step's success, or by the
                    // intake) counts as attempt `attempt - 1` until called.
                    let attempt = match saga.started.take() {
                        Some(started) if started == (step, attempt - 1) => attempt - 1,
                        _ => {
                            let started = SagaEvent::StepStarted { step, attempt };
                            if !self.record(saga, vec![started]).await? {
                                continue;
                            }
                            attempt
                        }
                    };
                    self.metrics.step_attempts.inc();
                    // Its success starts the next step's first attempt.
                    let then = step
                        .next()
                        .map(|next| (next, saga.loaded.state.step(next).attempts + 1));
                    let outcome = self
                        .client
                        .call(
                            order_id,
                            forward_path(step),
                            None,
                            saga.recording(attempt, then),
                        )
                        .await;
                    let failed = |error: String, retryable: bool| SagaEvent::StepFailed {
                        step,
                        attempt,
                        error,
                        retryable,
                    };
                    match outcome {
                        // The call recorded its success with its effect.
                        Reply::Succeeded { tracking_number } => {
                            let mut events = vec![SagaEvent::StepSucceeded {
                                step,
                                attempt,
                                detail: tracking_number,
                            }];
                            if let Some((next, attempt)) = then {
                                events.push(SagaEvent::StepStarted {
                                    step: next,
                                    attempt,
                                });
                                saga.started = then;
                            }
                            saga.recorded(&events);
                        }
                        Reply::Moved => self.reload(saga).await?,
                        Reply::Refused(reason) => {
                            self.metrics.step_failures.inc();
                            let error = saga::code(reason).to_owned();
                            self.record(saga, vec![failed(error, false)]).await?;
                        }
                        Reply::Rejected { status, detail } => {
                            self.metrics.step_failures.inc();
                            let error = format!("{status}: {detail}");
                            self.record(saga, vec![failed(error, false)]).await?;
                        }
                        Reply::Transient(error) | Reply::Busy(error) => {
                            self.metrics.step_failures.inc();
                            let (retry_at, delay) = self.backoff(attempt);
                            let events = vec![
                                failed(error, true),
                                SagaEvent::RetryScheduled {
                                    step,
                                    attempt: attempt + 1,
                                    compensation: false,
                                    retry_at: retry_at
                                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                                    delay_ms: delay.as_millis() as u64,
                                },
                            ];
                            // Lost to a cancellation meanwhile: decide again.
                            if self.record(saga, events).await? {
                                return Ok(Next::At(retry_at));
                            }
                        }
                    }
                }
                Action::Compensate { step, attempt } => {
                    if attempt > self.settings.compensation_attempts {
                        // The giving up was recorded, the saga's failure not.
                        let failed = SagaEvent::SagaFailed {
                            reason: format!("{} could not be completed", compensation_path(step)),
                        };
                        if self.record(saga, vec![failed]).await? {
                            self.metrics.failed.inc();
                        }
                        continue;
                    }
                    if let Some(until) = self.client.open_until() {
                        return Ok(Next::At(Utc::now() + to_chrono(until - Instant::now())));
                    }
                    let started = SagaEvent::StepCompensationStarted { step, attempt };
                    if !self.record(saga, vec![started]).await? {
                        continue;
                    }
                    self.metrics.step_attempts.inc();
                    let outcome = self
                        .client
                        .call(
                            order_id,
                            compensation_path(step),
                            None,
                            saga.recording(attempt, None),
                        )
                        .await;
                    let (error, busy) = match outcome {
                        Reply::Succeeded { .. } => {
                            saga.recorded(&[SagaEvent::StepCompensated { step, attempt }]);
                            continue;
                        }
                        Reply::Moved => {
                            self.reload(saga).await?;
                            continue;
                        }
                        Reply::Refused(reason) => (saga::code(reason).to_owned(), false),
                        Reply::Rejected { status, detail } => {
                            (format!("{status}: {detail}"), false)
                        }
                        Reply::Transient(error) => (error, false),
                        Reply::Busy(error) => (error, true),
                    };
                    self.metrics.step_failures.inc();
                    if attempt >= self.settings.compensation_attempts && !busy {
                        let events = vec![
                            SagaEvent::StepCompensationFailed {
                                step,
                                attempt,
                                error: error.clone(),
                                retryable: false,
                                busy: false,
                            },
                            SagaEvent::SagaFailed {
                                reason: format!(
                                    "{} failed after {attempt} attempts: {error}",
                                    compensation_path(step)
                                ),
                            },
                        ];
                        if self.record(saga, events).await? {
                            self.metrics.failed.inc();
                        }
                        continue;
                    }
                    let (retry_at, delay) = self.backoff(attempt);
                    let events = vec![
                        SagaEvent::StepCompensationFailed {
                            step,
                            attempt,
                            error,
                            retryable: true,
                            busy,
                        },
                        SagaEvent::RetryScheduled {
                            step,
                            // A busy attempt is tried again as it was.
                            attempt: if busy { attempt } else { attempt + 1 },
                            compensation: true,
                            retry_at: retry_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                            delay_ms: delay.as_millis() as u64,
                        },
                    ];
                    if self.record(saga, events).await? {
                        return Ok(Next::At(retry_at));
                    }
                }
                Action::Confirm => {
                    let confirm = self
                        .client
                        .call(order_id, "confirm", None, saga.recording(1, None))
                        .await;
                    match confirm {
                        // The call recorded the saga's completion.
                        Reply::Succeeded { tracking_number } => {
                            saga.recorded(&[SagaEvent::SagaCompleted { tracking_number }]);
                            self.metrics.completed.inc();
                        }
                        Reply::Moved => self.reload(saga).await?,
                        // A cancellation on its way (the order refuses to be
                        // confirmed once one was requested), or the service
                        // is away: look again shortly.
                        _ => return Ok(Next::At(self.backoff(1).0)),
                    }
                }
                Action::FinishCompensation { ending } => {
                    // The call records the saga's end with the order's
                    // rejection or cancellation, in one append.
                    let (path, body, reason) = match ending {
                        Ending::Cancel => ("mark-cancelled", None, saga::CANCELLED.to_owned()),
                        Ending::Reject(reason) => (
                            "reject",
                            Some(json!({ "reason": saga::code(reason) })),
                            state
                                .failure_reason
                                .clone()
                                .unwrap_or_else(|| saga::code(reason).to_owned()),
                        ),
                    };
                    let finished = self
                        .client
                        .call(order_id, path, body, saga.recording(1, None))
                        .await;
                    match finished {
                        Reply::Succeeded { .. } => {
                            saga.recorded(&[SagaEvent::SagaCompensated { reason }]);
                            self.metrics.compensated.inc();
                        }
                        Reply::Moved => self.reload(saga).await?,
                        _ => return Ok(Next::At(self.backoff(1).0)),
                    }
                }
            }
        }
    }

    /// Appends `events` to the saga's stream, if it is still at the
    /// version its state was read at, and evolves the state by them. False
    /// when another writer got there first (a cancellation, an operator
    /// retry, a step call that succeeded after all): the saga is then read
    /// again.
    async fn record(&self, saga: &mut Saga, events: Vec<SagaEvent>) -> anyhow::Result<bool> {
        let appended = record::append(
            &self.store,
            saga.order_id,
            saga.loaded.version,
            &events,
            &saga.causation,
        )
        .await?;
        if appended {
            let now = Utc::now();
            for event in &events {
                saga.loaded.apply(event, now);
            }
            saga.loaded.version += events.len() as u64;
        } else {
            self.reload(saga).await?;
        }
        Ok(appended)
    }

    /// Reads the saga's stream again: it moved under this executor.
    async fn reload(&self, saga: &mut Saga) -> anyhow::Result<()> {
        saga.loaded = record::load(&self.store, saga.order_id).await?;
        // What it now says decides; a start recorded by a call is an
        // interrupted attempt like any other.
        saga.started = None;
        Ok(())
    }

    fn past_deadline(&self, loaded: &record::SagaRecord, step: SagaStep) -> bool {
        loaded.first_started[step as usize]
            .is_some_and(|first| Utc::now() - first > to_chrono(self.settings.step_deadline))
    }

    /// When to try again after `attempt` failed: exponential, capped, with
    /// full jitter in [delay/2, delay].
    fn backoff(&self, attempt: u32) -> (DateTime<Utc>, Duration) {
        let delay = Backoff::new(self.settings.retry_base, self.settings.retry_max)
            .with_jitter(Jitter::Half)
            .delay(attempt);
        (Utc::now() + to_chrono(delay), delay)
    }
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::zero())
}

/// The step API path that carries a step out.
pub fn forward_path(step: SagaStep) -> &'static str {
    match step {
        SagaStep::ReserveInventory => "reserve-inventory",
        SagaStep::ChargePayment => "charge-payment",
        SagaStep::CreateShipment => "create-shipment",
    }
}

/// The step API path that undoes a step.
pub fn compensation_path(step: SagaStep) -> &'static str {
    match step {
        SagaStep::ReserveInventory => "release-inventory",
        SagaStep::ChargePayment => "refund-payment",
        SagaStep::CreateShipment => "cancel-shipment",
    }
}
