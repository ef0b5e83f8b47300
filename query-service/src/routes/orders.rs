//! `GET /v1/orders/{id}` and `GET /v1/orders` (by customer and status,
//! newest first).

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::RejectionReason;
use domain::order::{OrderLine, OrderStatus, ShippingAddress};
use serde::{Deserialize, Serialize};
use service_kit::auth::Caller;
use service_kit::http::{PathParam, Problem, QueryParams};
use sqlx::PgPool;
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use crate::AppState;
use crate::http::{ApiResult, Cursor, MinVersion, etag, limit, read_at_least};

/// An order as the read model has it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
    pub shipping_address: ShippingAddress,
    pub rejection_reason: Option<RejectionReason>,
    pub tracking_number: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    order_id: Uuid,
    customer_id: Uuid,
    status: String,
    lines: SqlJson<Vec<OrderLine>>,
    total_cents: i64,
    shipping_address: SqlJson<ShippingAddress>,
    rejection_reason: Option<String>,
    tracking_number: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl OrderRow {
    fn into_view(self) -> anyhow::Result<OrderView> {
        let enum_value = |text: &str| serde_json::Value::String(text.to_owned());
        Ok(OrderView {
            order_id: self.order_id,
            customer_id: self.customer_id,
            status: serde_json::from_value(enum_value(&self.status))?,
            lines: self.lines.0,
            total_cents: self.total_cents,
            shipping_address: self.shipping_address.0,
            rejection_reason: self
                .rejection_reason
                .map(|r| serde_json::from_value(enum_value(&r)))
                .transpose()?,
            tracking_number: self.tracking_number,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version as u64,
        })
    }
}

/// `select * from rm_orders` with its columns named, as the projector
/// declares them.
static SELECT: LazyLock<String> = LazyLock::new(|| {
    let orders = read_models::ORDERS;
    format!("select {} from {}", orders.select_list(), orders.table)
});

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "the order id"), MinVersion),
    responses(
        (status = 200, body = OrderView, headers(("ETag" = String, description = "\"<version>\""))),
        (status = 400, description = "bad id or query", body = service_kit::http::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "unknown order", body = service_kit::http::ProblemBody, content_type = "application/problem+json"),
        (status = 504, description = "the read model did not reach min_version in time", body = service_kit::http::ProblemBody, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<Uuid>,
    QueryParams(query): QueryParams<MinVersion>,
) -> ApiResult<Response> {
    let row = read_at_least(
        &format!("order {id}"),
        query.min_version,
        state.min_version_timeout,
        |row: &OrderRow| row.version as u64,
        || {
            sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
                "{} where order_id = $1",
                *SELECT
            )))
            .bind(id)
            .fetch_optional(&state.pool)
        },
    )
    .await?;
    // Another customer's order does not exist for a customer.
    if !caller.may_see(row.customer_id) {
        return Err(Problem::not_found(format!("order {id} does not exist")).into());
    }
    let view = row.into_view().map_err(crate::http::ApiError::Internal)?;
    Ok(([(header::ETAG, etag(view.version))], Json(view)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this customer's orders.
    pub customer_id: Option<Uuid>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^-?[0-9]{1,16}\\.[0-9a-f]{32}$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderList {
    pub items: Vec<OrderView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(ListQuery),
    responses(
        (status = 200, body = OrderList),
        (status = 400, description = "bad filter, limit or cursor", body = service_kit::http::ProblemBody, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<OrderList>> {
    // A customer sees only their own orders, whatever the filter says.
    let customer_id = match caller.customer {
        Some(own) if query.customer_id.is_some_and(|asked| asked != own) => {
            return Ok(Json(OrderList {
                items: Vec::new(),
                next_cursor: None,
            }));
        }
        Some(own) => Some(own),
        None => query.customer_id,
    };
    let limit = limit(query.limit)?;
    let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let status = query.status.map(status_text);
    let rows = page(&state.pool, customer_id, status, cursor, limit).await?;
    let mut items = rows
        .into_iter()
        .map(OrderRow::into_view)
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(crate::http::ApiError::Internal)?;
    let next_cursor = next_cursor(&mut items, limit);
    Ok(Json(OrderList { items, next_cursor }))
}

/// The text the read model stores for a status.
fn status_text(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "pending",
        OrderStatus::Confirmed => "confirmed",
        OrderStatus::Rejected => "rejected",
        OrderStatus::Cancelled => "cancelled",
    }
}

/// Up to `limit + 1` orders after `cursor`, newest first; the one beyond
/// the page tells whether another page follows.
///
/// Keyset paging on (created_at, order_id): an order placed while a
/// client pages sorts before its cursor, so pages neither repeat nor skip
/// anything.
async fn page(
    pool: &PgPool,
    customer_id: Option<Uuid>,
    status: Option<&str>,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<OrderRow>, sqlx::Error> {
    sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(format!(
        "{}
         where ($1::uuid is null or customer_id = $1)
           and ($2::text is null or status = $2)
           and ($3::timestamptz is null or (created_at, order_id) < ($3, $4))
         order by created_at desc, order_id desc
         limit $5",
        *SELECT
    )))
    .bind(customer_id)
    .bind(status)
    .bind(cursor.map(|c| c.at))
    .bind(cursor.map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(pool)
    .await
}

/// Cuts `items` down to the page and returns the cursor of the next page,
/// if there is one.
fn next_cursor(items: &mut Vec<OrderView>, limit: i64) -> Option<String> {
    if items.len() as i64 <= limit {
        return None;
    }
    items.truncate(limit as usize);
    items.last().map(|last| {
        Cursor {
            at: last.created_at,
            id: last.order_id,
        }
        .encode()
    })
}
