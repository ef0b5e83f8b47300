//! The saga's steps, an internal API under `/internal/v1/orders/{id}/`,
//! served only on command-service's internal listener
//! (`INTERNAL_HTTP_ADDR`; the public one answers 404 for it):
//!
//! | step | effect | allowed when the saga's stream says |
//! |---|---|---|
//! | `reserve-inventory` | reserves every line of the order, all or nothing (one multi-stream append) | the saga runs and this is its running step |
//! | `charge-payment` | charges the order's total to its customer | the same |
//! | `create-shipment` | creates the shipment if the country is served | the same |
//! | `release-inventory` | returns the order's reservations | the saga compensates and this is the next step to undo |
//! | `refund-payment` | refunds that charge | the same |
//! | `cancel-shipment` | cancels the shipment | the same |
//! | `confirm` | confirms the order with the shipment's tracking number | every step succeeded, no cancellation requested |
//! | `reject` `{reason}` | rejects the order (`insufficient_stock`, `payment_declined`, `shipping_unavailable`) | compensating a business failure with that code, nothing left to undo |
//! | `mark-cancelled` | cancels the order, as its customer asked | compensating a cancellation, nothing left to undo |
//!
//! Every call carries `X-Saga-Version: V`, the version of `saga-<order id>`
//! its caller decided it on (after recording the attempt's start), and
//! `X-Saga-Attempt: N`. The call reads the saga's stream: at another
//! version it is 409 `saga-moved` (read the saga again); if the stream at
//! V does not say it is this action's turn (`domain::saga::SagaState::turn`,
//! the same rules the orchestrator decides by), 409 `conflict`; nothing is
//! written in either case. Otherwise the action's outcome (`StepSucceeded`,
//! `StepCompensated`, `SagaCompleted`, or `SagaCompensated` for `reject` and
//! `mark-cancelled`) is appended to the saga's stream in the same
//! transaction as its effect, expecting version V. So the check and the
//! write are one atomic append: nobody can refund or release an order whose
//! saga did not decide to undo that step, nor confirm an unpaid one, and a
//! repeat, a call that lost a race with its own timed-out predecessor, or
//! one overtaken by a cancellation finds the stream moved. The saga's
//! stream is the record of the outcome, so these calls need no idempotency
//! key. A business refusal (422 `insufficient-stock`, `payment-declined`,
//! `shipping-unavailable`) writes nothing; the orchestrator records it.
//!
//! A forward step (`reserve-inventory`, `charge-payment`) may also be
//! called with `X-Saga-Next-Step: <step>` (and `X-Saga-Next-Attempt: N`,
//! default 1): its success then records, after `StepSucceeded`, that
//! attempt's start (`StepStarted`) of the step that follows, so the
//! orchestrator goes on to call it without an append of its own. Other
//! steps refuse the header with a 400.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use domain::customer::{Customer, CustomerCommand};
use domain::order::{Order, OrderCommand};
use domain::product::{Product, ProductCommand};
use domain::saga::{self, SagaAction, SagaEvent, SagaState, SagaStep};
use domain::shipment::{Shipment, ShipmentCommand};
use domain::stream;
use domain::{Event, RejectionReason};
use event_store::{EventStore, ExpectedVersion, StreamAppend};
use serde::{Deserialize, Serialize};
use service_kit::backoff::Backoff;
use uuid::Uuid;

use crate::AppState;
use crate::catalogue::PlacedOrder;
use crate::commands::{
    append_recording, decide_fresh_unless_appending, execute, execute_new, keep_warm, load,
    saga_moved, to_new_event,
};
use crate::http::{ApiError, ApiResult, JsonBody, OrProblem, PathParam, Problem, RequestContext};

/// The saga's stream version a call was decided on.
pub const SAGA_VERSION: &str = "x-saga-version";
/// Which attempt at the step (or at undoing it) a call is.
pub const SAGA_ATTEMPT: &str = "x-saga-attempt";
/// The step whose start a forward step's success records too.
pub const SAGA_NEXT_STEP: &str = "x-saga-next-step";
/// Which attempt at that step is started; default 1.
pub const SAGA_NEXT_ATTEMPT: &str = "x-saga-next-attempt";

/// The headers of every step call (see the module's documentation).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct SagaHeaders {
    /// The version of `saga-<order id>` the call was decided on: the call
    /// takes effect only if the stream is at it and says it is this
    /// action's turn, and its outcome is recorded there expecting it.
    #[param(rename = "X-Saga-Version", required = true)]
    x_saga_version: u64,
    /// The attempt at the step (or at undoing it), from 1; default 1.
    #[param(rename = "X-Saga-Attempt")]
    x_saga_attempt: Option<u32>,
    /// Forward steps only: the step (`charge_payment`, `create_shipment`)
    /// whose start is recorded together with this one's success.
    #[param(rename = "X-Saga-Next-Step")]
    x_saga_next_step: Option<String>,
    /// The attempt at that step, from 1; default 1.
    #[param(rename = "X-Saga-Next-Attempt")]
    x_saga_next_attempt: Option<u32>,
}

/// What a step call says about the saga it acts for: the version of the
/// saga's stream it was decided on and the attempt (`X-Saga-Version`,
/// `X-Saga-Attempt`), and the next step's start that goes with a forward
/// step's success (`X-Saga-Next-Step`, `X-Saga-Next-Attempt`).
#[derive(Debug, Clone, Copy)]
pub struct SagaCall {
    version: u64,
    attempt: u32,
    then: Option<(SagaStep, u32)>,
}

impl<S: Send + Sync> FromRequestParts<S> for SagaCall {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let text = |name: &'static str| -> ApiResult<Option<&str>> {
            parts
                .headers
                .get(name)
                .map(|value| {
                    value.to_str().map(str::trim).map_err(|_| {
                        Problem::validation(StatusCode::BAD_REQUEST, name, "must be text").into()
                    })
                })
                .transpose()
        };
        let attempt = |name: &'static str| -> ApiResult<u32> {
            let Some(value) = text(name)? else {
                return Ok(1);
            };
            value.parse().ok().filter(|a| *a >= 1).ok_or_else(|| {
                Problem::validation(
                    StatusCode::BAD_REQUEST,
                    name,
                    "must be a whole number from 1",
                )
                .into()
            })
        };
        let Some(version) = text(SAGA_VERSION)? else {
            return Err(Problem::validation(
                StatusCode::BAD_REQUEST,
                SAGA_VERSION,
                "is required: the version of the saga's stream the call was decided on",
            )
            .into());
        };
        let version = version.parse().map_err(|_| {
            Problem::validation(
                StatusCode::BAD_REQUEST,
                SAGA_VERSION,
                "must be a whole number",
            )
        })?;
        let then = match text(SAGA_NEXT_STEP)? {
            None => None,
            Some(name) => {
                let step = SagaStep::parse(name).ok_or_else(|| {
                    Problem::validation(
                        StatusCode::BAD_REQUEST,
                        SAGA_NEXT_STEP,
                        "must be one of reserve_inventory, charge_payment, create_shipment",
                    )
                })?;
                Some((step, attempt(SAGA_NEXT_ATTEMPT)?))
            }
        };
        Ok(Self {
            version,
            attempt: attempt(SAGA_ATTEMPT)?,
            then,
        })
    }
}

/// Events read per query of a saga's stream; one is usually a dozen.
const SAGA_PAGE: u32 = 500;

/// The saga of `order_id` as its stream says now, and the stream's version
/// (0: no saga).
async fn load_saga(store: &EventStore, order_id: Uuid) -> ApiResult<(SagaState, u64)> {
    let stream = stream::saga(order_id);
    let mut state = SagaState::default();
    let mut version = 0;
    loop {
        let page = store
            .read_stream(&stream, version + 1, SAGA_PAGE)
            .await
            .or_problem()?;
        for recorded in &page {
            let event =
                SagaEvent::decode(&recorded.event_type, &recorded.data).map_err(|error| {
                    ApiError::Internal(
                        anyhow::Error::new(error)
                            .context(format!("stream {stream} version {}", recorded.version)),
                    )
                })?;
            state = state.evolve(&event);
            version = recorded.version;
        }
        if page.len() < SAGA_PAGE as usize {
            return Ok((state, version));
        }
    }
}

/// A call whose turn it is: the saga's state at the call's version, and
/// what to record there with the action's effect.
struct Turn {
    call: SagaCall,
    stream: String,
    state: SagaState,
}

impl SagaCall {
    /// Checks that the saga's stream is at this call's version and says it
    /// is `action`'s turn (409 `saga-moved`, or 409 `conflict`, otherwise).
    async fn turn(self, app: &AppState, order_id: Uuid, action: SagaAction) -> ApiResult<Turn> {
        // Only a forward step's success may start the step after it.
        if let Some((next, _)) = self.then {
            let follows = match action {
                SagaAction::Run(step) => step.next(),
                _ => None,
            };
            if follows != Some(next) {
                let message = match follows {
                    Some(follows) => format!("only {} follows this step", follows.as_str()),
                    None => "no step follows this one".to_owned(),
                };
                return Err(
                    Problem::validation(StatusCode::BAD_REQUEST, SAGA_NEXT_STEP, message).into(),
                );
            }
        }
        let stream = stream::saga(order_id);
        let (state, version) = load_saga(&app.store, order_id).await?;
        if version != self.version {
            return Err(saga_moved(&stream).into());
        }
        // Checked on the state at the very version the outcome is appended
        // at, so the check holds when the effect is written.
        if let Err(out_of_turn) = state.turn(action) {
            return Err(Problem::conflict(format!(
                "not this call's turn in {stream} at version {version}: {out_of_turn}; \
                 nothing was written"
            ))
            .into());
        }
        Ok(Turn {
            call: self,
            stream,
            state,
        })
    }
}

impl Turn {
    /// The append that records `outcome` (made with the call's attempt) at
    /// the call's version, followed, after a forward step's success, by the
    /// next step's start when asked for; it goes first in the transaction
    /// of the action's effect.
    fn record(&self, ctx: &RequestContext, outcome: impl FnOnce(u32) -> SagaEvent) -> StreamAppend {
        let mut events = vec![outcome(self.call.attempt)];
        if let Some((step, attempt)) = self.call.then {
            events.push(SagaEvent::StepStarted { step, attempt });
        }
        let events = events
            .iter()
            .enumerate()
            .map(|(i, event)| to_new_event(event, ctx, &self.stream, i))
            .collect();
        StreamAppend::new(
            self.stream.clone(),
            ExpectedVersion::at(self.call.version),
            events,
        )
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StepOutcome {
    pub order_id: Uuid,
    pub step: &'static str,
    pub status: &'static str,
    /// Events this call appended besides the saga's record: its effect (0
    /// when it changed nothing, such as an undo of a step that never took
    /// effect).
    pub appended: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
}

fn done(order_id: Uuid, step: &'static str, appended: usize) -> axum::Json<StepOutcome> {
    axum::Json(StepOutcome {
        order_id,
        step,
        status: "succeeded",
        appended,
        tracking_number: None,
    })
}

/// How many of `appended` are the effect, not `record` (which an append
/// that changes nothing else writes without reporting it).
fn effects(appended: &[event_store::Appended], record: &StreamAppend) -> usize {
    appended.len().saturating_sub(record.events.len())
}

/// What the order was placed with (remembered once seen: it never
/// changes); 404 if there is no such order.
async fn existing_order(app: &AppState, order_id: Uuid) -> ApiResult<Arc<PlacedOrder>> {
    if let Some(placed) = app.catalogue.order(order_id) {
        return Ok(placed);
    }
    let order = load::<Order>(&app.store, &stream::order(order_id)).await?;
    if !order.state.exists {
        return Err(Problem::not_found(format!("no order {order_id}")).into());
    }
    let placed = Arc::new(PlacedOrder::of(&order.state));
    app.catalogue.remember_order(order_id, Arc::clone(&placed));
    Ok(placed)
}

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
    for attempt in PRODUCT_STEP_RETRIES.attempts() {
        let mut appends = Vec::new();
        // Each product's state once the append is in, to keep warm.
        let mut after = Vec::new();
        for line in &order.lines {
            let stream = stream::product(&line.sku);
            let kept = app.warm.take::<Product>(&stream);
            let line_command = |_: &Product| Ok(command(line.quantity));
            let (product, events) =
                decide_fresh_unless_appending(&app.store, &stream, kept, &line_command).await?;
            let events = events?;
            if events.is_empty() {
                continue;
            }
            let new_events = events
                .iter()
                .enumerate()
                .map(|(i, e)| to_new_event(e, ctx, &stream, i))
                .collect();
            appends.push(StreamAppend::new(
                stream.clone(),
                ExpectedVersion::Exact(product.version),
                new_events,
            ));
            let version = product.version + events.len() as u64;
            after.push((
                stream,
                product.evolved(&events, version, chrono::Utc::now()),
            ));
        }
        let count = appends.iter().map(|a| a.events.len()).sum();
        if append_recording(&app.store, Some(record), appends)
            .await?
            .is_some()
        {
            for (stream, kept) in after {
                keep_warm(app, &stream, kept).await;
            }
            return Ok(count);
        }
        tracing::debug!(%order_id, attempt, "a product changed meanwhile; deciding again");
        PRODUCT_STEP_RETRIES.sleep(attempt).await;
    }
    Err(Problem::busy("the products kept changing; try again").into())
}

/// Reserves every line of the order, all or nothing.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/reserve-inventory", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 400, description = "`X-Saga-Version` missing or malformed", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "`saga-moved`: the saga's stream is no longer at `X-Saga-Version`; `conflict`: at that version it is not this action's turn, or the order's state does not allow it. Nothing is written", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "insufficient-stock", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn reserve_inventory(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call
        .turn(&app, order_id, SagaAction::Run(SagaStep::ReserveInventory))
        .await?;
    let record = turn.record(&ctx, |attempt| SagaEvent::StepSucceeded {
        step: SagaStep::ReserveInventory,
        attempt,
        detail: None,
    });
    let appended = on_every_product(&app, &ctx, order_id, &record, |quantity| {
        ProductCommand::Reserve { order_id, quantity }
    })
    .await?;
    Ok(done(order_id, "reserve_inventory", appended))
}

/// Returns the order's reservations.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/release-inventory", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 400, description = "`X-Saga-Version` missing or malformed", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "`saga-moved`: the saga's stream is no longer at `X-Saga-Version`; `conflict`: at that version it is not this action's turn, or the order's state does not allow it. Nothing is written", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn release_inventory(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call
        .turn(&app, order_id, SagaAction::Undo(SagaStep::ReserveInventory))
        .await?;
    let record = turn.record(&ctx, |attempt| SagaEvent::StepCompensated {
        step: SagaStep::ReserveInventory,
        attempt,
    });
    let appended = on_every_product(&app, &ctx, order_id, &record, |_| ProductCommand::Release {
        order_id,
    })
    .await?;
    Ok(done(order_id, "release_inventory", appended))
}

/// Charges the order total to the customer.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/charge-payment", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 400, description = "`X-Saga-Version` missing or malformed", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "`saga-moved`: the saga's stream is no longer at `X-Saga-Version`; `conflict`: at that version it is not this action's turn, or the order's state does not allow it. Nothing is written", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "payment-declined", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn charge_payment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call
        .turn(&app, order_id, SagaAction::Run(SagaStep::ChargePayment))
        .await?;
    let order = existing_order(&app, order_id).await?;
    let record = turn.record(&ctx, |attempt| SagaEvent::StepSucceeded {
        step: SagaStep::ChargePayment,
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
        order_id,
        "charge_payment",
        effects(&executed.appended, &record),
    ))
}

/// Refunds the order's charge.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/refund-payment", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 400, description = "`X-Saga-Version` missing or malformed", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "`saga-moved`: the saga's stream is no longer at `X-Saga-Version`; `conflict`: at that version it is not this action's turn, or the order's state does not allow it. Nothing is written", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn refund_payment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call
        .turn(&app, order_id, SagaAction::Undo(SagaStep::ChargePayment))
        .await?;
    let order = existing_order(&app, order_id).await?;
    let record = turn.record(&ctx, |attempt| SagaEvent::StepCompensated {
        step: SagaStep::ChargePayment,
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
        order_id,
        "refund_payment",
        effects(&executed.appended, &record),
    ))
}

/// A tracking number that is the same however often the step runs.
fn tracking_number(order_id: Uuid) -> String {
    let id = Uuid::new_v5(&order_id, b"shipment")
        .simple()
        .to_string()
        .to_uppercase();
    format!("TRK-{}", &id[..12])
}

/// Creates the shipment if the country is served.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/create-shipment", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 400, description = "`X-Saga-Version` missing or malformed", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "`saga-moved`: the saga's stream is no longer at `X-Saga-Version`; `conflict`: at that version it is not this action's turn, or the order's state does not allow it. Nothing is written", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "shipping-unavailable", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn create_shipment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call
        .turn(&app, order_id, SagaAction::Run(SagaStep::CreateShipment))
        .await?;
    let order = existing_order(&app, order_id).await?;
    let Some(address) = &order.shipping_address else {
        return Err(Problem::conflict("the order has no shipping address").into());
    };
    let record = turn.record(&ctx, |attempt| SagaEvent::StepSucceeded {
        step: SagaStep::CreateShipment,
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
        order_id,
        "create_shipment",
        effects(&executed.appended, &record),
    );
    outcome.tracking_number = Some(executed.state.tracking_number);
    Ok(outcome)
}

/// Cancels the shipment.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/cancel-shipment", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 400, description = "`X-Saga-Version` missing or malformed", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "`saga-moved`: the saga's stream is no longer at `X-Saga-Version`; `conflict`: at that version it is not this action's turn, or the order's state does not allow it. Nothing is written", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn cancel_shipment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call
        .turn(&app, order_id, SagaAction::Undo(SagaStep::CreateShipment))
        .await?;
    existing_order(&app, order_id).await?;
    let record = turn.record(&ctx, |attempt| SagaEvent::StepCompensated {
        step: SagaStep::CreateShipment,
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
        order_id,
        "cancel_shipment",
        effects(&executed.appended, &record),
    ))
}

/// Confirms the order with its tracking number.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/confirm", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 400, description = "`X-Saga-Version` missing or malformed", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "`saga-moved`: the saga's stream is no longer at `X-Saga-Version`; `conflict`: at that version it is not this action's turn, or the order's state does not allow it. Nothing is written", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn confirm(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call.turn(&app, order_id, SagaAction::Confirm).await?;
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
    let mut outcome = done(order_id, "confirm", effects(&executed.appended, &record));
    outcome.tracking_number = Some(tracking_number);
    Ok(outcome)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RejectBody {
    pub reason: RejectionReason,
}

/// Rejects the order with the reason of the business failure its saga
/// compensated, and records the saga's end.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/reject", tag = "saga steps", request_body = RejectBody,
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 400, description = "`X-Saga-Version` missing or malformed", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "`saga-moved`: the saga's stream is no longer at `X-Saga-Version`; `conflict`: at that version it is not this action's turn, or the order's state does not allow it. Nothing is written", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
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
        order_id,
        "reject",
        effects(&executed.appended, &record),
    ))
}

/// Cancels the order once its saga undid every step, and records the
/// saga's end.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/mark-cancelled", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 400, description = "`X-Saga-Version` missing or malformed", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "`saga-moved`: the saga's stream is no longer at `X-Saga-Version`; `conflict`: at that version it is not this action's turn, or the order's state does not allow it. Nothing is written", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn mark_cancelled(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    call: SagaCall,
) -> ApiResult<axum::Json<StepOutcome>> {
    let turn = call.turn(&app, order_id, SagaAction::MarkCancelled).await?;
    let record = turn.record(&ctx, |_| SagaEvent::SagaCompensated {
        reason: saga::CANCELLED.to_owned(),
    });
    let executed = execute::<Order, _>(&app, &stream::order(order_id), &ctx, Some(&record), |_| {
        Ok(OrderCommand::MarkCancelled)
    })
    .await?;
    Ok(done(
        order_id,
        "mark_cancelled",
        effects(&executed.appended, &record),
    ))
}

/// Parses one code of `SHIPPING_COUNTRIES` (a comma-separated list).
pub fn parse_country(code: &str) -> Result<String, String> {
    let code = code.trim().to_ascii_uppercase();
    if domain::order::valid_country_code(&code) {
        Ok(code)
    } else {
        Err(format!("`{code}` is not an ISO 3166-1 alpha-2 code"))
    }
}
