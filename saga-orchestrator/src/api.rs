//! The operator API: `POST /v1/sagas/{order_id}/retry` resumes a failed
//! saga from where it stopped.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::saga::{SagaEvent, SagaStatus};
use event_store::EventStore;
use serde_json::json;
use service_kit::auth::{Access, Authenticator, Caller, RouteTable};
use service_kit::backoff::Backoff;
use service_kit::http::{PathParam, Problem};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{instances, record};

#[derive(Clone)]
pub struct ApiState {
    pub store: EventStore,
    pub pool: PgPool,
    pub wake: Arc<Notify>,
}

/// The operator API's routes, each with who may call it.
pub fn routes() -> RouteTable<ApiState> {
    RouteTable::new().post("/v1/sagas/{order_id}/retry", Access::OPERATE, retry)
}

/// [`routes`] and `extra` (the operational endpoints) behind their rules.
pub fn router(state: ApiState, auth: Authenticator, extra: RouteTable<ApiState>) -> Router {
    routes()
        .merge(extra)
        .build(auth)
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .with_state(state)
}

async fn retry(
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
    for attempt in 1.. {
        if attempt > 1 {
            Backoff::CONTENTION.sleep(attempt - 1).await;
        }
        let loaded = record::load(&state.store, order_id).await?;
        if !loaded.state.exists {
            return Ok(Problem::not_found(format!("no saga for order {order_id}")).into_response());
        }
        if loaded.state.status != SagaStatus::Failed {
            return Ok(Problem::conflict(format!(
                "the saga is {}; only a failed saga can be retried",
                loaded.state.status.as_str()
            ))
            .into_response());
        }
        let retried = [SagaEvent::SagaRetryRequested {}];
        // An operator's command, in the saga's chain: caused by the saga's
        // last event, which the retry acts on.
        let cause = record::Cause::next_in(&loaded, order_id, "operator");
        if record::append_by(
            &state.store,
            order_id,
            loaded.version,
            &retried,
            &cause,
            Some(actor),
        )
        .await?
        .is_some()
        {
            break;
        }
    }
    instances::make_due(&state.pool, &[order_id]).await?;
    state.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "order_id": order_id, "status": "compensating" })),
    )
        .into_response())
}
