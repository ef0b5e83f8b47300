//! `GET /v1/reports/daily-sales`: per SKU and UTC day, the units and
//! revenue of the orders confirmed that day, less those of confirmed orders
//! cancelled that day, newest day first.
//!
//! The projector keeps each order's contribution (`rm_daily_sales_orders`,
//! one row per order, guarded by the order stream's version), and the
//! report adds them up here, so an event delivered twice never counts twice.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use service_kit::http::{Problem, QueryParams};

use crate::AppState;
use crate::http::ApiResult;

/// Each confirmed order adds its lines on the day it was confirmed and
/// takes them away on the day it was cancelled (only set for confirmed
/// orders); each order is one row, so the sum counts each order once.
/// `$1`: SKU, `$2`, `$3`: the first and last day, each optional.
static REPORT: LazyLock<String> = LazyLock::new(|| {
    let table = read_models::DAILY_SALES.table;
    format!(
        "with contributions as (
             select o.confirmed_on as day, l.sku, l.units, l.revenue_cents
             from {table} o
             cross join lateral jsonb_to_recordset(o.lines)
               as l(sku text, units bigint, revenue_cents bigint)
             where o.confirmed_on is not null
               and ($2::date is null or o.confirmed_on >= $2)
               and ($3::date is null or o.confirmed_on <= $3)
             union all
             select o.cancelled_on, l.sku, -l.units, -l.revenue_cents
             from {table} o
             cross join lateral jsonb_to_recordset(o.lines)
               as l(sku text, units bigint, revenue_cents bigint)
             where o.cancelled_on is not null and o.confirmed_on is not null
               and ($2::date is null or o.cancelled_on >= $2)
               and ($3::date is null or o.cancelled_on <= $3)
         )
         select day, sku, sum(units)::bigint as units, sum(revenue_cents)::bigint as revenue_cents
         from contributions
         where $1::text is null or sku = $1
         group by day, sku
         order by day desc, sku"
    )
});

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DailySalesQuery {
    /// Only this SKU.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub sku: Option<String>,
    /// The first UTC day, inclusive (YYYY-MM-DD).
    pub from: Option<NaiveDate>,
    /// The last UTC day, inclusive (YYYY-MM-DD); not before `from`.
    pub to: Option<NaiveDate>,
}

/// A SKU's net sales on one UTC day.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DailySales {
    /// The UTC day (YYYY-MM-DD).
    pub day: NaiveDate,
    pub sku: String,
    /// Units of orders confirmed that day, less those of confirmed orders
    /// cancelled that day.
    pub units: i64,
    /// Their revenue, in cents, likewise.
    pub revenue_cents: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DailySalesReport {
    /// Newest day first, then by SKU.
    pub items: Vec<DailySales>,
}

#[utoipa::path(get, path = "/v1/reports/daily-sales", tag = "reports", params(DailySalesQuery),
    responses(
        (status = 200, body = DailySalesReport),
        (status = 400, description = "bad SKU or date, or from after to", body = service_kit::http::ProblemBody, content_type = "application/problem+json")))]
pub async fn daily_sales(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<DailySalesQuery>,
) -> ApiResult<Json<DailySalesReport>> {
    check(&query)?;
    let items = sqlx::query_as::<_, DailySales>(sqlx::AssertSqlSafe(REPORT.as_str()))
        .bind(query.sku.as_deref())
        .bind(query.from)
        .bind(query.to)
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(DailySalesReport { items }))
}

fn check(query: &DailySalesQuery) -> Result<(), Problem> {
    if let Some(sku) = &query.sku
        && !domain::product::valid_sku(sku)
    {
        return Err(Problem::validation(
            StatusCode::BAD_REQUEST,
            "sku",
            "must match ^[A-Za-z0-9_-]{1,64}$",
        ));
    }
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from > to
    {
        return Err(Problem::validation(
            StatusCode::BAD_REQUEST,
            "from",
            format!("must not be after to ({to})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sku: Option<&str>, from: Option<&str>, to: Option<&str>) -> DailySalesQuery {
        let date = |d: &str| d.parse().unwrap();
        DailySalesQuery {
            sku: sku.map(str::to_owned),
            from: from.map(date),
            to: to.map(date),
        }
    }

    #[test]
    fn every_filter_is_optional_and_one_day_is_a_range() {
        assert!(check(&query(None, None, None)).is_ok());
        assert!(
            check(&query(
                Some("mug-1_A"),
                Some("2026-12-06"),
                Some("2026-12-06")
            ))
            .is_ok()
        );
    }

    #[test]
    fn a_bad_sku_or_from_after_to_is_refused() {
        assert!(check(&query(Some("no spaces"), None, None)).is_err());
        assert!(check(&query(Some(&"x".repeat(65)), None, None)).is_err());
        assert!(check(&query(None, Some("2026-12-07"), Some("2026-12-06"))).is_err());
    }
}
