//! `POST /v1/customers`, `POST /v1/customers/{id}/deposits`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::customer::{Customer, CustomerCommand};
use domain::stream;
use serde::{Deserialize, Serialize};
use service_kit::auth::Caller;
use uuid::Uuid;

use crate::AppState;
use crate::commands::execute;
use crate::http::{ApiResult, JsonBody, PathParam, RequestContext, etag};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RegisterCustomer {
    /// Not blank.
    #[schema(
        pattern = "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub name: String,
    /// `local@domain`: no white space (as Rust's `char::is_whitespace` has
    /// it), one `@`, a domain with a dot inside.
    #[schema(
        pattern = "^[^@\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+@[^@\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000.][^@\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*\\.[^@\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^@\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000.]$"
    )]
    pub email: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Deposit {
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount_cents: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CustomerView {
    pub customer_id: Uuid,
    pub name: String,
    pub email: String,
    pub balance_cents: i64,
    pub version: u64,
}

fn respond(status: StatusCode, state: &Customer, version: u64) -> Response {
    let view = CustomerView {
        customer_id: state.customer_id,
        name: state.name.clone(),
        email: state.email.clone(),
        balance_cents: state.balance_cents,
        version,
    };
    (status, [(header::ETAG, etag(version))], axum::Json(view)).into_response()
}

/// Registers a customer with a zero balance.
#[utoipa::path(post, path = "/v1/customers", tag = "customers", request_body = RegisterCustomer,
    responses((status = 201, body = CustomerView), (status = 422, description = "invalid field", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn register(
    State(app): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(body): JsonBody<RegisterCustomer>,
) -> ApiResult<Response> {
    // A customer registers themselves, once: their id is their token's
    // subject (a second registration is the domain's 409).
    let customer_id = caller.customer.unwrap_or_else(|| ctx.new_id("customer"));
    let executed = execute::<Customer, _>(&app, &stream::customer(customer_id), &ctx, None, |_| {
        Ok(CustomerCommand::Register {
            customer_id,
            name: body.name.clone(),
            email: body.email.clone(),
        })
    })
    .await?;
    Ok(respond(
        StatusCode::CREATED,
        &executed.state,
        executed.version,
    ))
}

/// Adds money to the customer's balance.
#[utoipa::path(post, path = "/v1/customers/{id}/deposits", tag = "customers", request_body = Deposit,
    params(("id" = Uuid, Path, description = "the customer's id")),
    responses((status = 200, body = CustomerView), (status = 404, description = "unknown customer", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 412, description = "If-Match does not match", body = crate::http::problem::ProblemBody, content_type = "application/problem+json"), (status = 422, description = "amount must be > 0", body = crate::http::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn deposit(
    State(app): State<AppState>,
    caller: Caller,
    PathParam(customer_id): PathParam<Uuid>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<Deposit>,
) -> ApiResult<Response> {
    // Another customer's account does not exist for a customer.
    if !caller.may_see(customer_id) {
        return Err(not_found(customer_id));
    }
    let executed = execute::<Customer, _>(&app, &stream::customer(customer_id), &ctx, None, |_| {
        Ok(CustomerCommand::Deposit {
            amount_cents: body.amount_cents,
        })
    })
    .await?;
    Ok(respond(StatusCode::OK, &executed.state, executed.version))
}

fn not_found(customer_id: Uuid) -> crate::http::ApiError {
    crate::http::Problem::not_found(format!("customer {customer_id} does not exist")).into()
}
