//! The OpenAPI document, generated from the handlers' annotations,
//! completed from the route table by `service_kit::openapi` (security, the
//! standard refusals, the problem schema, the operational endpoints) and
//! served at `/openapi.json`.

use serde_json::Value;
use service_kit::openapi::{complete, with_operational};
use utoipa::OpenApi;

use crate::routes::{customers, orders, products, reports, sagas};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders-platform query-service",
        description = "The read side: orders, products, customers, sagas and the daily sales \
                       report from the read models. Single-aggregate reads take min_version=N to \
                       wait until the read model has caught up (504 if it does not in time). \
                       Errors are application/problem+json (RFC 9457)."
    ),
    paths(
        orders::get,
        orders::list,
        products::get,
        customers::get,
        sagas::list,
        sagas::get,
        reports::daily_sales,
    ),
    // Named by query parameters, which utoipa does not collect.
    components(schemas(
        domain::saga::SagaStatus,
        domain::saga::SagaStep,
        domain::order::OrderStatus
    ))
)]
struct ApiDoc;

/// The listener's document.
pub fn document() -> Value {
    complete(
        ApiDoc::openapi(),
        &with_operational(crate::routes().rules()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_covers_the_route_table() {
        let wrong =
            service_kit::openapi::check(&document(), &with_operational(crate::routes().rules()));
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn list_sizes_and_cursors_are_bounded_as_the_handlers_check_them() {
        let doc = document();
        for path in ["/v1/orders", "/v1/sagas"] {
            let parameters = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
            let limit = parameters.iter().find(|p| p["name"] == "limit").unwrap();
            assert_eq!(limit["schema"]["minimum"], 1, "{path}");
            assert_eq!(limit["schema"]["maximum"], 200, "{path}");
            let cursor = parameters.iter().find(|p| p["name"] == "cursor").unwrap();
            assert!(cursor["schema"]["pattern"].is_string(), "{path}");
        }
    }
}
