//! The whole platform on one [`TestEnv`], as the tests that drive orders
//! through every service start it: command-service, projector,
//! query-service and saga-orchestrator, the orchestrator calling the step
//! API through a [`FaultProxy`] (which lets everything through until a
//! test says otherwise), each service ready before the test goes on.

use std::time::Duration;

use event_relay::MessageFormat;
use reqwest::Client;

use crate::proxy::FaultProxy;
use crate::services::{self, RunningService};
use crate::{TestEnv, eventually};

/// The orchestrator's settings for tests: retries, leases and polls short
/// enough that a saga moves in a test's time. Step calls may take seconds
/// on a busy small machine; no test here is about calls timing out.
pub fn fast_retries(config: &mut saga_orchestrator::Config) {
    config.step_timeout_ms = 10_000;
    config.retry_base_ms = 50;
    config.retry_max_ms = 400;
    config.compensation_attempts = 5;
    config.breaker_failures = 5;
    config.breaker_open_ms = 300;
    config.lease_ms = 2_000;
    config.poll_ms = 50;
}

/// Every service, running.
pub struct Platform {
    pub env: TestEnv,
    /// A client with an `admin` token.
    pub client: Client,
    pub command: RunningService,
    /// Between the orchestrator and the step API.
    pub proxy: FaultProxy,
    pub query: RunningService,
    pub projector: RunningService,
    /// `None` while a test has it stopped.
    pub orchestrator: Option<RunningService>,
}

impl Platform {
    /// With [`fast_retries`] and the default message format.
    pub async fn start() -> Self {
        Self::start_with(fast_retries).await
    }

    /// With the orchestrator's settings changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut saga_orchestrator::Config)) -> Self {
        Self::start_relaying(MessageFormat::default(), adjust).await
    }

    /// With the relay publishing in `format`.
    pub async fn start_relaying(
        format: MessageFormat,
        adjust: impl FnOnce(&mut saga_orchestrator::Config),
    ) -> Self {
        let env = TestEnv::new().await;
        let command =
            services::command_service_with(&env, |config| config.relay_message_format = format)
                .await;
        let steps = command
            .internal_url
            .as_deref()
            .expect("an internal listener");
        let proxy = FaultProxy::start(steps).await;
        let projector = services::projector(&env).await;
        let query = services::query_service(&env).await;
        let orchestrator = services::saga_orchestrator(&env, &proxy.url, adjust).await;
        let platform = Self {
            env,
            client: crate::auth::admin(),
            command,
            proxy,
            query,
            projector,
            orchestrator: Some(orchestrator),
        };
        for service in [&platform.command, &platform.query, &platform.projector] {
            platform.ready(service).await;
        }
        platform
    }

    /// Waits until `service` says it is ready.
    pub async fn ready(&self, service: &RunningService) {
        let url = format!("{}/health/ready", service.url);
        eventually(Duration::from_secs(60), "services ready", || async {
            self.client.get(&url).send().await?.error_for_status()?;
            Ok(())
        })
        .await;
    }

    /// Starts the orchestrator again (with [`fast_retries`]) after a test
    /// stopped or killed it.
    pub async fn restart_orchestrator(&mut self) {
        let orchestrator =
            services::saga_orchestrator(&self.env, &self.proxy.url, fast_retries).await;
        self.orchestrator = Some(orchestrator);
    }

    /// The running orchestrator's URL.
    pub fn orchestrator_url(&self) -> &str {
        &self.orchestrator.as_ref().expect("running").url
    }
}
