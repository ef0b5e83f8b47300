//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json`.

use utoipa::OpenApi;

use crate::routes::{customers, orders, products, reports, sagas};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders-platform query-service",
        description = "The read side: orders, products, customers, sagas and the daily sales \
                       report from the read models. Single-aggregate reads take min_version=N to \
                       wait until the read model has caught up (504 if it does not in time). \
                       Errors are application/problem+json."
    ),
    paths(
        orders::get,
        orders::list,
        products::get,
        customers::get,
        sagas::list,
        sagas::get,
        reports::daily_sales,
    )
)]
pub struct ApiDoc;

pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
