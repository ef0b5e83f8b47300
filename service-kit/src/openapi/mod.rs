//! The OpenAPI document of a listener: each service writes what only it
//! knows (its operations, their bodies, bounds and business answers, with
//! utoipa's annotations) and [`complete`] adds what its route table and
//! this crate already decide, the same way for every listener:
//!
//! - the bearer scheme (a JWT), and on each operation the security its rule
//!   asks for: none for a `Public` route, otherwise the bearer token with
//!   401 and 403 (the guard in `auth::routes`);
//! - the refusals of the extractors in `http::extract`: 400 for a path,
//!   query or header that cannot be read, and for a JSON body also 413
//!   (over 1 MiB), 415 (not JSON) and 422 (wrong shape);
//! - what `http::limits` answers on every route: 500 `internal` and 503
//!   `timeout` or `overloaded`;
//! - the routes this crate serves itself, where the table has them: the
//!   operational endpoints (`ops`) and the document and its page (below).
//!
//! Every refusal is the one problem document schema (RFC 9457,
//! `application/problem+json`). [`routes`] serves the document at
//! `/openapi.json` and Swagger UI over it at `/docs` (`docs`), both public
//! as the contract says; [`check`] is what each service's test holds its
//! document to.

mod check;
mod docs;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{Method, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Map, Value, json};
use utoipa::PartialSchema;

use crate::auth::{Access, Role, RouteTable, Rule};
use crate::http::{FieldError, ProblemBody};

pub use check::check;
pub use docs::ASSETS;

/// Where each listener serves its document.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// Swagger UI over the document.
pub const PAGE_PATH: &str = "/docs";
/// The page's scripts and styles ([`ASSETS`]).
pub const ASSET_PATH: &str = "/docs/{file}";
/// The routes [`routes`] adds, all `GET` and public.
pub const PATHS: [&str; 3] = [DOCUMENT_PATH, PAGE_PATH, ASSET_PATH];

/// The security scheme's name in every document.
pub const BEARER: &str = "bearer";

/// A text that is not only white space: the domain refuses a name made of
/// spaces (`str::trim`), so the document says so with a character that is
/// not Unicode `White_Space`, listed as Rust's `char::is_whitespace` has
/// them (a regular expression's `\S` differs from it in some control
/// characters).
pub const NOT_BLANK: &str =
    "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// `/openapi.json` serving `document()` (made once, at the first request)
/// and `/docs`, all public, to merge into a listener's table.
pub fn routes<S: Clone + Send + Sync + 'static>(document: fn() -> Value) -> RouteTable<S> {
    let made: Arc<OnceLock<String>> = Arc::default();
    let serve_document = move || {
        let made = Arc::clone(&made);
        async move {
            let body = made.get_or_init(|| document().to_string()).clone();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    };
    let router = Router::new()
        .route(DOCUMENT_PATH, get(serve_document))
        .route(PAGE_PATH, get(docs::page))
        .route(ASSET_PATH, get(docs::asset));
    RouteTable::new().public(&PATHS, router)
}

/// The rules of a listener that also serves the operational endpoints
/// (every public listener does: `RouteTable::public(&ops::PATHS, ...)`).
pub fn with_operational(rules: &[Rule]) -> Vec<Rule> {
    let mut all = rules.to_vec();
    all.extend(crate::ops::PATHS.iter().map(|path| Rule {
        method: Method::GET,
        path,
        access: Access::Public,
    }));
    all
}

/// `doc` completed for the listener whose routes are `rules` (see the
/// module's documentation).
pub fn complete(doc: utoipa::openapi::OpenApi, rules: &[Rule]) -> Value {
    let mut doc = serde_json::to_value(doc).expect("an OpenAPI document is JSON");
    unsigned_bounds(&mut doc);
    add_own_paths(&mut doc, rules);
    add_components(&mut doc);
    order_tags(&mut doc);
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let rule = rules
                .iter()
                .find(|rule| rule.path == path && rule.method == method);
            if let Some(operation) = operation.as_object_mut() {
                complete_operation(operation, rule.map(|rule| rule.access));
            }
        }
    }
    doc
}

fn complete_operation(operation: &mut Map<String, Value>, access: Option<Access>) {
    not_null_parameters(operation);
    let reads = |place: &str| {
        operation
            .get("parameters")
            .and_then(Value::as_array)
            .is_some_and(|parameters| parameters.iter().any(|p| p["in"] == place))
    };
    let (path, query, header) = (reads("path"), reads("query"), reads("header"));
    let body = operation.contains_key("requestBody");
    let mut standard: Vec<(&str, &str)> = Vec::new();
    if path || query || header || body {
        standard.push(("400", "BadRequest"));
    }
    if body {
        standard.extend([
            ("413", "TooLarge"),
            ("415", "UnsupportedMediaType"),
            ("422", "Unprocessable"),
        ]);
    }
    if let Some(Access::Roles(roles)) = access {
        standard.extend([("401", "Unauthorized"), ("403", "Forbidden")]);
        operation.insert("security".into(), json!([{ BEARER: [] }]));
        let needs = format!("Needs a bearer token with the role {}.", who(roles));
        let description = match operation.get("description").and_then(Value::as_str) {
            Some(text) if !text.is_empty() => format!("{text}\n\n{needs}"),
            _ => needs,
        };
        operation.insert("description".into(), Value::String(description));
    } else {
        operation.remove("security");
    }
    standard.extend([("500", "Internal"), ("503", "Unavailable")]);
    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    for (status, name) in standard {
        responses
            .entry(status)
            .or_insert_with(|| json!({ "$ref": format!("#/components/responses/{name}") }));
    }
}

/// A path, query or header parameter is text or absent, never `null`:
/// utoipa writes an `Option` as "the type or null", which for a parameter
/// would ask clients to send the word `null`.
fn not_null_parameters(operation: &mut Map<String, Value>) {
    let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for parameter in parameters {
        let schema = &mut parameter["schema"];
        if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
            types.retain(|t| t != "null");
            if let [only] = types.as_slice() {
                schema["type"] = only.clone();
            }
        }
    }
}

/// utoipa writes an unsigned integer as `int32` or `int64` with a minimum
/// of 0, and `int32` reads as "at most 2^31 - 1" to a client: the largest
/// value the type really takes is said instead (where no bound is given),
/// with a format that says it.
fn unsigned_bounds(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let unsigned = map.get("type").is_some_and(|t| {
                t == "integer"
                    || t.as_array()
                        .is_some_and(|a| a.iter().any(|t| t == "integer"))
            }) && map.get("minimum").and_then(Value::as_u64) == Some(0)
                && !map.contains_key("maximum");
            if unsigned {
                match map.get("format").and_then(Value::as_str) {
                    Some("int32") => {
                        map.insert("format".into(), json!("uint32"));
                        map.insert("maximum".into(), json!(u32::MAX));
                    }
                    Some("int64") => {
                        map.insert("format".into(), json!("uint64"));
                        map.insert("maximum".into(), json!(u64::MAX));
                    }
                    _ => {}
                }
            }
            map.values_mut().for_each(unsigned_bounds);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_bounds),
        _ => {}
    }
}

/// The tags in the order the operations name them, this crate's own
/// (the document, the operational endpoints) last: Swagger UI shows them
/// in this order, the service's API first.
fn order_tags(doc: &mut Value) {
    const LAST: [&str; 2] = ["documentation", "operations"];
    let mut named: Vec<String> = Vec::new();
    for item in doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for operation in item.as_object().into_iter().flat_map(|i| i.values()) {
            for tag in operation["tags"].as_array().into_iter().flatten() {
                if let Some(tag) = tag.as_str()
                    && !named.iter().any(|t| t == tag)
                {
                    named.push(tag.to_owned());
                }
            }
        }
    }
    named.sort_by_key(|tag| LAST.iter().position(|last| last == tag));
    doc["tags"] = named
        .into_iter()
        .map(|name| json!({ "name": name }))
        .collect();
}

/// The roles a rule admits, in words.
fn who(roles: &[Role]) -> String {
    let names: Vec<String> = roles
        .iter()
        .map(|role| match role {
            Role::Customer => "customer (for their own data)".to_owned(),
            other => other.as_str().to_owned(),
        })
        .collect();
    match names.as_slice() {
        [one] => one.clone(),
        many => format!("one of: {}", many.join(", ")),
    }
}

/// The problem schema, the standard refusals and the bearer scheme.
fn add_components(doc: &mut Value) {
    let components = doc
        .as_object_mut()
        .expect("a document is an object")
        .entry("components")
        .or_insert_with(|| json!({}));
    let schemas = object(components, "schemas");
    schemas.insert(
        "ProblemBody".into(),
        serde_json::to_value(ProblemBody::schema()).expect("a schema is JSON"),
    );
    schemas.insert(
        "FieldError".into(),
        serde_json::to_value(FieldError::schema()).expect("a schema is JSON"),
    );
    let responses = object(components, "responses");
    for (name, description, headers) in [
        (
            "BadRequest",
            "`/problems/validation`: a path or query parameter, a header or the JSON body \
             cannot be read (malformed JSON), or a parameter holds U+0000, which no text \
             stored in PostgreSQL may; `errors` names the field",
            json!({}),
        ),
        (
            "Unauthorized",
            "`/problems/unauthorized`: no bearer token, or one that is malformed, expired, \
             signed by an untrusted key or meant for another audience",
            json!({ "WWW-Authenticate": {
                "description": "`Bearer`, with the reason",
                "schema": { "type": "string" }
            } }),
        ),
        (
            "Forbidden",
            "`/problems/forbidden`: the token's roles do not allow this request",
            json!({ "WWW-Authenticate": {
                "description": "`Bearer error=\"insufficient_scope\"`",
                "schema": { "type": "string" }
            } }),
        ),
        (
            "TooLarge",
            "`/problems/validation`: the body is over 1 MiB",
            json!({}),
        ),
        (
            "UnsupportedMediaType",
            "`/problems/validation`: the body is not `application/json`",
            json!({}),
        ),
        (
            "Unprocessable",
            "`/problems/validation`: the JSON body has the wrong shape (a wrong type, a \
             missing field, an unknown enum value), a value out of bounds, or a text holding \
             U+0000, which no text stored in PostgreSQL may; `errors` names the field",
            json!({}),
        ),
        (
            "Internal",
            "`/problems/internal`: a failure of the service's own, logged there",
            json!({}),
        ),
        (
            "Unavailable",
            "`/problems/timeout`: not answered within the listener's `REQUEST_TIMEOUT_MS` \
             (whether a write took effect is unknown: repeat it with the same \
             `Idempotency-Key`); `/problems/overloaded`: too many requests at once, with \
             `Retry-After`; `/problems/unavailable`: a dependency is not ready",
            json!({ "Retry-After": {
                "description": "seconds to wait before repeating the request",
                "schema": { "type": "integer", "minimum": 0 }
            } }),
        ),
    ] {
        let mut response = problem_response(description);
        if headers.as_object().is_some_and(|h| !h.is_empty()) {
            response["headers"] = headers;
        }
        responses.insert(name.into(), response);
    }
    object(components, "securitySchemes").insert(
        BEARER.into(),
        json!({
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A JWT signed by a trusted issuer's key (AUTH_JWKS_URL or \
                            AUTH_JWKS_FILE), for the audience AUTH_AUDIENCE, with the \
                            caller's roles in its `roles` claim (AUTH_ROLES_CLAIM)"
        }),
    );
}

/// A response whose body is a problem document.
pub fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": {
            "schema": { "$ref": "#/components/schemas/ProblemBody" }
        } }
    })
}

fn object<'a>(parent: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    parent
        .as_object_mut()
        .expect("an object")
        .entry(key)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("an object")
}

/// The operations of the routes this crate serves, where `rules` has them.
fn add_own_paths(doc: &mut Value, rules: &[Rule]) {
    let paths = object(doc, "paths");
    for rule in rules {
        if paths.contains_key(rule.path) {
            continue;
        }
        if let Some(operation) = own_operation(rule.path) {
            paths.insert(rule.path.into(), json!({ "get": operation }));
        }
    }
}

fn own_operation(path: &str) -> Option<Value> {
    let json_body = |description: &str, schema: Value| json!({ "description": description, "content": { "application/json": { "schema": schema } } });
    let operation = match path {
        "/health/live" => json!({
            "tags": ["operations"],
            "summary": "Liveness: 200 while the process runs",
            "operationId": "health_live",
            "responses": { "200": json_body("the process runs", json!({
                "type": "object",
                "required": ["status"],
                "properties": { "status": { "type": "string", "enum": ["live"] } }
            })) }
        }),
        "/health/ready" => {
            let readiness = json!({
                "type": "object",
                "required": ["status", "down", "checks", "stalled"],
                "properties": {
                    "status": { "type": "string" },
                    "down": { "type": "array", "items": { "type": "string" },
                              "description": "the dependencies down and the workers stalled" },
                    "checks": { "type": "object" },
                    "stalled": { "type": "array", "items": { "type": "object" } }
                }
            });
            json!({
                "tags": ["operations"],
                "summary": "Readiness: PostgreSQL and Kafka answer and no worker is stalled",
                "description": "The answer may be up to 1 s old.",
                "operationId": "health_ready",
                "responses": {
                    "200": json_body("ready", readiness.clone()),
                    // The listener's own 503s (a timeout, an overload) are
                    // problems, like everywhere else.
                    "503": {
                        "description": "not ready: `down` names what is down or stalled \
                                        (or the listener's `/problems/timeout` or \
                                        `/problems/overloaded`)",
                        "content": {
                            "application/json": { "schema": readiness },
                            "application/problem+json": {
                                "schema": { "$ref": "#/components/schemas/ProblemBody" }
                            }
                        }
                    }
                }
            })
        }
        "/metrics" => json!({
            "tags": ["operations"],
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "responses": { "200": {
                "description": "the process's metrics, in Prometheus's text format \
                                (OpenMetrics when the scraper asks for it)",
                "content": {
                    "text/plain": { "schema": { "type": "string" } },
                    "application/openmetrics-text": { "schema": { "type": "string" } }
                }
            } }
        }),
        DOCUMENT_PATH => json!({
            "tags": ["documentation"],
            "summary": "This document",
            "operationId": "openapi_document",
            "responses": { "200": json_body("the OpenAPI document of this listener", json!({ "type": "object" })) }
        }),
        PAGE_PATH => json!({
            "tags": ["documentation"],
            "summary": "Swagger UI over this document",
            "operationId": "docs_page",
            "responses": { "200": {
                "description": "the page",
                "content": { "text/html": { "schema": { "type": "string" } } }
            } }
        }),
        ASSET_PATH => json!({
            "tags": ["documentation"],
            "summary": "A script or style of the Swagger UI page",
            "operationId": "docs_asset",
            "parameters": [{
                "name": "file",
                "in": "path",
                "required": true,
                "schema": { "type": "string", "enum": ASSETS }
            }],
            "responses": {
                "200": {
                    "description": "the file",
                    "content": {
                        "text/css": { "schema": { "type": "string" } },
                        "text/javascript": { "schema": { "type": "string" } }
                    }
                },
                "404": problem_response("`/problems/not-found`: no such file")
            }
        }),
        _ => return None,
    };
    Some(operation)
}
