//! The projector's metrics, per projection where it matters.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::views::Projection;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionLabel {
    pub projection: &'static str,
}

/// Why a message's event was not applied (`event_store::Forgery::kind`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForgeryLabel {
    pub reason: &'static str,
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub events_applied: Family<ProjectionLabel, Counter>,
    pub lag_events: Family<ProjectionLabel, Gauge>,
    pub lag_seconds: Family<ProjectionLabel, Gauge<f64, AtomicU64>>,
    pub dead_letters: Counter,
    pub forged_events: Family<ForgeryLabel, Counter>,
    pub rebuilds: Family<ProjectionLabel, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "projector_events_applied",
            "Events applied to a read model (redeliveries not counted)",
            metrics.events_applied.clone(),
        );
        registry.register(
            "projector_lag_events",
            "Events in the store after the projection's position",
            metrics.lag_events.clone(),
        );
        registry.register(
            "projector_lag_seconds",
            "Age of the oldest event the projection has not applied",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "projector_dead_letters",
            "Messages that could not be applied and went to the dead-letter table",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "projector_forged_events",
            "Events of messages that the event store does not bear out (an id it does not hold, \
             or other content under a stored id), ignored; a redelivered one counts again",
            metrics.forged_events.clone(),
        );
        registry.register(
            "projector_rebuilds",
            "Rebuilds that swapped a new read model in",
            metrics.rebuilds.clone(),
        );
        metrics
    }

    pub fn applied(&self, projection: Projection, events: u64) {
        self.events_applied
            .get_or_create(&label(projection))
            .inc_by(events);
    }

    pub fn forged(&self, reason: &'static str) {
        self.forged_events
            .get_or_create(&ForgeryLabel { reason })
            .inc();
    }
}

pub fn label(projection: Projection) -> ProjectionLabel {
    ProjectionLabel {
        projection: projection.name(),
    }
}
