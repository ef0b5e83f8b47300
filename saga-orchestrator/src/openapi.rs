//! The OpenAPI document of the operator API, generated from the handlers'
//! annotations, completed from the route table by `service_kit::openapi`
//! (security, the standard refusals, the problem schema, the operational
//! endpoints) and served at `/openapi.json`.

use serde_json::{Value, json};
use service_kit::openapi::{complete, with_operational};
use utoipa::OpenApi;

use crate::{api, bulk};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders-platform saga-orchestrator",
        description = "The operator's saga actions: retry one failed saga, or every failed saga \
                       a filter selects as a job, and follow the job. Errors are \
                       application/problem+json (RFC 9457)."
    ),
    paths(api::retry, bulk::start, bulk::status)
)]
struct ApiDoc;

/// The listener's document.
pub fn document() -> Value {
    let mut doc = complete(
        ApiDoc::openapi(),
        &with_operational(crate::api::routes().rules()),
    );
    // A bulk retry takes the saga list's filter, but only failed sagas are
    // retried: its `status` may only be `failed` (or left out).
    let schemas = &mut doc["components"]["schemas"];
    let mut filter = schemas["SagaFilter"].clone();
    filter["properties"]["status"] = json!({
        "type": ["string", "null"],
        "enum": ["failed", null],
        "description": "Only failed sagas are retried: `failed`, or left out."
    });
    filter["description"] = json!("The saga list's filter (GET /v1/sagas), of failed sagas.");
    schemas["BulkRetryFilter"] = filter;
    schemas["BulkRetry"]["properties"]["filter"] =
        json!({ "$ref": "#/components/schemas/BulkRetryFilter" });
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_covers_the_route_table() {
        let wrong = service_kit::openapi::check(
            &document(),
            &with_operational(crate::api::routes().rules()),
        );
        assert!(wrong.is_empty(), "{wrong:#?}");
        let doc = document();
        let body = &doc["components"]["schemas"]["BulkRetry"];
        assert_eq!(body["additionalProperties"], false, "{body}");
    }
}
