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
