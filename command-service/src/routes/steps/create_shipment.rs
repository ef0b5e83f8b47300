//! `create_shipment`: creates the order's shipment if its country is
//! served (with a tracking number that is the same however often the step
//! runs), and undoes it by cancelling the shipment.

use axum::extract::State;
use domain::saga::{SagaAction, SagaEvent, SagaStep, api::Action};
use domain::shipment::{Shipment, ShipmentCommand};
use domain::stream;
use service_kit::auth::{Access, RouteTable};
use uuid::Uuid;

use super::{SagaCall, SagaHeaders, StepOutcome, StepResponses, done, effects, existing_order};
use crate::AppState;
use crate::commands::{execute, execute_new};
use crate::http::problem::ProblemBody;
use crate::http::{ApiResult, PathParam, Problem, RequestContext};

const STEP: SagaStep = SagaStep::CreateShipment;
const CREATE: Action = STEP.spec().run;
const CANCEL: Action = STEP.spec().undo.expect("a shipment is cancelled");

/// Its routes on the internal listener, for the `service` role only.
pub fn routes() -> RouteTable<AppState> {
    RouteTable::new()
        .post(CREATE.route, Access::SERVICE, create_shipment)
        .post(CANCEL.route, Access::SERVICE, cancel_shipment)
}

/// Its part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create_shipment, cancel_shipment))]
pub struct Api;

/// A tracking number that is the same however often the step runs.
fn tracking_number(order_id: Uuid) -> String {
    let id = Uuid::new_v5(&order_id, b"shipment")
        .simple()
        .to_string()
        .to_uppercase();
    format!("TRK-{}", &id[..12])
}

/// Creates the shipment if the country is served.
#[utoipa::path(post, path = CREATE.route, tag = super::TAG,
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses(StepResponses,
        (status = 422, description = "a business refusal (`/problems/shipping-unavailable`); nothing is written", body = ProblemBody, content_type = "application/problem+json")))]
pub async fn create_shipment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call.turn(&app, order_id, SagaAction::Run(STEP)).await?;
    let ctx = turn.context(ctx);
    let order = existing_order(&app, order_id).await?;
    let Some(address) = &order.shipping_address else {
        return Err(Problem::conflict("the order has no shipping address").into());
    };
    let record = turn.record(&ctx, |attempt| SagaEvent::StepSucceeded {
        step: STEP,
        attempt,
        detail: Some(tracking_number(order_id)),
    });
    // The order's shipment stream is almost always new: append without
    // reading it first (an existing one is read and decided on after all).
    let executed = execute_new::<Shipment, _>(
        &app,
        &stream::shipment(order_id),
        &ctx,
        Some(&record),
        |_| {
            Ok(ShipmentCommand::Create {
                order_id,
                address: address.clone(),
                served_countries: app.shipping_countries.clone(),
                tracking_number: tracking_number(order_id),
            })
        },
    )
    .await?;
    let mut outcome = done(
        &app.sagas,
        &turn,
        CREATE,
        &record,
        effects(&executed.appended, &record),
    );
    outcome.tracking_number = Some(executed.state.tracking_number);
    Ok(outcome)
}

/// Cancels the shipment.
#[utoipa::path(post, path = CANCEL.route, tag = super::TAG,
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses(StepResponses))]
pub async fn cancel_shipment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call.turn(&app, order_id, SagaAction::Undo(STEP)).await?;
    let ctx = turn.context(ctx);
    existing_order(&app, order_id).await?;
    let record = turn.record(&ctx, |attempt| SagaEvent::StepCompensated {
        step: STEP,
        attempt,
    });
    let executed = execute::<Shipment, _>(
        &app,
        &stream::shipment(order_id),
        &ctx,
        Some(&record),
        |_| Ok(ShipmentCommand::Cancel),
    )
    .await?;
    Ok(done(
        &app.sagas,
        &turn,
        CANCEL,
        &record,
        effects(&executed.appended, &record),
    ))
}
