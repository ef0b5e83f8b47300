//! `charge_payment`: charges the order's total to its customer, and undoes
//! it by refunding that charge.

use axum::extract::State;
use domain::customer::{Customer, CustomerCommand};
use domain::saga::{SagaAction, SagaEvent, SagaStep, api::Action};
use domain::stream;
use service_kit::auth::{Access, RouteTable};
use uuid::Uuid;

use super::{SagaCall, SagaHeaders, StepOutcome, StepResponses, done, effects, existing_order};
use crate::AppState;
use crate::commands::execute;
use crate::http::problem::ProblemBody;
use crate::http::{ApiResult, PathParam, RequestContext};

const STEP: SagaStep = SagaStep::ChargePayment;
const CHARGE: Action = STEP.spec().run;
const REFUND: Action = STEP.spec().undo.expect("a charge is refunded");

/// Its routes on the internal listener, for the `service` role only.
pub fn routes() -> RouteTable<AppState> {
    RouteTable::new()
        .post(CHARGE.route, Access::SERVICE, charge_payment)
        .post(REFUND.route, Access::SERVICE, refund_payment)
}

/// Its part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(charge_payment, refund_payment))]
pub struct Api;

/// Charges the order total to the customer.
#[utoipa::path(post, path = CHARGE.route, tag = super::TAG,
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses(StepResponses,
        (status = 422, description = "a business refusal (`/problems/payment-declined`); nothing is written", body = ProblemBody, content_type = "application/problem+json")))]
pub async fn charge_payment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call.turn(&app, order_id, SagaAction::Run(STEP)).await?;
    let ctx = turn.context(ctx);
    let order = existing_order(&app, order_id).await?;
    let record = turn.record(&ctx, |attempt| SagaEvent::StepSucceeded {
        step: STEP,
        attempt,
        detail: None,
    });
    let executed = execute::<Customer, _>(
        &app,
        &stream::customer(order.customer_id),
        &ctx,
        Some(&record),
        |_| {
            Ok(CustomerCommand::Charge {
                order_id,
                amount_cents: order.total_cents,
            })
        },
    )
    .await?;
    Ok(done(
        &app.sagas,
        &turn,
        CHARGE,
        &record,
        effects(&executed.appended, &record),
    ))
}

/// Refunds the order's charge.
#[utoipa::path(post, path = REFUND.route, tag = super::TAG,
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses(StepResponses))]
pub async fn refund_payment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call.turn(&app, order_id, SagaAction::Undo(STEP)).await?;
    let ctx = turn.context(ctx);
    let order = existing_order(&app, order_id).await?;
    let record = turn.record(&ctx, |attempt| SagaEvent::StepCompensated {
        step: STEP,
        attempt,
    });
    let executed = execute::<Customer, _>(
        &app,
        &stream::customer(order.customer_id),
        &ctx,
        Some(&record),
        |_| Ok(CustomerCommand::Refund { order_id }),
    )
    .await?;
    Ok(done(
        &app.sagas,
        &turn,
        REFUND,
        &record,
        effects(&executed.appended, &record),
    ))
}
