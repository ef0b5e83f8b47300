//! The real services, started in-process on port 0 against a [`TestEnv`].

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::TestEnv;

/// A service running in this process; it shuts down when stopped or dropped.
pub struct RunningService {
    pub name: &'static str,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The internal listener's `http://127.0.0.1:PORT`, for a service that
    /// has one (command-service's saga step API).
    pub internal_url: Option<String>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningService {
    /// Kills the service like a crashed process: its task is aborted where
    /// it stands, with no graceful shutdown.
    pub async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Cancels the service and waits for it to finish, returning its result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts `run` (a service's `run`, or any server shaped like one) on a
/// free local port.
pub async fn start<F, Fut>(name: &'static str, run: F) -> RunningService
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("binding a port for the service");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(listener, shutdown.clone()));
    RunningService {
        name,
        url,
        internal_url: None,
        shutdown,
        task: Some(task),
    }
}

/// Starts `run` (a service with an internal listener besides its public
/// one, as command-service) on two free local ports.
pub async fn start_with_internal<F, Fut>(name: &'static str, run: F) -> RunningService
where
    F: FnOnce(TcpListener, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let internal = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("binding a port for the internal listener");
    let internal_url = format!("http://{}", internal.local_addr().expect("local address"));
    let mut service = start(name, |listener, shutdown| run(listener, internal, shutdown)).await;
    service.internal_url = Some(internal_url);
    service
}

pub async fn command_service(env: &TestEnv) -> RunningService {
    command_service_with(env, |_| {}).await
}

/// The command-service with its settings changed by `adjust`.
pub async fn command_service_with(
    env: &TestEnv,
    adjust: impl FnOnce(&mut command_service::Config),
) -> RunningService {
    let mut config = command_service::Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        internal_http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        idempotency_retention_hours: 24,
        relay_message_format: event_relay::MessageFormat::CloudEvents,
        relay_linger_ms: event_relay::DEFAULT_LINGER_MS,
        shipping_countries: ["US", "CA", "GB", "DE", "FR", "NL", "SE", "JP", "AU"]
            .map(String::from)
            .to_vec(),
        common: env.common_config_as(service_kit::db::COMMAND),
    };
    adjust(&mut config);
    start_with_internal(command_service::SERVICE, |listener, internal, shutdown| {
        command_service::run(config, listener, internal, shutdown)
    })
    .await
}

pub async fn query_service(env: &TestEnv) -> RunningService {
    query_service_with(env, |_| {}).await
}

/// The query-service with settings changed by `adjust`.
pub async fn query_service_with(
    env: &TestEnv,
    adjust: impl FnOnce(&mut query_service::Config),
) -> RunningService {
    let mut config = query_service::Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        read_model_schema: "public".into(),
        min_version_timeout_ms: 5000,
        common: env.common_config_as(service_kit::db::QUERY),
    };
    adjust(&mut config);
    start(query_service::SERVICE, |listener, shutdown| {
        query_service::run(config, listener, shutdown)
    })
    .await
}

/// The saga-orchestrator calling the command-service's step API at
/// `command_service_internal_url` (a command-service's `internal_url`, or
/// a proxy in front of it), with settings changed by `adjust`.
pub async fn saga_orchestrator(
    env: &TestEnv,
    command_service_internal_url: &str,
    adjust: impl FnOnce(&mut saga_orchestrator::Config),
) -> RunningService {
    let mut config = saga_orchestrator::Config::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        command_service_internal_url.to_owned(),
        env.common_config_as(service_kit::db::SAGA),
    );
    config.service_token_file = Some(crate::auth::service_token_file());
    adjust(&mut config);
    start(saga_orchestrator::SERVICE, |listener, shutdown| {
        saga_orchestrator::run(config, listener, shutdown)
    })
    .await
}

pub async fn projector(env: &TestEnv) -> RunningService {
    projector_with(env, |_| {}).await
}

/// A projector with settings changed by `adjust` (another read-model
/// schema and consumer group, say, for a second, independent projection).
pub async fn projector_with(
    env: &TestEnv,
    adjust: impl FnOnce(&mut projector::Config),
) -> RunningService {
    let mut config = projector::Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        read_model_schema: "public".into(),
        consumer_group: None,
        batch_size: 500,
        fetch_wait_ms: 100,
        common: env.common_config_as(service_kit::db::PROJECTOR),
    };
    adjust(&mut config);
    // A read-model schema of its own is made by `projector migrate`, as
    // the owner, like the default one (`TestEnv::new`).
    migrate_read_models(env, &config.read_model_schema).await;
    start(projector::SERVICE, |listener, shutdown| {
        projector::run(config, listener, shutdown)
    })
    .await
}

/// `projector migrate` for `schema`, as the owner.
async fn migrate_read_models(env: &TestEnv, schema: &str) {
    let owner = env.common_config_as(service_kit::db::OWNER);
    let pool = sqlx::PgPool::connect(&owner.database_url)
        .await
        .expect("connecting as the owner");
    let read_models = service_kit::deps::read_model_pool(&owner, schema)
        .expect("a pool on the read-model schema");
    let store = event_store::EventStore::new(pool.clone());
    projector::migrate(&pool, &read_models, &store, schema)
        .await
        .expect("migrating the read models as the owner");
}

/// The `/metrics` text of the service whose URL is `base`.
pub async fn metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics' text")
}
