//! The orchestrator's metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a message's event was not acted on (`event_store::Forgery::kind`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForgeryLabel {
    pub reason: &'static str,
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub started: Counter,
    pub completed: Counter,
    pub compensated: Counter,
    pub failed: Counter,
    pub step_attempts: Counter,
    pub step_failures: Counter,
    pub running: Gauge,
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
            (
                "saga_step_attempts",
                "Attempts at steps and compensations",
                &metrics.step_attempts,
            ),
            (
                "saga_step_failures",
                "Attempts that failed, business refusals included",
                &metrics.step_failures,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
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

    pub fn forged(&self, reason: &'static str) {
        self.forged_events
            .get_or_create(&ForgeryLabel { reason })
            .inc();
    }
}
