//! Every service starts against real PostgreSQL and Kafka and reports its
//! health the way the contract says.

use std::time::Duration;

use harness::services::{self, RunningService};
use harness::{TestEnv, eventually};
use serde_json::Value;

async fn get(url: &str) -> anyhow::Result<(u16, String)> {
    let response = reqwest::get(url).await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

async fn assert_ready(service: &RunningService) {
    let url = format!("{}/health/ready", service.url);
    let body: Value = eventually(Duration::from_secs(30), service.name, || async {
        let (status, body) = get(&url).await?;
        anyhow::ensure!(status == 200, "ready answered {status}: {body}");
        Ok(serde_json::from_str(&body)?)
    })
    .await;
    assert_eq!(body["status"], "ready", "{}: {body}", service.name);
    assert_eq!(body["checks"]["postgres"], "up", "{}: {body}", service.name);
    assert_eq!(body["checks"]["kafka"], "up", "{}: {body}", service.name);

    let (status, _) = get(&format!("{}/health/live", service.url)).await.unwrap();
    assert_eq!(status, 200, "{} live", service.name);

    let (status, metrics) = get(&format!("{}/metrics", service.url)).await.unwrap();
    assert_eq!(status, 200, "{} metrics", service.name);
    assert!(
        metrics.contains(&format!("name=\"{}\"", service.name)),
        "{} metrics name the service:\n{metrics}",
        service.name
    );
    assert!(
        metrics.lines().any(|line| line == "orders_ready 1"),
        "{} metrics report ready:\n{metrics}",
        service.name
    );
}

#[tokio::test]
async fn all_four_services_start_and_report_ready() {
    let env = TestEnv::new().await;
    let command = services::command_service(&env).await;
    let steps = command.internal_url.clone().expect("an internal listener");
    let orchestrator = services::saga_orchestrator(&env, &steps, |_| {}).await;
    let running = [
        command,
        services::query_service(&env).await,
        orchestrator,
        services::projector(&env).await,
    ];
    for service in &running {
        assert_ready(service).await;
    }
    for service in running {
        let name = service.name;
        service
            .stop()
            .await
            .unwrap_or_else(|error| panic!("{name} did not shut down cleanly: {error:#}"));
    }
}

#[tokio::test]
async fn readiness_names_the_dependency_that_is_down() {
    let env = TestEnv::new().await;
    let mut unreachable = TestEnv::new().await;
    // Nothing listens on port 1.
    unreachable.kafka_brokers = "127.0.0.1:1".into();
    unreachable.database_url = env.database_url.clone();
    let service = services::command_service(&unreachable).await;

    let url = format!("{}/health/ready", service.url);
    let (status, body) = get(&url).await.unwrap();
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["down"], serde_json::json!(["kafka"]));
    assert_eq!(body["checks"]["postgres"], "up");

    // Liveness does not depend on the broker.
    let (status, _) = get(&format!("{}/health/live", service.url)).await.unwrap();
    assert_eq!(status, 200);
}

/// Each binary parses its settings with clap from flags and environment
/// variables; the tests build `Config` directly, so parse them here the way
/// `main` does, defaults and an explicit list included.
#[test]
fn every_service_parses_its_settings_like_main_does() {
    use clap::Parser;
    let command = command_service::Config::try_parse_from([
        "command-service",
        "--shipping-countries",
        "gb, us",
    ])
    .unwrap();
    assert_eq!(command.shipping_countries, ["GB", "US"]);
    let defaults = command_service::Config::try_parse_from(["command-service"]).unwrap();
    assert!(defaults.shipping_countries.contains(&"JP".to_owned()));
    let refused = command_service::Config::try_parse_from([
        "command-service",
        "--shipping-countries",
        "GB,XYZ",
    ]);
    assert!(refused.unwrap_err().to_string().contains("XYZ"));
    query_service::Config::try_parse_from(["query-service"]).unwrap();
    // The projector's binary flattens its Config into a command line with
    // subcommands (`projector rebuild`).
    #[derive(clap::Parser)]
    struct Projector {
        #[command(flatten)]
        config: projector::Config,
    }
    Projector::try_parse_from(["projector"]).unwrap();
    saga_orchestrator::Config::try_parse_from(["saga-orchestrator"]).unwrap();
}
