//! The operator API: `POST /v1/sagas/{order_id}/retry` resumes a failed
//! saga from where it stopped; `POST /v1/sagas/retry` does so for every
//! failed saga a filter selects, as a job (`bulk`), whose progress
//! `GET /v1/sagas/retry/{job_id}` reports.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use event_store::EventStore;
use service_kit::auth::{Access, Authenticator, Caller, RouteTable};
use service_kit::http::{PathParam, Problem};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::record::Retried;
use crate::{bulk, instances, record};

#[derive(Clone)]
pub struct ApiState {
    pub store: EventStore,
    pub pool: PgPool,
    pub wake: Arc<Notify>,
    pub jobs: bulk::Jobs,
}

/// The operator API's routes, each with who may call it, and their
/// document with its page (public).
pub fn routes() -> RouteTable<ApiState> {
    RouteTable::new()
        .merge(service_kit::openapi::routes(crate::openapi::document))
        .post("/v1/sagas/{order_id}/retry", Access::OPERATE, retry)
        .post("/v1/sagas/retry", Access::OPERATE, bulk::start)
        .get("/v1/sagas/retry/{job_id}", Access::READ, bulk::status)
}

/// [`routes`] and `extra` (the operational endpoints) behind their rules.
pub fn router(state: ApiState, auth: Authenticator, extra: RouteTable<ApiState>) -> Router {
    routes()
        .merge(extra)
        .build(auth)
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .with_state(state)
}

/// What a retry answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RetryAccepted {
    pub order_id: Uuid,
    /// `compensating`: the saga resumes where it stopped.
    pub status: String,
}

/// Resumes a failed saga from where it stopped.
#[utoipa::path(post, path = "/v1/sagas/{order_id}/retry", tag = "sagas",
    params(("order_id" = Uuid, Path, description = "the order the saga fulfils")),
    responses(
        (status = 202, description = "the retry is recorded (with who asked) and the saga is due", body = RetryAccepted),
        (status = 404, description = "`/problems/not-found`: no saga for this order", body = service_kit::http::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`/problems/conflict`: the saga is not failed", body = service_kit::http::ProblemBody, content_type = "application/problem+json")))]
pub async fn retry(
    State(state): State<ApiState>,
    caller: Caller,
    PathParam(order_id): PathParam<Uuid>,
) -> Response {
    match resume(&state, order_id, &caller.subject).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%order_id, error = format!("{error:#}"), "retry failed");
            Problem::internal().into_response()
        }
    }
}

/// Records the retry (with who asked) and makes the saga due.
async fn resume(state: &ApiState, order_id: Uuid, actor: &str) -> anyhow::Result<Response> {
    match record::retry(&state.store, order_id, actor, None).await? {
        Retried::Recorded => {}
        Retried::NoSaga => {
            return Ok(Problem::not_found(format!("no saga for order {order_id}")).into_response());
        }
        Retried::NotFailed(status) => {
            return Ok(Problem::conflict(format!(
                "the saga is {}; only a failed saga can be retried",
                status.as_str()
            ))
            .into_response());
        }
    }
    instances::make_due(&state.pool, &[order_id]).await?;
    state.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(RetryAccepted {
            order_id,
            status: "compensating".into(),
        }),
    )
        .into_response())
}
