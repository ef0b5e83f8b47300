//! What an operator's Prometheus sees: each service's `/metrics` in
//! Prometheus' text format (OpenMetrics when asked), accepted by
//! `promtool check metrics`; requests counted by route template, never by
//! raw path; the platform's own metrics under one namespace; a real
//! Prometheus, started as compose starts it, with every service up as a
//! target and every alert rule loaded; and the rules' own unit tests.

use std::time::Duration;

use harness::eventually;
use harness::prometheus::{Prometheus, promtool};
use harness::services::RunningService;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;
use service_kit::metrics::{OPENMETRICS_TEXT, PROMETHEUS_TEXT};

use crate::sagas::Platform;

/// Metric names that OpenTelemetry's conventions give, kept unprefixed.
const CONVENTIONAL: [&str; 3] = [
    "http_server_request_duration_seconds",
    "db_client_connections_usage",
    "db_client_connections_max",
];

async fn scrape(
    platform: &Platform,
    service: &RunningService,
    accept: Option<&str>,
) -> (String, String) {
    let mut request = platform.client.get(format!("{}/metrics", service.url));
    if let Some(accept) = accept {
        request = request.header(ACCEPT, accept);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{} /metrics", service.name);
    let content_type = response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, response.text().await.unwrap())
}

/// The value of the sample written exactly `sample` (name and labels).
fn sample(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn every_service_exports_prometheus_text_by_route_template_under_one_namespace() {
    let platform = Platform::start_with(|config| {
        harness::platform::fast_retries(config);
        config.count_interval_ms = 100;
    })
    .await;
    platform.product("widget", 500, 10).await;
    let customer = platform.customer(10_000).await;
    let order = platform.place(&customer, "widget", 1, "GB").await;
    platform.saga_becomes(&order, "completed").await;
    // An order that does not exist: its id must not become a label.
    let missing = uuid::Uuid::new_v4();
    let response = platform
        .client
        .get(format!("{}/v1/orders/{missing}", platform.query.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let orchestrator = platform.orchestrator.as_ref().expect("running");
    for service in [
        &platform.command,
        &platform.query,
        orchestrator,
        &platform.projector,
    ] {
        let (content_type, text) = scrape(&platform, service, None).await;
        assert_eq!(content_type, PROMETHEUS_TEXT, "{}", service.name);
        promtool(&["check", "metrics"], Some(&text))
            .unwrap_or_else(|error| panic!("{}: {error:#}\n{text}", service.name));
        for line in text.lines().filter_map(|line| line.strip_prefix("# TYPE ")) {
            let name = line.split(' ').next().unwrap();
            assert!(
                name.starts_with("orders_") || CONVENTIONAL.contains(&name),
                "{}: {name} is outside the namespace",
                service.name
            );
        }
        assert!(!text.contains("# EOF"), "{}", service.name);
        assert!(
            text.contains("db_client_connections_max{pool_name="),
            "{}: {text}",
            service.name
        );
        assert_eq!(
            sample(&text, "orders_ready"),
            Some(1.0),
            "{}: {text}",
            service.name
        );
        assert_eq!(
            sample(&text, "orders_dependency_up{dependency=\"postgres\"}"),
            Some(1.0),
            "{}: {text}",
            service.name
        );

        let (content_type, text) = scrape(
            &platform,
            service,
            Some("application/openmetrics-text; version=1.0.0"),
        )
        .await;
        assert_eq!(content_type, OPENMETRICS_TEXT, "{}", service.name);
        assert!(text.ends_with("# EOF\n"), "{}: {text}", service.name);
    }

    // The query-service counted the 404 under its route's template.
    let (_, text) = scrape(&platform, &platform.query, None).await;
    assert!(!text.contains(&missing.to_string()), "{text}");
    let count = "http_server_request_duration_seconds_count{http_request_method=\"GET\",\
                 http_route=\"/v1/orders/{id}\",http_response_status_code=\"404\"}";
    assert_eq!(sample(&text, count), Some(1.0), "{text}");
    // The command-service counted the placement on its public listener and
    // the saga's step calls on its internal one.
    let (_, text) = scrape(&platform, &platform.command, None).await;
    assert!(
        text.contains("http_route=\"/v1/orders\",http_response_status_code=\"202\""),
        "{text}"
    );
    assert!(
        text.contains("http_route=\"/internal/v1/orders/{id}/charge-payment\""),
        "{text}"
    );

    // The orchestrator counted each step once, by step and direction, and
    // counts the sagas by standing.
    let (_, text) = scrape(&platform, orchestrator, None).await;
    for step in domain::saga::SagaStep::ALL.map(|step| step.spec().name) {
        let attempts =
            format!("orders_saga_step_attempts_total{{step=\"{step}\",direction=\"run\"}}");
        assert_eq!(sample(&text, &attempts), Some(1.0), "{step}: {text}");
    }
    eventually(
        Duration::from_secs(30),
        "the saga counted as done",
        || async {
            let (_, text) = scrape(&platform, orchestrator, None).await;
            let done = sample(&text, "orders_sagas{standing=\"done\"}");
            let failed = sample(&text, "orders_sagas{standing=\"failed\"}");
            anyhow::ensure!(done == Some(1.0) && failed == Some(0.0), "{text}");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn prometheus_started_as_compose_does_scrapes_every_service_and_loads_every_rule() {
    let platform = Platform::start_with(harness::platform::fast_retries).await;
    let prometheus = Prometheus::start(&platform).await;

    let targets = prometheus.all_targets_up().await;
    let mut jobs: Vec<&str> = targets
        .iter()
        .map(|target| target["labels"]["job"].as_str().unwrap())
        .collect();
    jobs.sort_unstable();
    assert_eq!(
        jobs,
        [
            "command-service",
            "projector",
            "query-service",
            "saga-orchestrator"
        ]
    );

    let rules = prometheus.api("rules").await.unwrap();
    let loaded: Vec<(String, String)> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap().clone())
        .map(|rule| {
            (
                rule["name"].as_str().unwrap().to_owned(),
                rule["health"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut names: Vec<&str> = loaded.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "BrokerDown",
            "CircuitBreakerOpen",
            "DatabaseDown",
            "RelayBehind",
            "SagasFailed",
            "ServiceDown",
            "SlowRequests",
            "WorkerStalled",
        ]
    );
    // Once evaluated, no rule errs and nothing fires on a healthy platform.
    eventually(Duration::from_secs(30), "every rule evaluated", || async {
        let rules = prometheus.api("rules").await?;
        let all: Vec<Value> = rules["groups"][0]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let unhealthy: Vec<&Value> = all.iter().filter(|rule| rule["health"] != "ok").collect();
        anyhow::ensure!(
            unhealthy.is_empty(),
            "rules not evaluated well: {unhealthy:?}"
        );
        Ok(())
    })
    .await;
    let alerts = prometheus.api("alerts").await.unwrap();
    assert_eq!(alerts["alerts"], serde_json::json!([]), "{alerts}");
    // Every service reported ready through its scrape.
    let ready = prometheus
        .api("query?query=sum(orders_ready)")
        .await
        .unwrap();
    assert_eq!(ready["result"][0]["value"][1], "4", "{ready}");
}

#[test]
fn the_alert_rules_load_and_fire_as_their_unit_tests_say() {
    let checked = promtool(&["check", "rules", "alerts.yml"], None).unwrap();
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    promtool(&["test", "rules", "alerts.test.yml"], None).unwrap();
}
