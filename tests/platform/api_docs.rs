//! Each listener's `/openapi.json` and `/docs` as their readers see them:
//! public (no token), and the page, in a real browser, shows that
//! listener's own document with everything it loads from the listener
//! itself.

use harness::browser::Browser;
use harness::platform::Platform;
use reqwest::StatusCode;
use serde_json::Value;

/// Each listener's URL and the title its document gives.
fn listeners(platform: &Platform) -> Vec<(String, &'static str)> {
    vec![
        (
            platform.command.url.clone(),
            "orders-platform command-service",
        ),
        (
            platform.command.internal_url.clone().expect("internal"),
            "orders-platform command-service: the saga's step API",
        ),
        (platform.query.url.clone(), "orders-platform query-service"),
        (
            platform.orchestrator_url().to_owned(),
            "orders-platform saga-orchestrator",
        ),
        (platform.projector.url.clone(), "orders-platform projector"),
    ]
}

#[tokio::test]
async fn every_listener_serves_its_document_and_page_without_a_token() {
    let platform = Platform::start().await;
    let anonymous = reqwest::Client::new();
    for (url, title) in listeners(&platform) {
        let response = anonymous
            .get(format!("{url}/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let doc: Value = response.json().await.unwrap();
        assert_eq!(doc["info"]["title"], title);
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        let page = anonymous.get(format!("{url}/docs")).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{url}/docs");
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let missing = anonymous
            .get(format!("{url}/docs/no-such-file.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn every_docs_page_shows_its_listeners_operations_from_its_own_origin() {
    let platform = Platform::start().await;
    let browser = Browser::start().await;
    for (url, title) in listeners(&platform) {
        browser.goto(&format!("{url}/docs")).await;
        browser
            .wait_for_text(".swagger-ui .info .title", title)
            .await;
        browser
            .patiently("the operations listed", || async {
                let operations = browser.find_all(".opblock").await?;
                anyhow::ensure!(!operations.is_empty(), "no operation shown yet");
                Ok(())
            })
            .await;
        let loaded = browser
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name);",
                vec![],
            )
            .await;
        let loaded: Vec<&str> = loaded
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            loaded.iter().any(|u| u.ends_with("/openapi.json")),
            "{loaded:?}"
        );
        for resource in loaded {
            assert!(
                resource.starts_with(&url),
                "{url}/docs loaded {resource} from elsewhere"
            );
        }
    }
    browser.screenshot("docs").await;
    browser.close().await;
}

/// Where `value` does not have the shape `schema` (within `doc`) gives it,
/// for the keywords the documents use: `$ref`, `type`, `enum`,
/// `properties` with `required` (and no field the schema does not name),
/// `items`, `oneOf`/`anyOf`/`allOf`, `minimum`/`maximum`. Enough to tell
/// whether an answer the document describes says what it says.
fn mismatches(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = doc.pointer(&reference[1..]).unwrap_or(&Value::Null);
        return mismatches(doc, target, value, at);
    }
    // allOf: one object with every branch's fields (each branch alone
    // names only some of them).
    if let Some(branches) = schema["allOf"].as_array() {
        let mut merged = serde_json::json!({ "type": "object", "properties": {}, "required": [] });
        for branch in branches {
            let branch = match branch["$ref"].as_str() {
                Some(reference) => doc.pointer(&reference[1..]).unwrap_or(&Value::Null),
                None => branch,
            };
            for (name, property) in branch["properties"].as_object().into_iter().flatten() {
                merged["properties"][name] = property.clone();
            }
            for name in branch["required"].as_array().into_iter().flatten() {
                merged["required"]
                    .as_array_mut()
                    .unwrap()
                    .push(name.clone());
            }
        }
        return mismatches(doc, &merged, value, at);
    }
    let mut wrong = Vec::new();
    for (keyword, all) in [("oneOf", false), ("anyOf", false)] {
        if let Some(options) = schema[keyword].as_array() {
            let fits = options
                .iter()
                .filter(|option| mismatches(doc, option, value, at).is_empty())
                .count();
            let ok = if all {
                fits == options.len()
            } else {
                fits >= 1
            };
            if !ok {
                wrong.push(format!("{at}: {value} fits no {keyword} of {schema}"));
            }
        }
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty()
        && !types
            .iter()
            .any(|t| *t == kind || (*t == "number" && kind == "integer"))
    {
        wrong.push(format!("{at}: {value} is not {types:?}"));
        return wrong;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        wrong.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(number) = value.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|min| number < min) {
            wrong.push(format!("{at}: {value} is below {}", schema["minimum"]));
        }
        if schema["maximum"].as_f64().is_some_and(|max| number > max) {
            wrong.push(format!("{at}: {value} is above {}", schema["maximum"]));
        }
    }
    if let (Some(object), Some(properties)) = (value.as_object(), schema["properties"].as_object())
    {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                wrong.push(format!("{at}: {name} is required and missing"));
            }
        }
        for (name, field) in object {
            match properties.get(name) {
                Some(property) => {
                    wrong.extend(mismatches(doc, property, field, &format!("{at}.{name}")))
                }
                None => wrong.push(format!("{at}.{name} is not in the document")),
            }
        }
    }
    if let (Some(items), Some(schema)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            wrong.extend(mismatches(doc, schema, item, &format!("{at}[{i}]")));
        }
    }
    wrong
}

/// `GET url` (with `client`) and where its answer differs from what
/// `doc` says `GET path` answers with that status.
async fn answers_as_documented(
    client: &reqwest::Client,
    doc: &Value,
    base: &str,
    path_template: &str,
    path: &str,
) -> Vec<String> {
    let response = client.get(format!("{base}{path}")).send().await.unwrap();
    let status = response.status().as_u16().to_string();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let documented = &doc["paths"][path_template]["get"]["responses"][&status];
    let schema = &documented["content"]["application/json"]["schema"];
    if !schema.is_object() {
        return vec![format!(
            "GET {path}: {status} is not documented with a JSON body"
        )];
    }
    mismatches(doc, schema, &body, &format!("GET {path}"))
}

#[tokio::test]
async fn real_answers_have_the_shapes_the_documents_give_them() {
    let platform = Platform::start().await;
    let client = &platform.client;
    let post = |path: &str, body: Value| {
        let url = format!("{}{path}", platform.command.url);
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.json::<Value>().await.unwrap()
        }
    };
    post(
        "/v1/products",
        serde_json::json!({"sku": "mug", "name": "Mug", "price_cents": 500, "initial_stock": 5}),
    )
    .await;
    let customer = post(
        "/v1/customers",
        serde_json::json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .await["customer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    post(
        &format!("/v1/customers/{customer}/deposits"),
        serde_json::json!({"amount_cents": 10_000}),
    )
    .await;
    let order = post(
        "/v1/orders",
        serde_json::json!({"customer_id": customer, "lines": [{"sku": "mug", "quantity": 2}],
                           "shipping_address": crate::write_api::address("GB")}),
    )
    .await["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    harness::eventually(
        std::time::Duration::from_secs(60),
        "the saga completed",
        || async {
            let saga: Value = client
                .get(format!("{}/v1/sagas/{order}", platform.query.url))
                .send()
                .await?
                .json()
                .await?;
            anyhow::ensure!(saga["status"] == "completed", "{saga}");
            Ok(())
        },
    )
    .await;

    let document = |base: String| async move {
        reqwest::get(format!("{base}/openapi.json"))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let command = document(platform.command.url.clone()).await;
    let query = document(platform.query.url.clone()).await;
    let projector = document(platform.projector.url.clone()).await;
    let mut wrong = Vec::new();
    for (doc, base, template, path) in [
        (
            &query,
            &platform.query.url,
            "/v1/sagas/{order_id}",
            format!("/v1/sagas/{order}"),
        ),
        (&query, &platform.query.url, "/v1/sagas", "/v1/sagas".into()),
        (
            &query,
            &platform.query.url,
            "/v1/orders/{id}",
            format!("/v1/orders/{order}"),
        ),
        (
            &query,
            &platform.query.url,
            "/v1/orders",
            "/v1/orders".into(),
        ),
        (
            &query,
            &platform.query.url,
            "/v1/customers/{id}",
            format!("/v1/customers/{customer}"),
        ),
        (
            &query,
            &platform.query.url,
            "/v1/products/{sku}",
            "/v1/products/mug".into(),
        ),
        (
            &query,
            &platform.query.url,
            "/v1/reports/daily-sales",
            "/v1/reports/daily-sales".into(),
        ),
        (
            &command,
            &platform.command.url,
            "/v1/orders/{id}/state",
            format!("/v1/orders/{order}/state"),
        ),
        (
            &command,
            &platform.command.url,
            "/v1/orders/{id}/trace",
            format!("/v1/orders/{order}/trace"),
        ),
        (
            &command,
            &platform.command.url,
            "/v1/streams/{stream_id}/events",
            format!("/v1/streams/saga-{order}/events"),
        ),
        (
            &projector,
            &platform.projector.url,
            "/v1/projections",
            "/v1/projections".into(),
        ),
    ] {
        wrong.extend(answers_as_documented(client, doc, base, template, &path).await);
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
