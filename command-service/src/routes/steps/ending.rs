//! The saga's end: `confirm` once every step succeeded, `reject` or
//! `mark-cancelled` once a compensation has undone every step. Each records
//! the saga's end (`SagaCompleted`, `SagaCompensated`) with the order's.

use axum::extract::State;
use domain::RejectionReason;
use domain::order::{Order, OrderCommand};
use domain::saga::{self, SagaAction, SagaEvent, api};
use domain::shipment::Shipment;
use domain::stream;
use serde::Deserialize;
use service_kit::auth::{Access, RouteTable};
use uuid::Uuid;

use super::{SagaCall, SagaHeaders, StepOutcome, StepResponses, done, effects};
use crate::AppState;
use crate::commands::{execute, load};
use crate::http::{ApiResult, JsonBody, PathParam, Problem, RequestContext};

/// Its routes on the internal listener, for the `service` role only.
pub fn routes() -> RouteTable<AppState> {
    RouteTable::new()
        .post(api::CONFIRM.route, Access::SERVICE, confirm)
        .post(api::REJECT.route, Access::SERVICE, reject)
        .post(api::MARK_CANCELLED.route, Access::SERVICE, mark_cancelled)
}

/// Its part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(confirm, reject, mark_cancelled))]
pub struct Api;

/// Confirms the order with its tracking number.
#[utoipa::path(post, path = api::CONFIRM.route, tag = super::TAG,
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses(StepResponses))]
pub async fn confirm(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call.turn(&app, order_id, SagaAction::Confirm).await?;
    let ctx = turn.context(ctx);
    let shipment = load::<Shipment>(&app.store, &stream::shipment(order_id)).await?;
    if !shipment.state.exists || shipment.state.cancelled {
        return Err(Problem::conflict("an order is confirmed only with a shipment").into());
    }
    let tracking_number = shipment.state.tracking_number;
    let record = turn.record(&ctx, |_| SagaEvent::SagaCompleted {
        tracking_number: Some(tracking_number.clone()),
    });
    let executed = execute::<Order, _>(&app, &stream::order(order_id), &ctx, Some(&record), |_| {
        Ok(OrderCommand::Confirm {
            tracking_number: tracking_number.clone(),
        })
    })
    .await?;
    let mut outcome = done(
        &app.sagas,
        &turn,
        api::CONFIRM,
        &record,
        effects(&executed.appended, &record),
    );
    outcome.tracking_number = Some(tracking_number);
    Ok(outcome)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RejectBody {
    pub reason: RejectionReason,
}

/// Rejects the order with the reason of the business failure its saga
/// compensated, and records the saga's end.
#[utoipa::path(post, path = api::REJECT.route, tag = super::TAG, request_body = RejectBody,
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses(StepResponses))]
pub async fn reject(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
    JsonBody(body): JsonBody<RejectBody>,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call
        .turn(&app, order_id, SagaAction::Reject(body.reason))
        .await?;
    let ctx = turn.context(ctx);
    // The saga's end says why, as the orchestrator would have: the failure
    // it compensated (a business code, or a step's error).
    let reason = turn
        .state
        .failure_reason
        .clone()
        .unwrap_or_else(|| saga::code(body.reason).to_owned());
    let record = turn.record(&ctx, |_| SagaEvent::SagaCompensated { reason });
    let executed = execute::<Order, _>(&app, &stream::order(order_id), &ctx, Some(&record), |_| {
        Ok(OrderCommand::Reject {
            reason: body.reason,
        })
    })
    .await?;
    Ok(done(
        &app.sagas,
        &turn,
        api::REJECT,
        &record,
        effects(&executed.appended, &record),
    ))
}

/// Cancels the order once its saga undid every step, and records the
/// saga's end.
#[utoipa::path(post, path = api::MARK_CANCELLED.route, tag = super::TAG,
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses(StepResponses))]
pub async fn mark_cancelled(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call.turn(&app, order_id, SagaAction::MarkCancelled).await?;
    let ctx = turn.context(ctx);
    let record = turn.record(&ctx, |_| SagaEvent::SagaCompensated {
        reason: saga::CANCELLED.to_owned(),
    });
    let executed = execute::<Order, _>(&app, &stream::order(order_id), &ctx, Some(&record), |_| {
        Ok(OrderCommand::MarkCancelled)
    })
    .await?;
    Ok(done(
        &app.sagas,
        &turn,
        api::MARK_CANCELLED,
        &record,
        effects(&executed.appended, &record),
    ))
}
