//! The saga's steps, an internal API under `/internal/v1/orders/{id}/`:
//!
//! | step | effect |
//! |---|---|
//! | `reserve-inventory` | reserves every line of the order, all or nothing (one multi-stream append) |
//! | `release-inventory` | returns the order's reservations |
//! | `charge-payment` | charges the order's total to its customer |
//! | `refund-payment` | refunds that charge |
//! | `create-shipment` | creates the shipment if the country is served |
//! | `cancel-shipment` | cancels it |
//! | `confirm` | confirms the order with the shipment's tracking number |
//! | `reject` `{reason}` | rejects the order (`insufficient_stock`, `payment_declined`, `shipping_unavailable`) |
//! | `mark-cancelled` | records that a requested cancellation is complete |
//!
//! Every step is idempotent per order and step: the routes run behind the
//! idempotency middleware with the key `step:<path>` unless the caller sends
//! its own, so a repeat returns the first outcome (success or business
//! failure) and changes nothing. Business failures are 422 problems with the
//! slugs `insufficient-stock`, `payment-declined`, `shipping-unavailable`.
//!
//! The saga orchestrator calls them another way: with `X-Saga-Version: V`
//! (the version of `saga-<order id>` it decided the call on, after
//! recording the attempt's start) and `X-Saga-Attempt: N`. A step so called
//! records its success in the saga's stream (`StepSucceeded`,
//! `StepCompensated`, or for `confirm` `SagaCompleted`) in the same
//! transaction as its effect, expecting version V. The saga's version is
//! then what makes the call happen at most once: a repeat, a call that
//! lost a race with its own timed-out predecessor, or one overtaken by a
//! cancellation finds the stream moved, writes nothing and gets 409
//! `saga-moved`. So these calls need no idempotency key (no row to claim
//! and fill in per call). A business refusal writes nothing; the
//! orchestrator records it.
//!
//! A forward step (`reserve-inventory`, `charge-payment`) may also be
//! called with `X-Saga-Next-Step: <step>` (and `X-Saga-Next-Attempt: N`,
//! default 1): its success then records, after `StepSucceeded`, that
//! attempt's start (`StepStarted`) of the step that follows, so the
//! orchestrator goes on to call it without an append of its own. Other
//! steps refuse the header with a 400.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use domain::RejectionReason;
use domain::customer::{Customer, CustomerCommand};
use domain::order::{Order, OrderCommand};
use domain::product::{Product, ProductCommand};
use domain::saga::{self, SagaEvent, SagaStep};
use domain::shipment::{Shipment, ShipmentCommand};
use event_store::{ExpectedVersion, StreamAppend};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::catalogue::PlacedOrder;
use crate::commands::{
    append_recording, decide_fresh_unless_appending, execute, execute_new, jitter, keep_warm, load,
    to_new_event,
};
use crate::http::idempotency::HEADER;
use crate::http::{ApiError, ApiResult, JsonBody, PathParam, Problem, RequestContext};
use crate::routes::{customers, orders, products};

/// Gives every step request (`/internal/...`) the idempotency key of its
/// order and step, unless the caller chose one.
/// A call that records its outcome in the saga's stream is made unique by
/// the saga's version instead, and gets no key.
pub async fn key_per_step(mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let records = request.headers().contains_key(SAGA_VERSION)
        && !NOT_RECORDING.iter().any(|step| path.ends_with(step));
    if path.starts_with("/internal/")
        && !request.headers().contains_key(HEADER)
        && !records
        && let Ok(key) = HeaderValue::from_str(&format!("step:{}", request.uri().path()))
    {
        request.headers_mut().insert(HEADER, key);
    }
    next.run(request).await
}

/// Steps that record nothing in the saga's stream, even when called with
/// [`SAGA_VERSION`]: they keep their idempotency key.
const NOT_RECORDING: [&str; 2] = ["/reject", "/mark-cancelled"];

/// The saga's stream version a recording call was decided on.
pub const SAGA_VERSION: &str = "x-saga-version";
/// Which attempt at the step (or at undoing it) a recording call is.
pub const SAGA_ATTEMPT: &str = "x-saga-attempt";
/// The step whose start a forward step's success records too.
pub const SAGA_NEXT_STEP: &str = "x-saga-next-step";
/// Which attempt at that step is started; default 1.
pub const SAGA_NEXT_ATTEMPT: &str = "x-saga-next-attempt";

/// The headers with which a step records its success in the saga's
/// stream (see the module's documentation).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct SagaHeaders {
    /// The version of `saga-<order id>` the call was decided on; the
    /// success is recorded there expecting it.
    #[param(rename = "X-Saga-Version")]
    x_saga_version: Option<u64>,
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

/// Where a step call records its outcome in the saga's stream, if it
/// does (`X-Saga-Version`, `X-Saga-Attempt`), and the next step's start
/// that goes with a success (`X-Saga-Next-Step`, `X-Saga-Next-Attempt`).
#[derive(Debug, Clone, Copy)]
pub struct Recording(Option<Record>);

#[derive(Debug, Clone, Copy)]
struct Record {
    version: u64,
    attempt: u32,
    then: Option<(SagaStep, u32)>,
}

impl<S: Send + Sync> FromRequestParts<S> for Recording {
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
            return Ok(Self(None));
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
        Ok(Self(Some(Record {
            version,
            attempt: attempt(SAGA_ATTEMPT)?,
            then,
        })))
    }
}

impl Recording {
    /// The append that records `outcome(attempt)` in the order's saga
    /// stream at the expected version, if this call records; after a
    /// forward step's success, followed by the next step's start when
    /// asked for.
    fn of(
        self,
        ctx: &RequestContext,
        order_id: Uuid,
        outcome: impl FnOnce(u32) -> SagaEvent,
    ) -> ApiResult<Option<StreamAppend>> {
        let Some(record) = self.0 else {
            return Ok(None);
        };
        let outcome = outcome(record.attempt);
        let follows = match &outcome {
            SagaEvent::StepSucceeded { step, .. } => step.next(),
            _ => None,
        };
        let mut events = vec![outcome];
        if let Some((next, attempt)) = record.then {
            if follows != Some(next) {
                let message = match follows {
                    Some(follows) => format!("only {} follows this step", follows.as_str()),
                    None => "no step follows this one".to_owned(),
                };
                return Err(
                    Problem::validation(StatusCode::BAD_REQUEST, SAGA_NEXT_STEP, message).into(),
                );
            }
            events.push(SagaEvent::StepStarted {
                step: next,
                attempt,
            });
        }
        let stream = saga::stream_id(order_id);
        let expected = ExpectedVersion::at(record.version);
        let events = events
            .iter()
            .enumerate()
            .map(|(i, event)| to_new_event(event, ctx, &stream, i))
            .collect();
        Ok(Some(StreamAppend::new(stream, expected, events)))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StepOutcome {
    pub order_id: Uuid,
    pub step: &'static str,
    pub status: &'static str,
    /// Events this call appended (0 when the step had already happened).
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

/// What the order was placed with (remembered once seen: it never
/// changes); 404 if there is no such order.
async fn existing_order(app: &AppState, order_id: Uuid) -> ApiResult<Arc<PlacedOrder>> {
    if let Some(placed) = app.catalogue.order(order_id) {
        return Ok(placed);
    }
    let order = load::<Order>(&app.store, &orders::stream_id(order_id)).await?;
    if !order.state.exists {
        return Err(Problem::not_found(format!("no order {order_id}")).into());
    }
    let placed = Arc::new(PlacedOrder::of(&order.state));
    app.catalogue.remember_order(order_id, Arc::clone(&placed));
    Ok(placed)
}

/// How many times a step on every product of an order is decided again
/// after losing a race. More than a single-stream command gets
/// (`commands::MAX_ATTEMPTS`): it races on several popular streams at once,
/// and a release or reservation given up on costs the saga a whole retry.
const PRODUCT_STEP_ATTEMPTS: u32 = 32;

/// Decides `command(line)` on each product of the order and appends all of
/// it in one transaction; starts over when another writer got in between.
async fn on_every_product(
    app: &AppState,
    ctx: &RequestContext,
    order_id: Uuid,
    record: Option<&StreamAppend>,
    command: impl Fn(i64) -> ProductCommand,
) -> ApiResult<usize> {
    let order = existing_order(app, order_id).await?;
    for attempt in 1..=PRODUCT_STEP_ATTEMPTS {
        let mut appends = Vec::new();
        // Each product's state once the append is in, to keep warm.
        let mut after = Vec::new();
        for line in &order.lines {
            let stream = products::stream_id(&line.sku);
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
        if appends.is_empty() && record.is_none() {
            return Ok(0);
        }
        let count = appends.iter().map(|a| a.events.len()).sum();
        if append_recording(&app.store, record, appends)
            .await?
            .is_some()
        {
            for (stream, kept) in after {
                keep_warm(app, &stream, kept).await;
            }
            return Ok(count);
        }
        tracing::debug!(%order_id, attempt, "a product changed meanwhile; deciding again");
        tokio::time::sleep(jitter(attempt)).await;
    }
    Err(Problem::busy("the products kept changing; try again").into())
}

/// Reserves every line of the order, all or nothing. Idempotent per order and step.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/reserve-inventory", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "the order's state does not allow it, or (`saga-moved`) the saga's stream is no longer at `X-Saga-Version`", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "insufficient-stock", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn reserve_inventory(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    recording: Recording,
) -> ApiResult<axum::Json<StepOutcome>> {
    let record = recording.of(&ctx, order_id, |attempt| SagaEvent::StepSucceeded {
        step: SagaStep::ReserveInventory,
        attempt,
        detail: None,
    })?;
    let appended = on_every_product(&app, &ctx, order_id, record.as_ref(), |quantity| {
        ProductCommand::Reserve { order_id, quantity }
    })
    .await?;
    Ok(done(order_id, "reserve_inventory", appended))
}

/// Returns the order's reservations. Idempotent per order and step.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/release-inventory", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "the order's state does not allow it, or (`saga-moved`) the saga's stream is no longer at `X-Saga-Version`", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn release_inventory(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    recording: Recording,
) -> ApiResult<axum::Json<StepOutcome>> {
    let record = recording.of(&ctx, order_id, |attempt| SagaEvent::StepCompensated {
        step: SagaStep::ReserveInventory,
        attempt,
    })?;
    let appended = on_every_product(&app, &ctx, order_id, record.as_ref(), |_| {
        ProductCommand::Release { order_id }
    })
    .await?;
    Ok(done(order_id, "release_inventory", appended))
}

/// Charges the order total to the customer. Idempotent per order and step.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/charge-payment", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "the order's state does not allow it, or (`saga-moved`) the saga's stream is no longer at `X-Saga-Version`", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "payment-declined", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn charge_payment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    recording: Recording,
) -> ApiResult<axum::Json<StepOutcome>> {
    let order = existing_order(&app, order_id).await?;
    let record = recording.of(&ctx, order_id, |attempt| SagaEvent::StepSucceeded {
        step: SagaStep::ChargePayment,
        attempt,
        detail: None,
    })?;
    let executed = execute::<Customer, _>(
        &app,
        &customers::stream_id(order.customer_id),
        &ctx,
        record.as_ref(),
        |_| {
            Ok(CustomerCommand::Charge {
                order_id,
                amount_cents: order.total_cents,
            })
        },
    )
    .await?;
    Ok(done(order_id, "charge_payment", executed.appended.len()))
}

/// Refunds the order's charge. Idempotent per order and step.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/refund-payment", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "the order's state does not allow it, or (`saga-moved`) the saga's stream is no longer at `X-Saga-Version`", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn refund_payment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    recording: Recording,
) -> ApiResult<axum::Json<StepOutcome>> {
    let order = existing_order(&app, order_id).await?;
    let record = recording.of(&ctx, order_id, |attempt| SagaEvent::StepCompensated {
        step: SagaStep::ChargePayment,
        attempt,
    })?;
    let executed = execute::<Customer, _>(
        &app,
        &customers::stream_id(order.customer_id),
        &ctx,
        record.as_ref(),
        |_| Ok(CustomerCommand::Refund { order_id }),
    )
    .await?;
    Ok(done(order_id, "refund_payment", executed.appended.len()))
}

pub fn shipment_stream_id(order_id: Uuid) -> String {
    format!("shipment-{order_id}")
}

/// A tracking number that is the same however often the step runs.
fn tracking_number(order_id: Uuid) -> String {
    let id = Uuid::new_v5(&order_id, b"shipment")
        .simple()
        .to_string()
        .to_uppercase();
    format!("TRK-{}", &id[..12])
}

/// Creates the shipment if the country is served. Idempotent per order and step.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/create-shipment", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "the order's state does not allow it, or (`saga-moved`) the saga's stream is no longer at `X-Saga-Version`", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "shipping-unavailable", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn create_shipment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    recording: Recording,
) -> ApiResult<axum::Json<StepOutcome>> {
    let order = existing_order(&app, order_id).await?;
    let Some(address) = &order.shipping_address else {
        return Err(Problem::conflict("the order has no shipping address").into());
    };
    let record = recording.of(&ctx, order_id, |attempt| SagaEvent::StepSucceeded {
        step: SagaStep::CreateShipment,
        attempt,
        detail: Some(tracking_number(order_id)),
    })?;
    // The order's shipment stream is almost always new: append without
    // reading it first (an existing one is read and decided on after all).
    let executed = execute_new::<Shipment, _>(
        &app,
        &shipment_stream_id(order_id),
        &ctx,
        record.as_ref(),
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
    let mut outcome = done(order_id, "create_shipment", executed.appended.len());
    outcome.tracking_number = Some(executed.state.tracking_number);
    Ok(outcome)
}

/// Cancels the shipment. Idempotent per order and step.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/cancel-shipment", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "the order's state does not allow it, or (`saga-moved`) the saga's stream is no longer at `X-Saga-Version`", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn cancel_shipment(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    recording: Recording,
) -> ApiResult<axum::Json<StepOutcome>> {
    existing_order(&app, order_id).await?;
    let record = recording.of(&ctx, order_id, |attempt| SagaEvent::StepCompensated {
        step: SagaStep::CreateShipment,
        attempt,
    })?;
    let executed = execute::<Shipment, _>(
        &app,
        &shipment_stream_id(order_id),
        &ctx,
        record.as_ref(),
        |_| Ok(ShipmentCommand::Cancel),
    )
    .await?;
    Ok(done(order_id, "cancel_shipment", executed.appended.len()))
}

/// Confirms the order with its tracking number. Idempotent per order and step.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/confirm", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id"), SagaHeaders),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "the order's state does not allow it, or (`saga-moved`) the saga's stream is no longer at `X-Saga-Version`", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn confirm(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    recording: Recording,
) -> ApiResult<axum::Json<StepOutcome>> {
    let shipment = load::<Shipment>(&app.store, &shipment_stream_id(order_id)).await?;
    if !shipment.state.exists || shipment.state.cancelled {
        return Err(Problem::conflict("an order is confirmed only with a shipment").into());
    }
    let tracking_number = shipment.state.tracking_number;
    let record = recording.of(&ctx, order_id, |_| SagaEvent::SagaCompleted {
        tracking_number: Some(tracking_number.clone()),
    })?;
    let executed = execute::<Order, _>(
        &app,
        &orders::stream_id(order_id),
        &ctx,
        record.as_ref(),
        |_| {
            Ok(OrderCommand::Confirm {
                tracking_number: tracking_number.clone(),
            })
        },
    )
    .await?;
    let mut outcome = done(order_id, "confirm", executed.appended.len());
    outcome.tracking_number = Some(tracking_number);
    Ok(outcome)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RejectBody {
    pub reason: RejectionReason,
}

/// Rejects the order with a reason. Idempotent per order and step.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/reject", tag = "saga steps", request_body = RejectBody,
    params(("id" = Uuid, Path, description = "the order's id")),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "the order's state does not allow it, or (`saga-moved`) the saga's stream is no longer at `X-Saga-Version`", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn reject(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<RejectBody>,
) -> ApiResult<axum::Json<StepOutcome>> {
    let executed = execute::<Order, _>(&app, &orders::stream_id(order_id), &ctx, None, |_| {
        Ok(OrderCommand::Reject {
            reason: body.reason,
        })
    })
    .await?;
    Ok(done(order_id, "reject", executed.appended.len()))
}

/// Completes a requested cancellation. Idempotent per order and step.
#[utoipa::path(post, path = "/internal/v1/orders/{id}/mark-cancelled", tag = "saga steps",
    params(("id" = Uuid, Path, description = "the order's id")),
    responses((status = 200, body = StepOutcome), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "the order's state does not allow it, or (`saga-moved`) the saga's stream is no longer at `X-Saga-Version`", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn mark_cancelled(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
) -> ApiResult<axum::Json<StepOutcome>> {
    let executed = execute::<Order, _>(&app, &orders::stream_id(order_id), &ctx, None, |_| {
        Ok(OrderCommand::MarkCancelled)
    })
    .await?;
    Ok(done(order_id, "mark_cancelled", executed.appended.len()))
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
