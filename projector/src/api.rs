//! The projector's operator API: `GET /v1/projections` and
//! `POST /v1/projections/{name}/rebuild`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use event_store::EventStore;
use serde::Serialize;
use service_kit::auth::{Access, Authenticator, RouteTable};
use service_kit::http::{ApiError, PathParam, Problem, ProblemBody};
use service_kit::progress::Watchdog;
use sqlx::PgPool;

use crate::metrics::{Metrics, label};
use crate::rebuild::{Rebuild, RebuildError, Silent};
use crate::status::{self, ProjectionStatus};
use crate::views::Projection;

#[derive(Clone)]
pub struct ApiState {
    pub pool: PgPool,
    pub store: EventStore,
    pub metrics: Metrics,
    pub watchdog: Watchdog,
}

/// The projector's routes, each with who may call it, and their document
/// with its page (public).
pub fn routes() -> RouteTable<ApiState> {
    RouteTable::new()
        .merge(service_kit::openapi::routes(crate::openapi::document))
        .get("/v1/projections", Access::READ, list)
        .post("/v1/projections/{name}/rebuild", Access::OPERATE, rebuild)
}

/// [`routes`] and `extra` (the operational endpoints) behind their rules.
pub fn router(state: ApiState, auth: Authenticator, extra: RouteTable<ApiState>) -> Router {
    routes()
        .merge(extra)
        .build(auth)
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .with_state(state)
}

/// Every projection's status, position and lag.
#[utoipa::path(get, path = "/v1/projections", tag = "projections",
    responses((status = 200, body = Vec<ProjectionStatus>)))]
pub async fn list(State(state): State<ApiState>) -> Response {
    match status::statuses(&state.pool, &state.store).await {
        Ok(mut all) => {
            status::mark_stalled(&mut all, &state.watchdog);
            Json::<Vec<ProjectionStatus>>(all).into_response()
        }
        Err(error) => internal(error),
    }
}

/// What a rebuild's start answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RebuildAccepted {
    pub name: &'static str,
    /// `rebuilding`: the current read model keeps serving until the swap.
    pub status: &'static str,
}

/// Rebuilds a read model from the event store while the current one keeps
/// serving, then swaps it in.
#[utoipa::path(post, path = "/v1/projections/{name}/rebuild", tag = "projections",
    params(("name" = String, Path, description = "the projection (its list is the enum)")),
    responses(
        (status = 202, description = "the rebuild has started", body = RebuildAccepted),
        (status = 404, description = "`/problems/not-found`: no projection of that name", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`/problems/conflict`: a rebuild of it is already running", body = ProblemBody, content_type = "application/problem+json")))]
pub async fn rebuild(
    State(state): State<ApiState>,
    PathParam(name): PathParam<String>,
) -> Response {
    let Some(projection) = Projection::parse(&name) else {
        let known: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
        return Problem::not_found(format!(
            "no projection named {name:?}; the projections are {}",
            known.join(", ")
        ))
        .into_response();
    };
    let rebuild = match Rebuild::acquire(&state.pool, &[projection]).await {
        Ok(rebuild) => rebuild,
        Err(RebuildError::AlreadyRunning(name)) => {
            return Problem::conflict(format!("a rebuild of {name} is already running"))
                .into_response();
        }
        Err(RebuildError::Failed(error)) => return internal(error),
    };
    tokio::spawn(async move {
        tracing::info!(projection = projection.name(), "rebuild started");
        match rebuild.run(&state.pool, &state.store, &Silent).await {
            Ok(report) => {
                state
                    .metrics
                    .rebuilds
                    .get_or_create(&label(projection))
                    .inc();
                tracing::info!(
                    projection = projection.name(),
                    events_read = report.events_read,
                    refused = report.refused,
                    seconds = report.elapsed.as_secs_f64(),
                    "rebuild swapped in"
                );
            }
            Err(error) => tracing::error!(
                projection = projection.name(),
                error = format!("{error:#}"),
                "rebuild failed; the current read model keeps serving"
            ),
        }
    });
    (
        StatusCode::ACCEPTED,
        Json(RebuildAccepted {
            name: projection.name(),
            status: "rebuilding",
        }),
    )
        .into_response()
}

fn internal(error: anyhow::Error) -> Response {
    ApiError::Internal(error).into_response()
}
