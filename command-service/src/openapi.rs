//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json`.

use utoipa::OpenApi;

use crate::routes::{customers, orders, products, steps, streams, trace};

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
        trace::trace,
    )
)]
pub struct ApiDoc;

/// The whole document: the public API and the step API.
pub fn api() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(steps::openapi());
    doc
}

pub async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(api())
}

#[cfg(test)]
mod tests {
    use domain::saga::{SagaStep, api};
    use serde_json::Value;

    use super::*;

    #[test]
    fn every_step_api_route_is_described_with_what_it_may_answer() {
        let doc = serde_json::to_value(api()).unwrap();
        let rules = crate::internal_routes().rules().to_vec();
        // Every action of every step in the domain's table has its handler,
        // and the saga's endings theirs: a step added to the table without
        // one fails here.
        let mut served: Vec<&str> = rules.iter().map(|rule| rule.path).collect();
        let mut actions: Vec<&str> = SagaStep::ALL
            .iter()
            .flat_map(|step| [Some(step.spec().run), step.spec().undo])
            .flatten()
            .chain([api::CONFIRM, api::REJECT, api::MARK_CANCELLED])
            .map(|action| action.route)
            .collect();
        served.sort_unstable();
        actions.sort_unstable();
        assert_eq!(served, actions);
        for rule in rules {
            let operation = &doc["paths"][rule.path][rule.method.as_str().to_lowercase()];
            assert!(
                operation.is_object(),
                "{} {} undocumented",
                rule.method,
                rule.path
            );
            let responses = operation["responses"].as_object().unwrap();
            for status in ["200", "400", "401", "403", "404", "409"] {
                assert!(
                    responses.contains_key(status),
                    "{} lacks {status}",
                    rule.path
                );
            }
            let refuses = responses.contains_key("422");
            let step = SagaStep::ALL
                .into_iter()
                .find(|step| step.spec().run.route == rule.path);
            assert_eq!(refuses, step.is_some(), "{}", rule.path);
            assert_eq!(operation["tags"][0], "saga steps");
            let headers: Vec<&Value> = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "header")
                .collect();
            assert!(
                headers
                    .iter()
                    .any(|h| h["name"] == "X-Saga-Version" && h["required"] == true)
            );
        }
        let done = &doc["paths"]["/internal/v1/orders/{id}/confirm"]["post"]["responses"]["200"];
        let schema = &done["content"]["application/json"]["schema"];
        assert!(schema["properties"]["appended"].is_object(), "{done}");
    }
}
