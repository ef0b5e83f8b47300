//! `GET /v1/products/{sku}`.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use service_kit::http::{PathParam, Problem, QueryParams};

use crate::AppState;
use crate::http::{ApiResult, MinVersion, etag, read_at_least};

/// A product by SKU, its columns as the projector declares them.
static SELECT: LazyLock<String> = LazyLock::new(|| {
    let products = read_models::PRODUCTS;
    format!(
        "select {} from {} where sku = $1",
        products.select_list(),
        products.table
    )
});

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ProductView {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub version: i64,
}

#[utoipa::path(get, path = "/v1/products/{sku}", tag = "products",
    params(("sku" = String, Path, description = "the product's SKU", pattern = "^[A-Za-z0-9_-]{1,64}$"), MinVersion),
    responses(
        (status = 200, body = ProductView, headers(("ETag" = String, description = "\"<version>\""))),
        (status = 400, description = "bad SKU or query", body = service_kit::http::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "unknown SKU", body = service_kit::http::ProblemBody, content_type = "application/problem+json"),
        (status = 504, description = "the read model did not reach min_version in time", body = service_kit::http::ProblemBody, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    PathParam(sku): PathParam<String>,
    QueryParams(query): QueryParams<MinVersion>,
) -> ApiResult<Response> {
    if !domain::product::valid_sku(&sku) {
        return Err(Problem::validation(
            StatusCode::BAD_REQUEST,
            "sku",
            "must match ^[A-Za-z0-9_-]{1,64}$",
        )
        .into());
    }
    let view = read_at_least(
        &format!("product {sku}"),
        query.min_version,
        state.min_version_timeout,
        |row: &ProductView| row.version as u64,
        || {
            sqlx::query_as::<_, ProductView>(sqlx::AssertSqlSafe(SELECT.as_str()))
                .bind(&sku)
                .fetch_optional(&state.pool)
        },
    )
    .await?;
    Ok(([(header::ETAG, etag(view.version as u64))], Json(view)).into_response())
}
