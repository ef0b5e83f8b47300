//! `GET /v1/streams/{stream_id}/events?from_version=&limit=`.

use axum::extract::State;
use axum::http::StatusCode;
use event_store::RecordedEvent;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::http::{ApiResult, PathParam, Problem, QueryParams};

const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub from_version: Option<u64>,
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct EventsView {
    pub events: Vec<RecordedEvent>,
}

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
    let events = app
        .store
        .read_stream(&stream_id, from_version, limit)
        .await?;
    if events.is_empty() && app.store.stream_version(&stream_id).await? == 0 {
        return Err(Problem::not_found(format!("no stream {stream_id}")).into());
    }
    Ok(axum::Json(EventsView { events }))
}
