//! `POST /v1/products`, `POST /v1/products/{sku}/restock`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::product::{Product, ProductCommand, valid_sku};
use domain::stream;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::commands::execute;
use crate::http::{ApiResult, JsonBody, PathParam, Problem, RequestContext, etag};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateProduct {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub sku: String,
    /// Not blank.
    #[schema(
        pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: String,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_cents: i64,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_i64)]
    pub initial_stock: i64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Restock {
    #[schema(minimum = 1, maximum = 1_000_000_i64)]
    pub quantity: i64,
}

/// A product as the write side returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductView {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub version: u64,
}

impl ProductView {
    fn new(state: &Product, version: u64) -> Self {
        Self {
            sku: state.sku.clone(),
            name: state.name.clone(),
            price_cents: state.price_cents,
            on_hand: state.on_hand,
            reserved: state.reserved,
            available: state.available(),
            version,
        }
    }
}

fn checked_sku(sku: &str, field: &'static str, status: StatusCode) -> ApiResult<()> {
    if valid_sku(sku) {
        Ok(())
    } else {
        Err(Problem::validation(status, field, "must match ^[A-Za-z0-9_-]{1,64}$").into())
    }
}

fn respond(status: StatusCode, state: &Product, version: u64) -> Response {
    (
        status,
        [(header::ETAG, etag(version))],
        axum::Json(ProductView::new(state, version)),
    )
        .into_response()
}

/// Adds a product to the catalogue.
#[utoipa::path(post, path = "/v1/products", tag = "products", request_body = CreateProduct,
    responses((status = 201, body = ProductView), (status = 409, description = "the SKU exists", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "invalid field", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn create(
    State(app): State<AppState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<CreateProduct>,
) -> ApiResult<Response> {
    checked_sku(&body.sku, "sku", StatusCode::UNPROCESSABLE_ENTITY)?;
    let executed = execute::<Product, _>(&app, &stream::product(&body.sku), &ctx, None, |_| {
        Ok(ProductCommand::Create {
            sku: body.sku.clone(),
            name: body.name.clone(),
            price_cents: body.price_cents,
            initial_stock: body.initial_stock,
        })
    })
    .await?;
    Ok(respond(
        StatusCode::CREATED,
        &executed.state,
        executed.version,
    ))
}

/// Adds stock.
#[utoipa::path(post, path = "/v1/products/{sku}/restock", tag = "products", request_body = Restock,
    params(("sku" = String, Path, description = "the product's SKU", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, body = ProductView), (status = 404, description = "unknown SKU", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 412, description = "If-Match does not match", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "quantity must be > 0", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn restock(
    State(app): State<AppState>,
    PathParam(sku): PathParam<String>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<Restock>,
) -> ApiResult<Response> {
    checked_sku(&sku, "sku", StatusCode::BAD_REQUEST)?;
    let executed = execute::<Product, _>(&app, &stream::product(&sku), &ctx, None, |_| {
        Ok(ProductCommand::Restock {
            quantity: body.quantity,
        })
    })
    .await?;
    Ok(respond(StatusCode::OK, &executed.state, executed.version))
}
