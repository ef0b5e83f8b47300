//! `GET /v1/customers/{id}`.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use service_kit::http::{PathParam, QueryParams};
use uuid::Uuid;

use crate::AppState;
use crate::http::{ApiResult, MinVersion, etag, read_at_least};

/// A customer by id, its columns as the projector declares them.
static SELECT: LazyLock<String> = LazyLock::new(|| {
    let customers = read_models::CUSTOMERS;
    format!(
        "select {} from {} where customer_id = $1",
        customers.select_list(),
        customers.table
    )
});

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CustomerView {
    pub customer_id: Uuid,
    pub name: String,
    pub email: String,
    /// Deposits − charges + refunds.
    pub balance_cents: i64,
    pub version: i64,
}

#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "the customer id"), MinVersion),
    responses(
        (status = 200, body = CustomerView, headers(("ETag" = String, description = "\"<version>\""))),
        (status = 400, description = "bad id or query", body = service_kit::http::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "unknown customer", body = service_kit::http::ProblemBody, content_type = "application/problem+json"),
        (status = 504, description = "the read model did not reach min_version in time", body = service_kit::http::ProblemBody, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: service_kit::auth::Caller,
    PathParam(id): PathParam<Uuid>,
    QueryParams(query): QueryParams<MinVersion>,
) -> ApiResult<Response> {
    // Another customer does not exist for a customer.
    if !caller.may_see(id) {
        return Err(
            service_kit::http::Problem::not_found(format!("customer {id} does not exist")).into(),
        );
    }
    let view = read_at_least(
        &format!("customer {id}"),
        query.min_version,
        state.min_version_timeout,
        |row: &CustomerView| row.version as u64,
        || {
            sqlx::query_as::<_, CustomerView>(sqlx::AssertSqlSafe(SELECT.as_str()))
                .bind(id)
                .fetch_optional(&state.pool)
        },
    )
    .await?;
    Ok(([(header::ETAG, etag(view.version as u64))], Json(view)).into_response())
}
