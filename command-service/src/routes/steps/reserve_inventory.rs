//! `reserve_inventory`: reserves every line of the order on its products,
//! all or nothing (one multi-stream append), and undoes it by releasing
//! the reservations.

use axum::extract::State;
use domain::product::{Product, ProductCommand};
use domain::saga::{SagaAction, SagaEvent, SagaStep, api::Action};
use domain::stream;
use event_store::{ExpectedVersion, StreamAppend};
use service_kit::auth::{Access, RouteTable};
use service_kit::backoff::Backoff;
use uuid::Uuid;

use super::{SagaCall, SagaHeaders, StepOutcome, StepResponses, done, existing_order};
use crate::AppState;
use crate::commands::{
    Loaded, Races, append_recording, decide_fresh_unless_appending, keep_warm, to_new_event,
};
use crate::http::problem::ProblemBody;
use crate::http::{ApiResult, PathParam, RequestContext};

const STEP: SagaStep = SagaStep::ReserveInventory;
const RESERVE: Action = STEP.spec().run;
const RELEASE: Action = STEP.spec().undo.expect("inventory is released");

/// Its routes on the internal listener, for the `service` role only.
pub fn routes() -> RouteTable<AppState> {
    RouteTable::new()
        .post(RESERVE.route, Access::SERVICE, reserve_inventory)
        .post(RELEASE.route, Access::SERVICE, release_inventory)
}

/// Its part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(reserve_inventory, release_inventory))]
pub struct Api;

/// How a step on every product of an order retries a lost race: as any
/// command, but decided more often (32 times): it races on several popular
/// streams at once, and a release or reservation given up on costs the saga
/// a whole retry.
const PRODUCT_STEP_RETRIES: Backoff = Backoff::CONTENTION.with_attempts(32);

/// Decides `command(line)` on each product of the order and appends all of
/// it in one transaction; starts over when another writer got in between.
async fn on_every_product(
    app: &AppState,
    ctx: &RequestContext,
    order_id: Uuid,
    record: &StreamAppend,
    command: impl Fn(i64) -> ProductCommand,
) -> ApiResult<usize> {
    let order = existing_order(app, order_id).await?;
    let streams: Vec<String> = order
        .lines
        .iter()
        .map(|line| stream::product(&line.sku))
        .collect();
    // This process's commands on these products take turns (see `warm`).
    let mut claims = app.warm.claim_all(streams.iter().map(String::as_str)).await;
    let mut races = Races::new(
        PRODUCT_STEP_RETRIES,
        "the products kept changing",
        &app.lost_races,
    );
    loop {
        let attempt = races.next().await?;
        let mut appends = Vec::new();
        // Each product's state once the append is in, to keep warm, by
        // its claim's index.
        let mut after = Vec::new();
        for (line, stream) in order.lines.iter().zip(&streams) {
            let claimed = claims
                .iter()
                .position(|claim| claim.stream_id() == stream)
                .expect("every product is claimed");
            let kept = claims[claimed].take::<Loaded<Product>>();
            let line_command = |_: &Product| Ok(command(line.quantity));
            let (product, events) =
                decide_fresh_unless_appending(&app.store, stream, kept, &line_command).await?;
            let events = events?;
            if events.is_empty() {
                continue;
            }
            let new_events = events
                .iter()
                .enumerate()
                .map(|(i, e)| to_new_event(e, ctx, stream, i))
                .collect();
            appends.push(StreamAppend::new(
                stream.clone(),
                ExpectedVersion::Exact(product.version),
                new_events,
            ));
            let version = product.version + events.len() as u64;
            after.push((
                claimed,
                product.evolved(&events, version, chrono::Utc::now()),
            ));
        }
        let count = appends.iter().map(|a| a.events.len()).sum();
        if append_recording(&app.store, Some(record), appends)
            .await?
            .is_none()
        {
            tracing::debug!(%order_id, attempt, "a product changed meanwhile; deciding again");
            races.lost();
            continue;
        }
        for (claimed, kept) in after {
            keep_warm(app, &mut claims[claimed], kept).await;
        }
        return Ok(count);
    }
}

/// Reserves every line of the order, all or nothing.
#[utoipa::path(post, path = RESERVE.route, tag = super::TAG,
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses(StepResponses,
        (status = 422, description = "a business refusal (`/problems/insufficient-stock`); nothing is written", body = ProblemBody, content_type = "application/problem+json")))]
pub async fn reserve_inventory(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call.turn(&app, order_id, SagaAction::Run(STEP)).await?;
    let ctx = turn.context(ctx);
    let record = turn.record(&ctx, |attempt| SagaEvent::StepSucceeded {
        step: STEP,
        attempt,
        detail: None,
    });
    let appended = on_every_product(&app, &ctx, order_id, &record, |quantity| {
        ProductCommand::Reserve { order_id, quantity }
    })
    .await?;
    Ok(done(&app.sagas, &turn, RESERVE, &record, appended))
}

/// Returns the order's reservations.
#[utoipa::path(post, path = RELEASE.route, tag = super::TAG,
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses(StepResponses))]
pub async fn release_inventory(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call.turn(&app, order_id, SagaAction::Undo(STEP)).await?;
    let ctx = turn.context(ctx);
    let record = turn.record(&ctx, |attempt| SagaEvent::StepCompensated {
        step: STEP,
        attempt,
    });
    let appended = on_every_product(&app, &ctx, order_id, &record, |_| ProductCommand::Release {
        order_id,
    })
    .await?;
    Ok(done(&app.sagas, &turn, RELEASE, &record, appended))
}
