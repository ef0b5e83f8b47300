//! `GET /v1/streams/{stream_id}/events?from_version=&limit=`.

use axum::extract::State;
use axum::http::StatusCode;
use event_store::RecordedEvent;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::http::{ApiResult, OrProblem, PathParam, Problem, QueryParams};

const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The first version to return (default 1); versions are PostgreSQL
    /// `bigint`s.
    #[param(maximum = 9_223_372_036_854_775_807_u64)]
    pub from_version: Option<u64>,
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventsView {
    #[schema(value_type = Vec<StoredEvent>)]
    pub events: Vec<RecordedEvent>,
}

/// A stored event as the API shows it (the event store's `RecordedEvent`,
/// the wire format, which carries no schema of its own): described here
/// for the document only.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StoredEvent {
    pub event_id: uuid::Uuid,
    pub stream_id: String,
    /// Its place in its stream, from 1.
    pub version: u64,
    /// Its place in the store's global order.
    pub position: i64,
    /// The event's type name (`OrderPlaced`).
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: i32,
    /// The event's own fields.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// At least `correlation_id` and `causation_id`, and who wrote it as
    /// `actor`.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// A stream's events in version order.
#[utoipa::path(get, path = "/v1/streams/{stream_id}/events", tag = "streams",
    params(("stream_id" = String, Path, description = "for example order-<uuid>"), EventsQuery),
    responses((status = 200, body = EventsView), (status = 400, description = "bad query", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "no such stream", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn events(
    State(app): State<AppState>,
    PathParam(stream_id): PathParam<String>,
    QueryParams(query): QueryParams<EventsQuery>,
) -> ApiResult<axum::Json<EventsView>> {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Problem::validation(
            StatusCode::BAD_REQUEST,
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )
        .into());
    }
    let from_version = query.from_version.unwrap_or(1).max(1);
    if from_version > i64::MAX as u64 {
        return Err(Problem::validation(
            StatusCode::BAD_REQUEST,
            "from_version",
            format!("must be a version, at most {}", i64::MAX),
        )
        .into());
    }
    let events = app
        .store
        .read_stream(&stream_id, from_version, limit)
        .await
        .or_problem()?;
    if events.is_empty() && app.store.stream_version(&stream_id).await.or_problem()? == 0 {
        return Err(Problem::not_found(format!("no stream {stream_id}")).into());
    }
    Ok(axum::Json(EventsView { events }))
}
