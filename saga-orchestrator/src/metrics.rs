//! The orchestrator's metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use domain::saga::SagaAction;

/// Why a message's event was not acted on (`event_store::Forgery::kind`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForgeryLabel {
    pub reason: &'static str,
}

/// Which call to the step API: the step and whether it was run or undone.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: &'static str,
    pub direction: &'static str,
}

impl StepLabel {
    /// The label of `action`, if it runs or undoes a step.
    pub fn of(action: &SagaAction) -> Option<Self> {
        match action {
            SagaAction::Run(step) => Some(Self {
                step: step.spec().name,
                direction: "run",
            }),
            SagaAction::Undo(step) => Some(Self {
                step: step.spec().name,
                direction: "undo",
            }),
            SagaAction::Confirm | SagaAction::Reject(_) | SagaAction::MarkCancelled => None,
        }
    }
}

/// How the sagas of every instance stand (`saga_instances.status`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StandingLabel {
    pub standing: &'static str,
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub started: Counter,
    pub completed: Counter,
    pub compensated: Counter,
    pub failed: Counter,
    pub step_attempts: Family<StepLabel, Counter>,
    pub step_failures: Family<StepLabel, Counter>,
    pub running: Gauge,
    pub by_standing: Family<StandingLabel, Gauge>,
    pub forged_events: Family<ForgeryLabel, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry, breaker_open: Gauge) -> Self {
        let metrics = Self::default();
        for (name, help, counter) in [
            ("sagas_started", "Sagas started", &metrics.started),
            (
                "sagas_completed",
                "Sagas that confirmed their order",
                &metrics.completed,
            ),
            (
                "sagas_compensated",
                "Sagas that undid their steps and rejected or cancelled their order",
                &metrics.compensated,
            ),
            (
                "sagas_failed",
                "Sagas whose compensation could not be completed (an operator must act)",
                &metrics.failed,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "saga_step_attempts",
            "Calls that run or undo a step, by step and direction",
            metrics.step_attempts.clone(),
        );
        registry.register(
            "saga_step_failures",
            "Calls that run or undo a step and failed, business refusals included",
            metrics.step_failures.clone(),
        );
        registry.register(
            "sagas",
            "Sagas of every instance by standing (active: work left; done: completed or \
             compensated; failed: an operator must act), counted every SAGA_COUNT_INTERVAL_MS",
            metrics.by_standing.clone(),
        );
        registry.register(
            "sagas_running",
            "Sagas this instance is executing right now",
            metrics.running.clone(),
        );
        registry.register(
            "saga_intake_forged_events",
            "Order events of messages that the event store does not bear out (an id it does \
             not hold, or other content under a stored id), ignored; a redelivered one counts again",
            metrics.forged_events.clone(),
        );
        registry.register(
            "saga_circuit_breaker_open",
            "1 while calls to the command-service are suspended",
            breaker_open,
        );
        metrics
    }

    /// Counts the sagas by standing every `every` until `shutdown`; a
    /// failed count is logged and tried again at the next turn.
    pub async fn count_sagas(
        self,
        pool: sqlx::PgPool,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match crate::instances::count_by_standing(&pool).await {
                Ok(counts) => {
                    for (standing, count) in counts {
                        self.by_standing
                            .get_or_create(&StandingLabel {
                                standing: standing.as_str(),
                            })
                            .set(count);
                    }
                }
                Err(error) => tracing::warn!(error = format!("{error:#}"), "counting sagas failed"),
            }
        }
    }

    pub fn forged(&self, reason: &'static str) {
        self.forged_events
            .get_or_create(&ForgeryLabel { reason })
            .inc();
    }
}
