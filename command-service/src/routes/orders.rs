//! `POST /v1/orders`, `POST /v1/orders/{id}/cancel`,
//! `GET /v1/orders/{id}/state` (time travel).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::RejectionReason;
use domain::customer::Customer;
use domain::order::{Order, OrderCommand, OrderLine, OrderStatus, ShippingAddress};
use domain::product::{Product, valid_sku};
use domain::stream;
use serde::{Deserialize, Serialize};
use service_kit::auth::Caller;
use uuid::Uuid;

use crate::AppState;
use crate::catalogue::PlacedOrder;
use crate::commands::{Loaded, execute, execute_new, load, load_as_of, load_until};
use crate::http::{ApiResult, JsonBody, PathParam, Problem, QueryParams, RequestContext, etag};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PlaceOrder {
    pub customer_id: Uuid,
    /// At least one line, each SKU once.
    #[schema(min_items = 1)]
    pub lines: Vec<LineRequest>,
    pub shipping_address: ShippingAddress,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LineRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub sku: String,
    #[schema(minimum = 1, maximum = 1_000_000_i64)]
    pub quantity: i64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CancelOrder {
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPlacedView {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub version: u64,
    pub position: i64,
}

/// An order as the write side returns it (the same fields as the read
/// side's order detail).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
    pub shipping_address: Option<ShippingAddress>,
    pub rejection_reason: Option<RejectionReason>,
    pub tracking_number: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub version: u64,
}

impl OrderView {
    fn new(
        state: Order,
        version: u64,
        created_at: Option<DateTime<Utc>>,
        updated_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            order_id: state.order_id,
            customer_id: state.customer_id,
            status: state.status,
            lines: state.lines,
            total_cents: state.total_cents,
            shipping_address: state.shipping_address,
            rejection_reason: state.rejection_reason,
            tracking_number: state.tracking_number,
            created_at,
            updated_at,
            version,
        }
    }

    fn from_loaded(loaded: Loaded<Order>) -> Self {
        Self::new(
            loaded.state,
            loaded.version,
            loaded.created_at,
            loaded.updated_at,
        )
    }

    fn respond(self, status: StatusCode) -> Response {
        (
            status,
            [(header::ETAG, etag(self.version))],
            axum::Json(self),
        )
            .into_response()
    }
}

/// Places an order at catalogue prices and starts its fulfilment saga.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = PlaceOrder,
    responses((status = 202, body = OrderPlacedView), (status = 422, description = "unknown customer or SKU, empty lines, quantity <= 0, bad country", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn place(
    State(app): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(body): JsonBody<PlaceOrder>,
) -> ApiResult<Response> {
    if !caller.may_see(body.customer_id) {
        return Err(service_kit::auth::forbidden(
            "a customer may place orders only for themselves (customer_id must be the token's subject)",
        )
        .problem
        .into());
    }
    let lines = priced_lines(&app, &body).await?;
    let order_id = ctx.new_id("order");
    // A new id names a new stream: nothing to load before appending.
    let executed = execute_new::<Order, _>(&app, &stream::order(order_id), &ctx, None, |_| {
        Ok(OrderCommand::Place {
            order_id,
            customer_id: body.customer_id,
            lines: lines.clone(),
            shipping_address: body.shipping_address.clone(),
        })
    })
    .await?;
    // Its steps need these facts next.
    app.catalogue
        .remember_order(order_id, Arc::new(PlacedOrder::of(&executed.state)));
    let view = OrderPlacedView {
        order_id,
        status: executed.state.status,
        version: executed.version,
        position: executed.appended.last().map_or(0, |a| a.position),
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::ETAG, etag(executed.version))],
        axum::Json(view),
    )
        .into_response())
}

/// The order's lines at catalogue prices as they are now; 422 for a
/// malformed or unknown SKU or an unknown customer.
async fn priced_lines(app: &AppState, body: &PlaceOrder) -> ApiResult<Vec<OrderLine>> {
    for (i, line) in body.lines.iter().enumerate() {
        if !valid_sku(&line.sku) {
            return Err(unprocessable(
                format!("lines[{i}].sku"),
                "must match ^[A-Za-z0-9_-]{1,64}$",
            ));
        }
    }
    // The customer and the products not yet known are loaded side by side;
    // what is known never changes (see `catalogue`).
    let (customer_exists, prices) = tokio::try_join!(
        customer_exists(app, body.customer_id),
        futures::future::try_join_all(body.lines.iter().map(|line| price(app, &line.sku))),
    )?;
    if !customer_exists {
        return Err(unprocessable(
            "customer_id",
            format!("no customer {}", body.customer_id),
        ));
    }
    let mut lines = Vec::with_capacity(body.lines.len());
    for (i, (line, price)) in body.lines.iter().zip(prices).enumerate() {
        let Some(unit_price_cents) = price else {
            return Err(unprocessable(
                format!("lines[{i}].sku"),
                format!("no product {}", line.sku),
            ));
        };
        lines.push(OrderLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price_cents,
        });
    }
    Ok(lines)
}

/// Whether the customer exists (remembered once seen).
async fn customer_exists(app: &AppState, customer_id: Uuid) -> ApiResult<bool> {
    if app.catalogue.has_customer(customer_id) {
        return Ok(true);
    }
    let customer = load::<Customer>(&app.store, &stream::customer(customer_id)).await?;
    if customer.state.exists {
        app.catalogue.remember_customer(customer_id);
    }
    Ok(customer.state.exists)
}

/// The product's catalogue price, `None` if there is no such product
/// (remembered once seen: prices never change).
async fn price(app: &AppState, sku: &str) -> ApiResult<Option<i64>> {
    if let Some(price) = app.catalogue.price(sku) {
        return Ok(Some(price));
    }
    let product = load::<Product>(&app.store, &stream::product(sku)).await?;
    if !product.state.exists {
        return Ok(None);
    }
    app.catalogue.remember_price(sku, product.state.price_cents);
    Ok(Some(product.state.price_cents))
}

/// Asks for the order's cancellation; the saga compensates and cancels it.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", request_body = CancelOrder,
    params(("id" = Uuid, Path, description = "the order's id")),
    responses((status = 202, body = OrderView), (status = 404, description = "unknown order", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 409, description = "the order is rejected or cancelled", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(order_id): PathParam<Uuid>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<CancelOrder>,
) -> ApiResult<Response> {
    let executed = execute::<Order, _>(&app, &stream::order(order_id), &ctx, None, |order| {
        // Another customer's order does not exist for a customer.
        if order.exists && !caller.may_see(order.customer_id) {
            return Err(Problem::not_found(format!("order {order_id} does not exist")).into());
        }
        Ok(OrderCommand::RequestCancellation {
            reason: body.reason.clone(),
        })
    })
    .await?;
    Ok(OrderView::new(
        executed.state,
        executed.version,
        executed.created_at,
        executed.updated_at,
    )
    .respond(StatusCode::ACCEPTED))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StateQuery {
    /// The order as it was at this version of its stream (from 1); not
    /// with `as_of`.
    #[param(minimum = 1)]
    pub as_of_version: Option<u64>,
    /// The order as it was at this instant (RFC 3339); not with
    /// `as_of_version`.
    pub as_of: Option<DateTime<Utc>>,
}

/// The order as it was at a version or a time, rebuilt from its events.
#[utoipa::path(get, path = "/v1/orders/{id}/state", tag = "orders",
    params(("id" = Uuid, Path, description = "the order's id"), StateQuery),
    responses((status = 200, body = OrderView), (status = 400, description = "bad query", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 404, description = "no such order at that point", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn state(
    State(app): State<AppState>,
    PathParam(order_id): PathParam<Uuid>,
    QueryParams(query): QueryParams<StateQuery>,
) -> ApiResult<Response> {
    let stream = stream::order(order_id);
    let loaded = match (query.as_of_version, query.as_of) {
        (Some(_), Some(_)) => {
            return Err(Problem::validation(
                StatusCode::BAD_REQUEST,
                "as_of",
                "give as_of_version or as_of, not both",
            )
            .into());
        }
        (Some(0), None) => {
            return Err(Problem::validation(
                StatusCode::BAD_REQUEST,
                "as_of_version",
                "versions start at 1",
            )
            .into());
        }
        (Some(version), None) => {
            let loaded = load_until::<Order>(&app.store, &stream, version).await?;
            if loaded.version < version {
                return Err(Problem::not_found(format!(
                    "order {order_id} has no version {version}"
                ))
                .into());
            }
            loaded
        }
        (None, Some(as_of)) => load_as_of::<Order>(&app.store, &stream, as_of).await?,
        (None, None) => load::<Order>(&app.store, &stream).await?,
    };
    if loaded.version == 0 {
        return Err(Problem::not_found(format!("no order {order_id} at that point")).into());
    }
    Ok(OrderView::from_loaded(loaded).respond(StatusCode::OK))
}

fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> crate::http::ApiError {
    Problem::validation(StatusCode::UNPROCESSABLE_ENTITY, field, message).into()
}
