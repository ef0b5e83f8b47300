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
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningService {
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

async fn start<F, Fut>(name: &'static str, run: F) -> RunningService
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
        shutdown,
        task: Some(task),
    }
}

pub async fn command_service(env: &TestEnv) -> RunningService {
    let config = command_service::Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        idempotency_retention_hours: 24,
        shipping_countries: ["US", "CA", "GB", "DE", "FR", "NL", "SE", "JP", "AU"]
            .map(String::from)
            .to_vec(),
        common: env.common_config(),
    };
    start(command_service::SERVICE, |listener, shutdown| {
        command_service::run(config, listener, shutdown)
    })
    .await
}

pub async fn query_service(env: &TestEnv) -> RunningService {
    let config = query_service::Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        common: env.common_config(),
    };
    start(query_service::SERVICE, |listener, shutdown| {
        query_service::run(config, listener, shutdown)
    })
    .await
}

pub async fn saga_orchestrator(env: &TestEnv) -> RunningService {
    let config = saga_orchestrator::Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        common: env.common_config(),
    };
    start(saga_orchestrator::SERVICE, |listener, shutdown| {
        saga_orchestrator::run(config, listener, shutdown)
    })
    .await
}

pub async fn projector(env: &TestEnv) -> RunningService {
    let config = projector::Config {
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        common: env.common_config(),
    };
    start(projector::SERVICE, |listener, shutdown| {
        projector::run(config, listener, shutdown)
    })
    .await
}
