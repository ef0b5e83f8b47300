//! The OpenAPI documents of the two listeners, generated from the handlers'
//! annotations and completed from each listener's route table by
//! `service_kit::openapi` (security, the standard refusals, the problem
//! schema, the operational endpoints): [`public`] at the public listener's
//! `/openapi.json`, [`internal`] (the step API) at the internal one's.

use domain::saga::SagaStep;
use domain::saga::api::header;
use serde_json::{Value, json};
use service_kit::openapi::{complete, problem_response, with_operational};
use utoipa::OpenApi;

use crate::routes::{customers, orders, products, steps, streams, trace};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders-platform command-service",
        description = "The write side: commands, event history, time travel and an order's \
                       causal trace. Errors are application/problem+json (RFC 9457). POSTs honour \
                       Idempotency-Key; commands honour If-Match."
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
struct PublicApi;

#[derive(OpenApi)]
#[openapi(info(
    title = "orders-platform command-service: the saga's step API",
    description = "Served only on the internal listener (INTERNAL_HTTP_ADDR) and only to the \
                   `service` role: the saga-orchestrator's calls. Each call takes effect only \
                   when the saga's stream at X-Saga-Version says it is that action's turn. \
                   Errors are application/problem+json (RFC 9457)."
))]
struct InternalApi;

/// The public listener's document.
pub fn public() -> Value {
    let mut doc = complete(
        PublicApi::openapi(),
        &with_operational(crate::routes().rules()),
    );
    for_each_post(&mut doc, |operation| {
        idempotency_key(operation);
        if_match(operation);
    });
    doc
}

/// The internal listener's document: the step API.
pub fn internal() -> Value {
    let mut doc = InternalApi::openapi();
    doc.merge(steps::openapi());
    let mut doc = complete(doc, crate::internal_routes().rules());
    // Steps read the request's context too, `If-Match` included.
    for_each_post(&mut doc, if_match);
    next_step_only_where_one_follows(&mut doc);
    doc
}

/// `X-Saga-Next-Step` names the step that follows a forward step, and only
/// that one; every other action refuses it (400, `steps::call`), so it is
/// documented only where it is taken, with the one value it takes.
fn next_step_only_where_one_follows(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let follows = SagaStep::ALL
            .into_iter()
            .find(|step| step.spec().run.route == path)
            .and_then(SagaStep::next);
        let Some(parameters) = item
            .get_mut("post")
            .and_then(|post| post.get_mut("parameters"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        let named = |parameter: &Value, name: &str| {
            parameter["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        };
        match follows {
            Some(next) => {
                for parameter in parameters
                    .iter_mut()
                    .filter(|p| named(p, header::NEXT_STEP))
                {
                    parameter["schema"] = json!({ "type": "string", "enum": [next.as_str()] });
                }
            }
            None => parameters
                .retain(|p| !named(p, header::NEXT_STEP) && !named(p, header::NEXT_ATTEMPT)),
        }
    }
}

fn for_each_post(doc: &mut Value, mut change: impl FnMut(&mut Value)) {
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            if let Some(operation) = item.get_mut("post") {
                change(operation);
            }
        }
    }
}

fn add_parameter(operation: &mut Value, parameter: Value) {
    match operation["parameters"].as_array_mut() {
        Some(parameters) => parameters.push(parameter),
        None => operation["parameters"] = json!([parameter]),
    }
}

/// `Idempotency-Key` (`http::idempotency`, on every public POST): a repeat
/// answers as the first; the key with another body is 422; a repeat while
/// the first is being handled waits, then 409 `busy`.
fn idempotency_key(operation: &mut Value) {
    add_parameter(
        operation,
        json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "Repeating the request with the same key and body answers as the \
                            first did (same status and body, with `Idempotent-Replayed: true`) \
                            without running it again, whatever its other headers; the same key \
                            with another body is 422 `idempotency-key-reused`. Keys are the \
                            caller's own and kept at least 24 hours.",
            // What the middleware takes: 1 to 255 visible ASCII characters
            // (spaces inside; a header's own leading and trailing blanks are
            // not part of its value).
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[!-~]([\\t -~]*[!-~])?$"
            }
        }),
    );
    let responses = &mut operation["responses"];
    if responses.get("409").is_none() {
        responses["409"] = problem_response(
            "`/problems/conflict`, with `Retry-After`: a request with this Idempotency-Key is \
             still being handled, or the streams it changes kept changing; repeat it later",
        );
    }
}

/// `If-Match` (`http::context`): the command takes effect only at that
/// version of its stream, else 412 and nothing is written.
fn if_match(operation: &mut Value) {
    add_parameter(
        operation,
        json!({
            "name": "If-Match",
            "in": "header",
            "required": false,
            "description": "The stream version (as in ETag) the command must find, for example \
                            \"3\"; another version is 412 `precondition-failed` and nothing is \
                            written.",
            "schema": { "type": "string", "pattern": "^(W/)?\"?[0-9]{1,19}\"?$" }
        }),
    );
    let responses = &mut operation["responses"];
    if responses.get("412").is_none() {
        responses["412"] = problem_response(
            "`/problems/precondition-failed`: the stream is not at the version `If-Match` names; \
             nothing was written",
        );
    }
}

#[cfg(test)]
mod tests {
    use domain::saga::{SagaStep, api};
    use serde_json::Value;

    use super::*;

    #[test]
    fn each_listener_documents_every_route_of_its_table() {
        let wrong =
            service_kit::openapi::check(&public(), &with_operational(crate::routes().rules()));
        assert!(wrong.is_empty(), "public listener: {wrong:#?}");
        let wrong = service_kit::openapi::check(&internal(), crate::internal_routes().rules());
        assert!(wrong.is_empty(), "internal listener: {wrong:#?}");
        // The public document has no step API, and the other way round.
        let public = public();
        let paths = public["paths"].as_object().unwrap();
        assert!(paths.keys().all(|path| !path.starts_with("/internal/")));
        assert!(paths.contains_key("/v1/orders"));
        let internal = internal();
        let paths = internal["paths"].as_object().unwrap();
        assert!(paths.keys().all(|path| !path.starts_with("/v1/")));
    }

    #[test]
    fn every_post_takes_an_idempotency_key_and_if_match() {
        let doc = public();
        let mut posts = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            let Some(post) = item.get("post") else {
                continue;
            };
            posts += 1;
            let names: Vec<&str> = post["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert!(names.contains(&"Idempotency-Key"), "{path}");
            assert!(names.contains(&"If-Match"), "{path}");
            for status in ["400", "409", "412", "413", "415", "422"] {
                assert!(post["responses"][status].is_object(), "{path} {status}");
            }
        }
        assert_eq!(posts, 6);
    }

    #[test]
    fn every_step_api_route_is_described_with_what_it_may_answer() {
        let doc = internal();
        let rules: Vec<_> = crate::internal_routes()
            .rules()
            .iter()
            .filter(|rule| rule.path.starts_with("/internal/"))
            .cloned()
            .collect();
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
            let step = SagaStep::ALL
                .into_iter()
                .find(|step| step.spec().run.route == rule.path);
            // A business refusal is 422 with its problem type; every step
            // documents 422 anyway if it reads a body.
            if step.is_some() {
                let refusal = responses["422"]["description"].as_str().unwrap_or("");
                assert!(refusal.contains("/problems/"), "{}: {refusal}", rule.path);
            }
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
        let schema = match schema["$ref"].as_str() {
            Some(reference) => doc.pointer(&reference[1..]).unwrap(),
            None => schema,
        };
        assert!(schema["properties"]["appended"].is_object(), "{done}");
    }
}
