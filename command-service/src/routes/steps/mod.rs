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
//! One module per step (`reserve_inventory`, `charge_payment`,
//! `create_shipment`), each serving the action that carries it out and the
//! one that undoes it, and `ending` for the saga's end; each declares its
//! routes and its part of the OpenAPI document, whose answers are the
//! shared [`StepResponses`]. What is common to every call (its headers,
//! the turn check, the record of its outcome) is in `call`. The paths,
//! headers and problem types are `domain::saga::api`'s, which the
//! orchestrator calls with.
//!
//! Every call carries `X-Saga-Version: V`, the version of `saga-<order id>`
//! its caller decided it on (after recording the attempt's start), and
//! `X-Saga-Attempt: N`. The call reads the saga's stream: at another
//! version it is 409 `saga-moved` (read the saga again); if the stream at
//! V does not say it is this action's turn (`domain::saga::SagaState::turn`,
//! the same rules the orchestrator decides by), 409 `conflict`; nothing is
//! written in either case. When this process recorded the outcome that
//! left the saga at V (the step before, usually), it has the saga at V
//! without reading it (`call::KeptSagas`); whether the stream moved on
//! since is then found by the outcome's append, which expects V (409
//! `saga-moved` as well). Only a business refusal, which appends nothing,
//! can be answered for a saga whose stream has moved on in the meantime;
//! the orchestrator's own record of it expects V too, conflicts, and reads
//! the saga again. Otherwise the action's outcome (`StepSucceeded`,
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

use axum::Json;
use domain::order::Order;
use domain::saga::api::Action;
use domain::stream;
use serde::Serialize;
use service_kit::auth::RouteTable;
use utoipa::OpenApi;
use uuid::Uuid;

use crate::AppState;
use crate::catalogue::PlacedOrder;
use crate::commands::load;
use crate::http::problem::ProblemBody;
use crate::http::{ApiResult, Problem};
use event_store::StreamAppend;

mod call;
mod charge_payment;
mod create_shipment;
mod ending;
mod reserve_inventory;

pub use call::{KeptSagas, SagaCall, SagaHeaders};

/// The OpenAPI tag of every step API operation.
const TAG: &str = "saga steps";

/// Every step API route, for the `service` role only.
pub fn routes() -> RouteTable<AppState> {
    reserve_inventory::routes()
        .merge(charge_payment::routes())
        .merge(create_shipment::routes())
        .merge(ending::routes())
}

/// The step API's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = reserve_inventory::Api::openapi();
    doc.merge(charge_payment::Api::openapi());
    doc.merge(create_shipment::Api::openapi());
    doc.merge(ending::Api::openapi());
    doc
}

/// What every step call may answer (a step that the business can refuse
/// adds its 422).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum StepResponses {
    /// The action took effect, or had already.
    #[response(status = 200)]
    Done(#[to_schema] StepOutcome),
    /// `X-Saga-Version` missing or malformed, or another header malformed.
    #[response(status = 400, content_type = "application/problem+json")]
    BadCall(#[to_schema] ProblemBody),
    /// No valid bearer token.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(#[to_schema] ProblemBody),
    /// The token lacks the `service` role.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(#[to_schema] ProblemBody),
    /// No such order.
    #[response(status = 404, content_type = "application/problem+json")]
    UnknownOrder(#[to_schema] ProblemBody),
    /// `saga-moved`: the saga's stream is no longer at `X-Saga-Version`;
    /// `conflict`: at that version it is not this action's turn, or the
    /// order's state does not allow it. Nothing is written.
    #[response(status = 409, content_type = "application/problem+json")]
    NotNow(#[to_schema] ProblemBody),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StepOutcome {
    pub order_id: Uuid,
    /// The action, in snake case (`release_inventory`).
    pub step: String,
    pub status: &'static str,
    /// Events this call appended besides the saga's record: its effect (0
    /// when it changed nothing, such as an undo of a step that never took
    /// effect).
    pub appended: usize,
    /// The last event this call recorded in the saga's stream: what the
    /// saga's next event is caused by.
    pub recorded: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
}

/// The answer to a call whose outcome `record` was appended; the saga is
/// kept as it left it (`call::KeptSagas`).
fn done(
    sagas: &KeptSagas,
    turn: &call::Turn,
    action: Action,
    record: &StreamAppend,
    appended: usize,
) -> Json<StepOutcome> {
    turn.recorded(sagas, record);
    Json(StepOutcome {
        order_id: turn.order_id(),
        step: action.name.replace('-', "_"),
        status: "succeeded",
        appended,
        recorded: record.events.last().map(|event| event.event_id),
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

/// Parses one code of `SHIPPING_COUNTRIES` (a comma-separated list).
pub fn parse_country(code: &str) -> Result<String, String> {
    let code = code.trim().to_ascii_uppercase();
    if domain::order::valid_country_code(&code) {
        Ok(code)
    } else {
        Err(format!("`{code}` is not an ISO 3166-1 alpha-2 code"))
    }
}
