//! What `GET /v1/projections` shows and the lag metrics report.

use anyhow::Context;
use chrono::Utc;
use event_store::EventStore;
use serde::Serialize;
use service_kit::progress::{Progress, Watchdog};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, label};
use crate::rebuild::REBUILD_LOCK_CLASS;
use crate::views::Projection;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProjectionStatus {
    pub name: &'static str,
    /// `live`; `rebuilding` while a rebuild runs (the current table keeps
    /// serving meanwhile); `stalled` while it is behind the event store
    /// and has made no progress for `STALL_AFTER_MS`.
    pub status: &'static str,
    /// The highest global position applied.
    pub position: i64,
    /// Events of this projection's streams in the store after `position`.
    pub lag_events: i64,
    /// Age of the oldest of them, 0 when there are none.
    pub lag_seconds: f64,
    /// Events applied to the current read model.
    pub events_applied: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<RebuildProgress>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RebuildProgress {
    pub events_read: i64,
    pub events_total: i64,
}

/// Every projection's status.
pub async fn statuses(pool: &PgPool, store: &EventStore) -> anyhow::Result<Vec<ProjectionStatus>> {
    let mut all = Vec::with_capacity(Projection::ALL.len());
    for projection in Projection::ALL {
        all.push(status(pool, store, projection).await?);
    }
    Ok(all)
}

pub async fn status(
    pool: &PgPool,
    store: &EventStore,
    projection: Projection,
) -> anyhow::Result<ProjectionStatus> {
    let (position, events_applied, read, total, rebuilding): (
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        bool,
    ) = sqlx::query_as(
        // pg_locks lists the whole cluster's locks: a rebuild in another
        // database sharing the server holds the same key there.
        "select position, events_applied, rebuild_read, rebuild_total,
                exists(select 1 from pg_locks
                       where locktype = 'advisory' and granted
                         and database = (select oid from pg_database where datname = current_database())
                         and classid::bigint = $2 and objid::bigint = $3 and objsubid = 2)
         from projections where name = $1",
    )
    .bind(projection.name())
    .bind(i64::from(REBUILD_LOCK_CLASS))
    .bind(i64::from(projection.lock_id()))
    .fetch_one(pool)
    .await
    .context("reading the projection's status")?;
    // Lag counts events of this projection's streams after its position:
    // positions are handed out in append order, which may differ from
    // commit order by a few events, so this is a close estimate.
    let (lag_events, oldest) = store
        .category_after(projection.stream_prefix(), position)
        .await
        .context("measuring the projection's lag")?;
    let lag_seconds = oldest.map_or(0.0, |at| {
        ((Utc::now() - at).num_milliseconds() as f64 / 1000.0).max(0.0)
    });
    Ok(ProjectionStatus {
        name: projection.name(),
        status: if rebuilding { "rebuilding" } else { "live" },
        position,
        lag_events: lag_events as i64,
        lag_seconds,
        events_applied,
        rebuild: rebuilding.then_some(RebuildProgress {
            events_read: read.unwrap_or(0),
            events_total: total.unwrap_or(0),
        }),
    })
}

/// The watchdog's name for a projection's progress.
pub fn worker_name(projection: Projection) -> String {
    format!("projection:{}", projection.name())
}

/// Marks the projections the watchdog finds stalled.
pub fn mark_stalled(all: &mut [ProjectionStatus], watchdog: &Watchdog) {
    for status in all {
        let projection = Projection::parse(status.name).expect("a known projection");
        if watchdog
            .worker(&worker_name(projection))
            .is_some_and(|worker| worker.is_stalled())
        {
            status.status = "stalled";
        }
    }
}

/// Every second until `shutdown`: refreshes the lag gauges, and tells the
/// watchdog how far behind each projection is and whether its position
/// moved, measured in PostgreSQL (not through the broker, which may be
/// what is stuck).
pub async fn report_lag(
    pool: PgPool,
    store: EventStore,
    metrics: Metrics,
    watchdog: Watchdog,
    topic: String,
    shutdown: CancellationToken,
) {
    let workers: Vec<Progress> = Projection::ALL
        .iter()
        .map(|&projection| watchdog.watch(worker_name(projection)))
        .collect();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(service_kit::progress::CHECK_EVERY) => {}
        }
        match statuses(&pool, &store).await {
            Ok(all) => {
                for (status, worker) in all.into_iter().zip(&workers) {
                    let projection = Projection::parse(status.name).expect("a known projection");
                    worker.observe(
                        status.lag_events.max(0) as u64,
                        Some(status.position),
                        format!(
                            "events of {}* streams after position {} from Kafka topic {topic} \
                             ({} in the store, the oldest {:.0} s old)",
                            projection.stream_prefix(),
                            status.position,
                            status.lag_events,
                            status.lag_seconds,
                        ),
                    );
                    metrics
                        .lag_events
                        .get_or_create(&label(projection))
                        .set(status.lag_events);
                    metrics
                        .lag_seconds
                        .get_or_create(&label(projection))
                        .set(status.lag_seconds);
                }
            }
            Err(error) => tracing::debug!(error = format!("{error:#}"), "measuring lag failed"),
        }
    }
}
