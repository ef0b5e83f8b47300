//! `GET /v1/orders/{id}/trace`: one order's causal trace, read from the
//! event store.

use axum::extract::State;
use domain::stream;
use event_store::RecordedEvent;
use serde::Serialize;
use uuid::Uuid;

use crate::AppState;
use crate::http::{ApiResult, OrProblem, PathParam, Problem};

/// The most events one trace shows; an order causes a few dozen.
const MOST: u32 = 10_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TraceView {
    pub order_id: Uuid,
    /// The order's events and every event they caused, in global order.
    pub events: Vec<TracedEvent>,
    /// Whether the trace was cut at its first 10,000 events.
    pub truncated: bool,
}

/// An event of the trace: as the stream endpoint shows it, with what
/// caused it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TracedEvent {
    /// The event that caused this one (for the order's own events, the
    /// command that appended them).
    pub causation_id: String,
    pub correlation_id: String,
    #[serde(flatten)]
    #[schema(value_type = crate::routes::streams::StoredEvent)]
    pub event: RecordedEvent,
}

/// An order's causal trace: its `OrderPlaced` and the order's other events,
/// and every event they caused, directly or through others, in every stream
/// (products, customer, shipment, saga), in global order. The chain follows
/// each event's `causation_id` only, so a client's correlation id can
/// neither add events to another order's trace nor hide any.
#[utoipa::path(get, path = "/v1/orders/{id}/trace", tag = "orders",
    params(("id" = Uuid, Path, description = "the order's id")),
    responses((status = 200, body = TraceView), (status = 404, description = "no such order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn trace(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
) -> ApiResult<axum::Json<TraceView>> {
    let events = app
        .store
        .trace(&stream::order(order_id), MOST + 1)
        .await
        .or_problem()?;
    if events.is_empty() {
        return Err(Problem::not_found(format!("no order {order_id}")).into());
    }
    let truncated = events.len() > MOST as usize;
    let events = events
        .into_iter()
        .take(MOST as usize)
        .map(|event| {
            let text = |field: &str| event.metadata[field].as_str().unwrap_or("").to_owned();
            TracedEvent {
                causation_id: text("causation_id"),
                correlation_id: text("correlation_id"),
                event,
            }
        })
        .collect();
    Ok(axum::Json(TraceView {
        order_id,
        events,
        truncated,
    }))
}
