//! The OpenAPI document of the projector's API, generated from the
//! handlers' annotations, completed from the route table by
//! `service_kit::openapi` (security, the standard refusals, the problem
//! schema, the operational endpoints) and served at `/openapi.json`.

use serde_json::{Value, json};
use service_kit::openapi::{complete, with_operational};
use utoipa::OpenApi;

use crate::api;
use crate::views::Projection;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders-platform projector",
        description = "The read models' status and their rebuilds. Errors are \
                       application/problem+json (RFC 9457)."
    ),
    paths(api::list, api::rebuild)
)]
struct ApiDoc;

/// The listener's document.
pub fn document() -> Value {
    let mut doc = complete(
        ApiDoc::openapi(),
        &with_operational(crate::api::routes().rules()),
    );
    // The projections a rebuild may name are `Projection::ALL`.
    let names: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
    if let Some(parameters) =
        doc["paths"]["/v1/projections/{name}/rebuild"]["post"]["parameters"].as_array_mut()
    {
        for parameter in parameters.iter_mut().filter(|p| p["name"] == "name") {
            parameter["schema"] = json!({ "type": "string", "enum": names });
        }
    }
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
        let name = &doc["paths"]["/v1/projections/{name}/rebuild"]["post"]["parameters"][0];
        assert_eq!(
            name["schema"]["enum"].as_array().map(Vec::len),
            Some(Projection::ALL.len())
        );
    }
}
