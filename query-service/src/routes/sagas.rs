//! `GET /v1/sagas` (by status and current step, newest first) and
//! `GET /v1/sagas/{order_id}` (the detail with steps and history).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::saga::{SAGA_TYPE, SagaStatus, SagaStep};
use serde::{Deserialize, Serialize};
use service_kit::http::{PathParam, Problem, QueryParams};
use uuid::Uuid;

use crate::AppState;
use crate::http::{ApiResult, Cursor, etag, limit};
use axum::http::StatusCode;
use read_models::sagas::SagaFilter;
use sqlx::QueryBuilder;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SagaSummary {
    pub saga_id: String,
    pub order_id: Uuid,
    #[serde(rename = "type")]
    pub saga_type: &'static str,
    /// running, compensating, completed, compensated or failed.
    pub status: String,
    /// reserve_inventory, charge_payment, create_shipment or null.
    pub current_step: Option<String>,
    pub failure_reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    order_id: Uuid,
    status: String,
    current_step: Option<String>,
    failure_reason: Option<String>,
    started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<SummaryRow> for SagaSummary {
    fn from(row: SummaryRow) -> Self {
        Self {
            saga_id: domain::saga::stream_id(row.order_id),
            order_id: row.order_id,
            saga_type: SAGA_TYPE,
            status: row.status,
            current_step: row.current_step,
            failure_reason: row.failure_reason,
            started_at: row.started_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only sagas in this status.
    pub status: Option<SagaStatus>,
    /// Only sagas whose current step is this one.
    pub step: Option<SagaStep>,
    /// Only sagas whose failure reason or a step's last error contains this
    /// text (case-insensitive; 1 to 200 characters).
    #[param(min_length = 1, max_length = 200)]
    pub failure: Option<String>,
    /// Only sagas some step of which was attempted (or its undoing) at
    /// least this often.
    pub min_attempts: Option<u32>,
    /// Only sagas not ended (completed or compensated) and without progress
    /// for at least this many seconds (at most ten years).
    #[param(maximum = 315_360_000)]
    pub stuck_for: Option<u64>,
    /// Only sagas placed at or after this instant (RFC 3339).
    pub placed_from: Option<DateTime<Utc>>,
    /// Only sagas placed before this instant (RFC 3339); not before
    /// `placed_from`.
    pub placed_to: Option<DateTime<Utc>>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^-?[0-9]{1,16}\\.[0-9a-f]{32}$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SagaList {
    pub items: Vec<SagaSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/sagas", tag = "sagas", params(ListQuery),
    responses(
        (status = 200, body = SagaList),
        (status = 400, description = "bad filter, limit or cursor", body = service_kit::http::ProblemBody, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: service_kit::auth::Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<SagaList>> {
    let limit = limit(query.limit)?;
    let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let filter = SagaFilter {
        status: query.status,
        step: query.step,
        failure: query.failure,
        min_attempts: query.min_attempts,
        stuck_for: query.stuck_for,
        placed_from: query.placed_from,
        placed_to: query.placed_to,
    };
    filter.validate().map_err(|invalid| {
        Problem::validation(StatusCode::BAD_REQUEST, invalid.field, invalid.message)
    })?;
    // Newest first, keyset paging on (started_at, order_id).
    let mut select = QueryBuilder::new(
        "select order_id, status, current_step, failure_reason, started_at, updated_at, finished_at
         from rm_sagas where true",
    );
    filter.push_conditions(&mut select);
    if let Some(cursor) = cursor {
        select
            .push(" and (started_at, order_id) < (")
            .push_bind(cursor.at)
            .push(", ")
            .push_bind(cursor.id)
            .push(")");
    }
    // A customer lists the sagas of their own orders only (the owner of
    // an order is in the orders read model).
    if let Some(customer) = caller.customer {
        select
            .push(" and order_id in (select order_id from rm_orders where customer_id = ")
            .push_bind(customer)
            .push(")");
    }
    select
        .push(" order by started_at desc, order_id desc limit ")
        .push_bind(limit + 1);
    let rows = select
        .build_query_as::<SummaryRow>()
        .fetch_all(&state.pool)
        .await?;
    let mut items: Vec<SagaSummary> = rows.into_iter().map(SagaSummary::from).collect();
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|last| {
            Cursor {
                at: last.started_at,
                id: last.order_id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(SagaList { items, next_cursor }))
}

/// The contract's saga detail, as the projector keeps it ready in
/// `rm_sagas.detail` (`projector::views::sagas`) and this service sends it
/// unchanged; described here for the document only.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SagaDetail {
    /// `saga-<order id>`.
    pub saga_id: String,
    pub order_id: Uuid,
    /// `order_fulfilment`.
    #[serde(rename = "type")]
    pub saga_type: String,
    pub status: SagaStatus,
    pub current_step: Option<SagaStep>,
    /// The business failure's code, or the error that failed the saga.
    pub failure_reason: Option<String>,
    /// Every step, in the order they run.
    pub steps: Vec<SagaStepDetail>,
    /// Every recorded transition, oldest first.
    pub history: Vec<SagaHistoryEntry>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One step of a saga detail.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SagaStepDetail {
    pub name: SagaStep,
    pub status: domain::saga::StepStatus,
    pub attempts: u32,
    /// Attempts at undoing it.
    pub compensation_attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// One transition of a saga.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SagaHistoryEntry {
    pub at: DateTime<Utc>,
    /// The saga event's type, in snake case (`step_failed`).
    pub event: String,
    pub step: Option<SagaStep>,
    pub detail: Option<String>,
}

#[utoipa::path(get, path = "/v1/sagas/{order_id}", tag = "sagas",
    params(("order_id" = Uuid, Path, description = "the order the saga fulfils")),
    responses(
        (status = 200, description = "the saga's steps, attempts, errors and history", body = SagaDetail),
        (status = 400, description = "bad id", body = service_kit::http::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no saga for this order", body = service_kit::http::ProblemBody, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: service_kit::auth::Caller,
    PathParam(order_id): PathParam<Uuid>,
) -> ApiResult<Response> {
    // A customer sees the saga of their own order only: the order's
    // owner is in the orders read model.
    if let Some(own) = caller.customer {
        let owner: Option<Uuid> =
            sqlx::query_scalar("select customer_id from rm_orders where order_id = $1")
                .bind(order_id)
                .fetch_optional(&state.pool)
                .await?;
        if owner != Some(own) {
            return Err(Problem::not_found(format!("no saga for order {order_id}")).into());
        }
    }
    let row: Option<(serde_json::Value, i64)> =
        sqlx::query_as("select detail, version from rm_sagas where order_id = $1")
            .bind(order_id)
            .fetch_optional(&state.pool)
            .await?;
    let Some((detail, version)) = row else {
        return Err(Problem::not_found(format!("no saga for order {order_id}")).into());
    };
    Ok(([(header::ETAG, etag(version as u64))], Json(detail)).into_response())
}
