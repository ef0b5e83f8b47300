//! The operator console in a real browser (headless Chromium through
//! chromedriver, `harness::browser`), served by the gateway in front of
//! the whole platform, as an operator would use it: sign in with a token,
//! find the failed sagas, see why one failed, retry it, follow an order's
//! causal trace, bulk-retry the rest after a dry run, rebuild a
//! projection. And what users typed is shown as text and never runs.
//!
//! Each page is saved as a PNG under the target directory
//! (`console-screenshots/`), checked not to be blank.

use std::collections::BTreeSet;
use std::time::Duration;

use harness::auth;
use harness::browser::Browser;
use harness::eventually;
use harness::gateway::Gateway;
use harness::platform::Platform;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(90);

/// Sets the platform up as its users would, over its own ports.
struct Setup<'a>(&'a Platform);

impl Setup<'_> {
    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .0
            .client
            .post(format!("{}{path}", self.0.command.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    async fn product(&self, sku: &str, price_cents: i64, stock: i64) {
        self.post(
            "/v1/products",
            json!({"sku": sku, "name": sku, "price_cents": price_cents, "initial_stock": stock}),
        )
        .await;
    }

    async fn customer(&self, name: &str, deposit: i64) -> String {
        let body = self
            .post(
                "/v1/customers",
                json!({"name": name, "email": "eve@example.com"}),
            )
            .await;
        let id = body["customer_id"].as_str().unwrap().to_owned();
        self.post(
            &format!("/v1/customers/{id}/deposits"),
            json!({"amount_cents": deposit}),
        )
        .await;
        id
    }

    async fn place(&self, customer: &str, sku: &str, name: &str, country: &str) -> String {
        let body = self
            .post(
                "/v1/orders",
                json!({"customer_id": customer, "lines": [{"sku": sku, "quantity": 1}],
                       "shipping_address": {"name": name, "line1": "1 Analytical Way",
                                            "city": "London", "postal_code": "N1",
                                            "country": country}}),
            )
            .await;
        body["order_id"].as_str().unwrap().to_owned()
    }

    async fn saga_becomes(&self, order_id: &str, status: &str) {
        let url = format!("{}/v1/sagas/{order_id}", self.0.query.url);
        eventually(SETTLE, &format!("saga {order_id} {status}"), || async {
            let response = self.0.client.get(&url).send().await?;
            anyhow::ensure!(response.status() == StatusCode::OK, "{}", response.status());
            let saga: Value = response.json().await?;
            anyhow::ensure!(saga["status"] == status, "{}", saga["status"]);
            Ok(())
        })
        .await;
    }
}

/// `(data-order-id, data-status)` of each row of the saga list shown.
async fn listed(browser: &Browser) -> Vec<(String, String)> {
    let rows = browser
        .execute(
            "return Array.from(document.querySelectorAll('#saga-list tbody tr'))
                 .map((row) => [row.dataset.orderId, row.dataset.status]);",
            vec![],
        )
        .await;
    serde_json::from_value(rows).unwrap()
}

/// Saves the page as `name` (not blank: `harness::browser` checks) and
/// checks that nothing on it is a value the page failed to draw.
async fn shot(browser: &Browser, name: &str) {
    browser.screenshot(name).await;
    let text = browser
        .execute("return document.body.innerText;", vec![])
        .await;
    let text = text.as_str().unwrap_or_default();
    for slip in ["undefined", "[object Object]", "NaN", "Invalid Date"] {
        assert!(!text.contains(slip), "{name} shows {slip}: {text}");
    }
    assert!(
        !text.lines().any(|line| line.trim() == "null"),
        "{name} shows a bare null: {text}"
    );
}

async fn sign_in(browser: &Browser, console: &str, token: &str) {
    browser.goto(console).await;
    browser.type_into("#token", token).await;
    browser.click("#sign-in-button").await;
}

#[tokio::test]
async fn an_operator_finds_explains_and_retries_failed_sagas_in_the_console() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(&platform).await;
    let setup = Setup(&platform);
    setup.product("vase", 1_500, 10).await;
    let customer = setup.customer("Ada", 10_000).await;
    let completed = setup.place(&customer, "vase", "Ada", "GB").await;
    setup.saga_becomes(&completed, "completed").await;
    // Brazil is not served: each refund must run, and keeps failing.
    platform.proxy.fail(&["refund-payment"]);
    let mut failed = Vec::new();
    for _ in 0..3 {
        failed.push(setup.place(&customer, "vase", "Ada", "BR").await);
    }
    for order in &failed {
        setup.saga_becomes(order, "failed").await;
    }

    let browser = Browser::start().await;
    let console = format!("{}/console/", gateway.url);
    browser.goto(&console).await;
    browser
        .type_into("#token", &auth::token("operator", "test-operator"))
        .await;
    shot(&browser, "sign-in").await;
    browser.click("#sign-in-button").await;
    browser.wait_for_text("#who", "test-operator").await;
    browser.wait_for("#saga-list").await;
    shot(&browser, "sagas").await;

    // Paged by the server: two pages of two, newest first.
    browser.goto(&format!("{console}#/sagas?limit=2")).await;
    let first_page = eventually(SETTLE, "a first page of two", || async {
        let rows = listed(&browser).await;
        anyhow::ensure!(rows.len() == 2, "{rows:?}");
        Ok(rows)
    })
    .await;
    browser.click("#next-page").await;
    let second_page = eventually(SETTLE, "a second page of two", || async {
        let rows = listed(&browser).await;
        anyhow::ensure!(rows.len() == 2 && rows != first_page, "{rows:?}");
        Ok(rows)
    })
    .await;
    browser.wait_for("#first-page").await;
    assert!(
        browser.find("#next-page").await.is_err(),
        "the last page has no next"
    );
    let mut all: Vec<String> = first_page
        .iter()
        .chain(&second_page)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        all[3], completed,
        "newest first: the completed one was placed first"
    );
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "every saga once");
    browser.goto(&format!("{console}#/sagas")).await;

    // The failed ones, filtered by the server.
    browser.click("#filter-status option[value=failed]").await;
    browser.click("#apply-filter").await;
    let shown = eventually(SETTLE, "the failed sagas listed", || async {
        let rows = listed(&browser).await;
        anyhow::ensure!(
            rows.len() == 3 && rows.iter().all(|(_, status)| status == "failed"),
            "{rows:?}"
        );
        Ok(rows)
    })
    .await;
    let shown: BTreeSet<String> = shown.into_iter().map(|(id, _)| id).collect();
    assert_eq!(shown, failed.iter().cloned().collect());
    assert!(browser.url().await.contains("status=failed"));
    shot(&browser, "sagas-failed").await;

    // One of them: its steps, attempts, error and timeline.
    let first = &failed[0];
    browser
        .click(&format!(
            "#saga-list tr[data-order-id='{first}'] a.saga-link"
        ))
        .await;
    browser.wait_for_text("#saga-status", "failed").await;
    browser
        .wait_for_text("#saga-failure", "refund-payment")
        .await;
    let steps = browser.wait_for_text("#steps", "compensation_failed").await;
    assert!(steps.contains("refund-payment"), "{steps}");
    let attempts = browser.wait_for_text("#attempts", "undo").await;
    assert!(attempts.contains("failed"), "{attempts}");
    let timeline = browser
        .wait_for_text("#timeline", "step compensation failed")
        .await;
    assert!(timeline.contains("retry scheduled"), "{timeline}");
    assert!(timeline.contains("saga failed"), "{timeline}");
    browser.wait_for_text("#saga-now", "An operator").await;
    shot(&browser, "saga-failed").await;

    // Fixed, then retried from the page: the compensation completes.
    platform.proxy.heal();
    browser.click("#retry-saga").await;
    browser.wait_for_text("#notice", "Retry requested").await;
    browser.wait_for_text("#saga-status", "compensated").await;
    let timeline = browser
        .wait_for_text("#timeline", "saga retry requested")
        .await;
    assert!(timeline.contains("saga compensated"), "{timeline}");
    browser.wait_for_text("#saga-now", "Nothing").await;
    shot(&browser, "saga-retried").await;

    // The order's causal trace: its charge, in the customer's stream,
    // caused by an earlier event of the same trace.
    browser.click("#trace-link").await;
    browser
        .wait_for("#trace li[data-type='OrderPlaced'].depth-0")
        .await;
    let charge = browser
        .wait_for(&format!(
            "#trace li[data-type='PaymentCharged'][data-stream='customer-{customer}']"
        ))
        .await;
    let charge = browser.text(&charge).await.unwrap();
    assert!(charge.contains(&format!("customer-{customer}")), "{charge}");
    assert!(charge.contains("caused by #"), "{charge}");
    let refund = browser
        .wait_for(&format!(
            "#trace li[data-type='PaymentRefunded'][data-stream='customer-{customer}']"
        ))
        .await;
    assert!(browser.text(&refund).await.unwrap().contains("caused by #"));
    shot(&browser, "trace").await;

    // The other two at once: a dry run first, then the job.
    browser
        .goto(&format!("{console}#/sagas?status=failed"))
        .await;
    eventually(SETTLE, "two failed sagas left", || async {
        let rows = listed(&browser).await;
        anyhow::ensure!(rows.len() == 2, "{rows:?}");
        Ok(())
    })
    .await;
    browser.click("#bulk-dry-run").await;
    browser
        .wait_for_text("#bulk-count", "2 failed sagas match")
        .await;
    let sample = browser.wait_for_text("#bulk-sample", &failed[1]).await;
    assert!(sample.contains(&failed[2]), "{sample}");
    shot(&browser, "bulk-dry-run").await;
    browser.click("#bulk-run").await;
    browser.wait_for_text("#notice", "Bulk retry started").await;
    assert!(browser.url().await.contains("#/jobs/"));
    browser.wait_for_text("#job-status", "done").await;
    browser.wait_for_text("#job-left-failed", "2 of 2").await;
    let left = browser
        .execute(
            "return Array.from(document.querySelectorAll('#job-items tbody tr'))
                 .map((row) => [row.dataset.orderId, row.dataset.leftFailed]);",
            vec![],
        )
        .await;
    let left: BTreeSet<(String, String)> = serde_json::from_value(left).unwrap();
    let expected: BTreeSet<(String, String)> = failed[1..]
        .iter()
        .map(|id| (id.clone(), "yes".to_owned()))
        .collect();
    assert_eq!(left, expected);
    shot(&browser, "bulk-job").await;
    for order in &failed {
        setup.saga_becomes(order, "compensated").await;
    }

    // Projections, and a rebuild from the page.
    browser.goto(&format!("{console}#/projections")).await;
    browser.wait_for_text("#projections", "live").await;
    browser
        .click("#projections button.rebuild[data-name='sagas']")
        .await;
    browser
        .wait_for_text("#notice", "Rebuild of sagas started")
        .await;
    shot(&browser, "projections").await;

    let refused: Vec<String> = browser
        .console_messages()
        .await
        .into_iter()
        .filter(|line| line.contains("Content Security Policy"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");

    // Signing out forgets the token.
    browser.click("#sign-out").await;
    browser.wait_for("#sign-in:not([hidden])").await;
    let kept = browser
        .execute("return sessionStorage.length;", vec![])
        .await;
    assert_eq!(kept, 0);
    browser.close().await;
}

/// Typed by users: a customer's name, an address, a cancel reason.
const NAME: &str = r#"<img src=x onerror="window.__xss=1">Eve"#;
const SHIP_TO: &str = "<script>window.__xss=1</script>";
const REASON: &str = r#"<script>window.__xss=1</script> <img src=x onerror="window.__xss=1">"#;

#[tokio::test]
async fn markup_that_users_typed_is_shown_as_text_and_runs_nothing() {
    let platform = Platform::start().await;
    let gateway = Gateway::start(&platform).await;
    let setup = Setup(&platform);
    setup.product("mug", 800, 5).await;
    let customer = setup.customer(NAME, 5_000).await;
    let order = setup.place(&customer, "mug", SHIP_TO, "GB").await;
    setup.saga_becomes(&order, "completed").await;
    setup
        .post(
            &format!("/v1/orders/{order}/cancel"),
            json!({"reason": REASON}),
        )
        .await;
    setup.saga_becomes(&order, "compensated").await;

    let browser = Browser::start().await;
    let console = format!("{}/console/", gateway.url);

    // A token the API refuses is explained, with a way back.
    sign_in(&browser, &console, "not-a-token").await;
    let problem = browser.wait_for_text(".problem", "401").await;
    assert!(problem.contains("Sign in again"), "{problem}");
    shot(&browser, "unauthorized").await;
    browser.click("#sign-out").await;

    // A reader may look.
    sign_in(&browser, &console, &auth::token("reader", "test-reader")).await;
    browser.wait_for("#saga-list").await;
    browser.goto(&format!("{console}#/sagas/{order}")).await;
    browser.wait_for_text("#timeline", REASON).await;
    browser.wait_for_text("#saga-failure", "cancelled").await;
    assert!(
        browser.find("#retry-saga").await.is_err(),
        "a reader is offered no retry"
    );
    shot(&browser, "markup-saga").await;

    browser
        .goto(&format!("{console}#/orders/{order}/trace"))
        .await;
    browser.wait_for_text("#customer-name", NAME).await;
    browser.wait_for_text("#ship-to", SHIP_TO).await;
    let trace = browser.wait_for_text("#trace", "OrderCancelled").await;
    assert!(trace.contains(SHIP_TO), "{trace}");
    shot(&browser, "markup-trace").await;

    let ran = browser
        .execute(
            "return [typeof window.__xss,
                     document.querySelectorAll('#view img, #view script').length];",
            vec![],
        )
        .await;
    assert_eq!(ran, json!(["undefined", 0]), "user input ran as markup");
    // Nothing the page does needs what its Content-Security-Policy forbids.
    let refused: Vec<String> = browser
        .console_messages()
        .await
        .into_iter()
        .filter(|line| line.contains("Content Security Policy"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    browser.close().await;
}

#[tokio::test]
async fn a_saga_waiting_to_retry_a_step_says_what_it_waits_for_and_until_when() {
    // Retries far enough apart that the saga is seen waiting for one.
    let platform = Platform::start_with(|config| {
        harness::platform::fast_retries(config);
        config.retry_base_ms = 20_000;
        config.retry_max_ms = 20_000;
        config.step_deadline_ms = 120_000;
    })
    .await;
    let gateway = Gateway::start(&platform).await;
    let setup = Setup(&platform);
    setup.product("lamp", 900, 5).await;
    let customer = setup.customer("Ada", 5_000).await;
    platform.proxy.fail(&["create-shipment"]);
    let order = setup.place(&customer, "lamp", "Ada", "GB").await;
    let url = format!("{}/v1/sagas/{order}", platform.query.url);
    let retry_at = eventually(SETTLE, "a retry of the shipment scheduled", || async {
        let saga: Value = platform.client.get(&url).send().await?.json().await?;
        let last = saga["history"].as_array().and_then(|h| h.last()).cloned();
        let last = last.unwrap_or_default();
        anyhow::ensure!(last["event"] == "retry_scheduled", "{saga}");
        let detail = last["detail"].as_str().unwrap_or_default().to_owned();
        Ok(detail.rsplit(" at ").next().unwrap_or_default().to_owned())
    })
    .await;
    // As the page shows a time: "2026-12-06 10:00:00.250 UTC".
    let shown_at = retry_at.replace('T', " ").replace('Z', " UTC");

    let browser = Browser::start().await;
    let console = format!("{}/console/", gateway.url);
    sign_in(&browser, &console, &auth::token("reader", "test-reader")).await;
    browser.wait_for("#saga-list").await;
    browser.goto(&format!("{console}#/sagas/{order}")).await;
    let now = browser
        .wait_for_text("#saga-now", "A timer: attempt 2 of create shipment")
        .await;
    assert!(now.contains(&format!("starts at {shown_at}")), "{now}");
    browser.wait_for_text("#saga-status", "running").await;
    let attempts = browser.wait_for_text("#attempts", &shown_at).await;
    assert!(attempts.contains("503"), "{attempts}");
    shot(&browser, "saga-waiting").await;
    browser.close().await;
}
