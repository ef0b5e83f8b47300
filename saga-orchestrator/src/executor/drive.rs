//! Driving one saga: decide what is next from its state (`decide`), make
//! the call or the append it needs, learn what that leads to
//! (`interpret`), and go on until the saga must wait or has settled.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::saga::{Ending, SagaAction, SagaEvent, SagaStep};
use service_kit::backoff::{Backoff, Jitter};
use tracing::{Instrument, Span};
use uuid::Uuid;

use super::interpret::{self, Flow, Outcome, Retry};
use super::{Executor, to_chrono};
use crate::client::Recorded;
use crate::decide::{self, Action};
use crate::{instances, record};

/// A saga being driven: its state as recorded.
pub(super) struct Saga {
    order_id: Uuid,
    loaded: record::SagaRecord,
    /// What caused the executor's appends when no event of the saga is
    /// known (its instance).
    causation: String,
    /// The last event a successful step call recorded in the saga's
    /// stream (from its answer), until taken in.
    called_recorded: Option<Uuid>,
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

    /// Takes in `events`, appended at the version its state was read at.
    fn take_in(&mut self, events: &[SagaEvent]) {
        let now = Utc::now();
        for event in events {
            self.loaded.apply(event, now);
        }
        self.loaded.version += events.len() as u64;
    }
}

impl Executor {
    /// Runs the saga until it must wait or has settled. `adopted`: its
    /// stream as the intake just started it (the first step's start
    /// recorded, the step not called); otherwise it is read.
    /// `leased_at`: when the lease was asked for.
    ///
    /// In a span of its own, linked to the span that recorded the saga's
    /// last event (its start: the intake's, itself linked to the
    /// placement's), whose step calls are its children.
    pub(super) async fn drive(
        &self,
        order_id: Uuid,
        adopted: Option<record::SagaRecord>,
        leased_at: Instant,
    ) -> anyhow::Result<Flow> {
        let span = tracing::info_span!("saga", otel.name = "drive saga", %order_id);
        self.drive_in(&span, order_id, adopted, leased_at)
            .instrument(span.clone())
            .await
    }

    /// [`Executor::drive`] in its span.
    async fn drive_in(
        &self,
        span: &Span,
        order_id: Uuid,
        adopted: Option<record::SagaRecord>,
        leased_at: Instant,
    ) -> anyhow::Result<Flow> {
        let (loaded, started) = match adopted {
            Some(loaded) => (loaded, Some((SagaStep::FIRST, 1))),
            None => (record::load(&self.store, order_id).await?, None),
        };
        if let Some(traceparent) = &loaded.traceparent {
            service_kit::telemetry::link(span, traceparent);
        }
        let mut saga = Saga {
            order_id,
            loaded,
            causation: format!("saga-orchestrator:{}", self.settings.instance),
            called_recorded: None,
            started,
        };
        let steps = async {
            loop {
                match self.next(&mut saga).await? {
                    Flow::Continue => {}
                    flow => return anyhow::Ok(flow),
                }
            }
        };
        // The lease is kept for as long as the saga is driven, a step call
        // that outlasts it included; once it is lost, driving stops where
        // it is (whatever it was doing is read from the stream by the next
        // owner).
        tokio::select! {
            biased;
            flow = steps => flow,
            lost = self.keep_lease(order_id, leased_at) => Err(lost),
        }
    }

    /// Renews the lease on the saga whenever a third of it has gone by
    /// (not before every transition, which would cost a commit each), until
    /// it is lost: the answer is why.
    async fn keep_lease(&self, order_id: Uuid, leased_at: Instant) -> anyhow::Error {
        let settings = &self.settings;
        let mut renewed = leased_at;
        loop {
            tokio::time::sleep_until((renewed + settings.lease / 3).into()).await;
            let at = Instant::now();
            let kept =
                instances::renew(&self.pool, order_id, &settings.instance, settings.lease).await;
            if let Err(lost) = kept {
                return lost;
            }
            renewed = at;
        }
    }

    /// Does what the saga's state says is next.
    async fn next(&self, saga: &mut Saga) -> anyhow::Result<Flow> {
        let state = &saga.loaded.state;
        match decide::next(state) {
            Action::Done => Ok(interpret::settled(state.status)),
            Action::StartCompensation { reason } => {
                let started = SagaEvent::CompensationStarted { reason };
                self.apply(saga, Outcome::Append(vec![started], Flow::Continue))
                    .await
            }
            Action::Run { step, attempt } => self.run_step(saga, step, attempt).await,
            Action::Compensate { step, attempt } => self.undo_step(saga, step, attempt).await,
            Action::Confirm => self.confirm(saga).await,
            Action::FinishCompensation { ending } => self.finish(saga, ending).await,
        }
    }

    /// Calls `step`'s attempt `attempt`, unless its breaker is open or the
    /// step is past its deadline.
    async fn run_step(
        &self,
        saga: &mut Saga,
        step: SagaStep,
        attempt: u32,
    ) -> anyhow::Result<Flow> {
        if let Some(until) = self.breaker_open() {
            return Ok(Flow::WaitUntil(until));
        }
        if self.past_deadline(&saga.loaded, step) {
            let last_error = saga.loaded.state.step(step).last_error.as_deref();
            let failed = interpret::past_deadline(
                step,
                attempt - 1,
                self.settings.step_deadline,
                last_error,
            );
            return self
                .apply(saga, Outcome::Append(vec![failed], Flow::Continue))
                .await;
        }
        // The attempt whose start was recorded for this executor (by the
        // previous step's success, or by the intake) counts as attempt
        // `attempt - 1` until called.
        let attempt = match saga.started.take() {
            Some(started) if started == (step, attempt - 1) => attempt - 1,
            _ => {
                let started = SagaEvent::StepStarted { step, attempt };
                if !self.record(saga, vec![started]).await? {
                    return Ok(Flow::Continue);
                }
                attempt
            }
        };
        // Its success starts the next step's first attempt.
        let then = step
            .next()
            .map(|next| (next, saga.loaded.state.step(next).attempts + 1));
        let recording = saga.recording(attempt, then);
        let reply = self.call(saga, SagaAction::Run(step), recording).await;
        let outcome = interpret::after_run(step, attempt, then, reply, self.retry(attempt));
        if matches!(outcome, Outcome::Recorded(_)) {
            saga.started = then;
        }
        self.apply(saga, outcome).await
    }

    /// Calls the undoing of `step`, attempt `attempt`, unless its attempts
    /// are used up (the saga fails) or the breaker is open.
    async fn undo_step(
        &self,
        saga: &mut Saga,
        step: SagaStep,
        attempt: u32,
    ) -> anyhow::Result<Flow> {
        let most = self.settings.compensation_attempts;
        if attempt > most {
            // The giving up was recorded, the saga's failure not.
            let failed = interpret::compensation_given_up(step);
            return self
                .apply(saga, Outcome::Append(vec![failed], Flow::Continue))
                .await;
        }
        if let Some(until) = self.breaker_open() {
            return Ok(Flow::WaitUntil(until));
        }
        let started = SagaEvent::StepCompensationStarted { step, attempt };
        if !self.record(saga, vec![started]).await? {
            return Ok(Flow::Continue);
        }
        let recording = saga.recording(attempt, None);
        let reply = self.call(saga, SagaAction::Undo(step), recording).await;
        let outcome = interpret::after_undo(step, attempt, most, reply, self.retry(attempt));
        self.apply(saga, outcome).await
    }

    /// Confirms the order: the call records the saga's completion.
    async fn confirm(&self, saga: &mut Saga) -> anyhow::Result<Flow> {
        let recording = saga.recording(1, None);
        let reply = self.call(saga, SagaAction::Confirm, recording).await;
        let outcome = interpret::after_confirm(reply, self.retry(1).at);
        self.apply(saga, outcome).await
    }

    /// Ends the compensation: the call records the saga's end with the
    /// order's rejection or cancellation, in one append.
    async fn finish(&self, saga: &mut Saga, ending: Ending) -> anyhow::Result<Flow> {
        let failure_reason = saga.loaded.state.failure_reason.as_deref();
        let (action, reason) = interpret::finishing(ending, failure_reason);
        let recording = saga.recording(1, None);
        let reply = self.call(saga, action, recording).await;
        let outcome = interpret::after_finish(reason, reply, self.retry(1).at);
        self.apply(saga, outcome).await
    }

    /// Calls the step API for `action`, counting the attempt and, if it
    /// failed, the failure.
    async fn call(
        &self,
        saga: &mut Saga,
        action: SagaAction,
        recorded: Recorded,
    ) -> crate::client::Reply {
        let step = crate::metrics::StepLabel::of(&action);
        if let Some(step) = &step {
            self.metrics.step_attempts.get_or_create(step).inc();
        }
        let reply = self
            .client
            .call(
                saga.order_id,
                action,
                recorded,
                saga.loaded.correlation_id.as_deref(),
            )
            .await;
        if let crate::client::Reply::Succeeded { recorded, .. } = &reply {
            saga.called_recorded = *recorded;
        }
        if let Some(step) = step.filter(|_| reply.is_failure()) {
            self.metrics.step_failures.get_or_create(&step).inc();
        }
        reply
    }

    /// Makes `outcome` so in the saga's stream and in its state; counts the
    /// sagas it ends.
    async fn apply(&self, saga: &mut Saga, outcome: Outcome) -> anyhow::Result<Flow> {
        let (events, flow) = match outcome {
            Outcome::Recorded(events) => {
                saga.take_in(&events);
                if let Some(last) = saga.called_recorded.take() {
                    saga.loaded.last_event_id = Some(last);
                }
                (events, Flow::Continue)
            }
            Outcome::Append(events, then) => {
                if !self.record(saga, events.clone()).await? {
                    return Ok(Flow::Continue);
                }
                (events, then)
            }
            Outcome::Reload => {
                self.reload(saga).await?;
                return Ok(Flow::Continue);
            }
            Outcome::Then(flow) => return Ok(flow),
        };
        for event in &events {
            match event {
                SagaEvent::SagaCompleted { .. } => self.metrics.completed.inc(),
                SagaEvent::SagaCompensated { .. } => self.metrics.compensated.inc(),
                SagaEvent::SagaFailed { .. } => self.metrics.failed.inc(),
                _ => 0,
            };
        }
        Ok(flow)
    }

    /// Appends `events` to the saga's stream, if it is still at the
    /// version its state was read at, and evolves the state by them. False
    /// when another writer got there first (a cancellation, an operator
    /// retry, a step call that succeeded after all): the saga is then read
    /// again.
    async fn record(&self, saga: &mut Saga, events: Vec<SagaEvent>) -> anyhow::Result<bool> {
        let cause = record::Cause::next_in(&saga.loaded, saga.order_id, &saga.causation);
        let appended = record::append(
            &self.store,
            saga.order_id,
            saga.loaded.version,
            &events,
            &cause,
        )
        .await?;
        let Some(last) = appended else {
            self.reload(saga).await?;
            return Ok(false);
        };
        saga.take_in(&events);
        saga.loaded.last_event_id = Some(last);
        Ok(true)
    }

    /// Reads the saga's stream again: it moved under this executor.
    async fn reload(&self, saga: &mut Saga) -> anyhow::Result<()> {
        saga.loaded = record::load(&self.store, saga.order_id).await?;
        // What it now says decides; a start recorded by a call is an
        // interrupted attempt like any other.
        saga.started = None;
        Ok(())
    }

    /// When the breaker is open: when it lets calls through again.
    fn breaker_open(&self) -> Option<DateTime<Utc>> {
        let until = self.client.open_until()?;
        Some(Utc::now() + to_chrono(until - Instant::now()))
    }

    fn past_deadline(&self, loaded: &record::SagaRecord, step: SagaStep) -> bool {
        loaded.first_started[step]
            .is_some_and(|first| Utc::now() - first > to_chrono(self.settings.step_deadline))
    }

    /// When to try again after `attempt` failed: exponential, capped, with
    /// jitter in [delay/2, delay].
    fn retry(&self, attempt: u32) -> Retry {
        let delay: Duration = Backoff::new(self.settings.retry_base, self.settings.retry_max)
            .with_jitter(Jitter::Half)
            .delay(attempt);
        Retry {
            at: Utc::now() + to_chrono(delay),
            delay,
        }
    }
}
