//! What every listener's document must say of its route table; each
//! service's test calls [`check`] with its own table.

use axum::http::Method;
use serde_json::Value;

use super::BEARER;
use crate::auth::{Access, Rule};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// What is wrong with `doc` as the document of a listener serving
/// `rules`, empty when nothing is: every route is an operation with its
/// method and every operation a route; an operation that needs a token
/// declares the bearer scheme and documents 401 and 403, a public one
/// declares no security; every problem answer is a problem document; and
/// every `$ref` resolves.
pub fn check(doc: &Value, rules: &[Rule]) -> Vec<String> {
    let mut wrong = Vec::new();
    let scheme = &doc["components"]["securitySchemes"][BEARER];
    if scheme["type"] != "http" || scheme["scheme"] != "bearer" {
        wrong.push(format!("no bearer scheme named {BEARER:?}: {scheme}"));
    }
    for rule in rules {
        let operation = &doc["paths"][rule.path][rule.method.as_str().to_lowercase()];
        if !operation.is_object() {
            wrong.push(format!("{} {} is not documented", rule.method, rule.path));
            continue;
        }
        wrong.extend(
            check_operation(doc, operation, rule.access)
                .into_iter()
                .map(|what| format!("{} {}: {what}", rule.method, rule.path)),
        );
    }
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
                let method: Method = method.to_uppercase().parse().expect("a method");
                if !rules.iter().any(|r| r.path == path && r.method == method) {
                    wrong.push(format!("{method} {path} is documented but not served"));
                }
            }
        }
    }
    let mut refs = Vec::new();
    references(doc, &mut refs);
    for reference in refs {
        if resolve(doc, &reference).is_none() {
            wrong.push(format!("{reference} does not resolve"));
        }
    }
    wrong
}

fn check_operation(doc: &Value, operation: &Value, access: Access) -> Vec<String> {
    let mut wrong = Vec::new();
    let responses = &operation["responses"];
    let security = operation["security"].as_array();
    match access {
        Access::Roles(_) => {
            let bearer = security.is_some_and(|all| all.iter().any(|s| s.get(BEARER).is_some()));
            if !bearer {
                wrong.push("needs a token but does not declare the bearer scheme".into());
            }
            for status in ["401", "403"] {
                if responses.get(status).is_none() {
                    wrong.push(format!("needs a token but does not document {status}"));
                }
            }
        }
        Access::Public => {
            if security.is_some_and(|all| !all.is_empty()) {
                wrong.push("is public but declares security".into());
            }
        }
    }
    if let Some(responses) = responses.as_object() {
        for (status, response) in responses {
            let is_refusal = status.starts_with('4') || status.starts_with('5');
            let response = match response.get("$ref").and_then(Value::as_str) {
                Some(reference) => resolve(doc, reference).unwrap_or(&Value::Null),
                None => response,
            };
            if is_refusal
                && response["content"]
                    .get("application/problem+json")
                    .is_none()
            {
                wrong.push(format!("{status} is not a problem document"));
            }
        }
    }
    wrong
}

/// Every `$ref` in `value`.
fn references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => found.push(reference.clone()),
                    _ => references(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| references(item, found)),
        _ => {}
    }
}

/// What a local `$ref` (`#/a/b`) points at.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::auth::Access;

    fn rule(method: Method, path: &'static str, access: Access) -> Rule {
        Rule {
            method,
            path,
            access,
        }
    }

    #[test]
    fn a_completed_document_passes_and_gaps_are_named() {
        let rules = vec![
            rule(Method::GET, "/v1/things/{id}", Access::READ),
            rule(Method::GET, "/v1/catalogue", Access::Public),
        ];
        let mut doc = utoipa::openapi::OpenApi::default();
        let written = json!({
            "/v1/things/{id}": { "get": {
                "parameters": [{ "name": "id", "in": "path", "required": true,
                                 "schema": { "type": "string" } }],
                "responses": { "200": { "description": "a thing" } }
            } },
            "/v1/catalogue": { "get": { "responses": { "200": { "description": "all" } } } }
        });
        doc.paths = serde_json::from_value(written).unwrap();
        let completed = super::super::complete(doc, &rules);
        assert_eq!(check(&completed, &rules), Vec::<String>::new());
        let thing = &completed["paths"]["/v1/things/{id}"]["get"];
        for status in ["400", "401", "403", "500", "503"] {
            assert!(thing["responses"][status].is_object(), "{status}");
        }
        assert!(completed["paths"]["/v1/catalogue"]["get"]["security"].is_null());

        let mut gaps = completed.clone();
        gaps["paths"]["/v1/things/{id}"]["get"]["responses"]
            .as_object_mut()
            .unwrap()
            .remove("401");
        gaps["paths"]["/v1/things/{id}"]["get"]["responses"]["418"] =
            json!({ "$ref": "#/components/responses/Teapot" });
        let mut more = rules.clone();
        more.push(rule(Method::POST, "/v1/things", Access::WRITE));
        let wrong = check(&gaps, &more);
        assert!(
            wrong.iter().any(|w| w.contains("does not document 401")),
            "{wrong:?}"
        );
        assert!(
            wrong.iter().any(|w| w.contains("Teapot does not resolve")),
            "{wrong:?}"
        );
        assert!(
            wrong
                .iter()
                .any(|w| w.contains("POST /v1/things is not documented")),
            "{wrong:?}"
        );
    }
}
