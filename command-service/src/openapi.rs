//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json`.

use utoipa::OpenApi;

use crate::routes::{customers, orders, products, steps, streams};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders-platform command-service",
        description = "The write side: commands, event history, time travel, and the saga's steps. \
                       Errors are application/problem+json. POSTs honour Idempotency-Key; commands on \
                       an existing aggregate honour If-Match."
    ),
    paths(
        products::create,
        products::restock,
        customers::register,
        customers::deposit,
        orders::place,
        orders::cancel,
        orders::state,
        streams::events,
        steps::reserve_inventory,
        steps::release_inventory,
        steps::charge_payment,
        steps::refund_payment,
        steps::create_shipment,
        steps::cancel_shipment,
        steps::confirm,
        steps::reject,
        steps::mark_cancelled,
    )
)]
pub struct ApiDoc;

pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
