//! The external systems a service depends on, and the readiness check over
//! them.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::CommonConfig;

/// A PostgreSQL pool and a Kafka client, both created lazily so that a
/// service starts (and reports itself not ready) while either is down.
#[derive(Clone)]
pub struct Deps {
    pub pg: PgPool,
    kafka_brokers: String,
    kafka_admin: Arc<AdminClient<DefaultClientContext>>,
    ready_timeout: Duration,
}

/// The outcome of one readiness probe: each dependency and whether it
/// works, and which of the process's workers are stalled.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub status: &'static str,
    /// Names of the dependencies that are down and of the workers that are
    /// stalled, empty when ready.
    pub down: Vec<String>,
    pub checks: Checks,
    /// The stalled workers: how far behind, for how long, waiting for what.
    pub stalled: Vec<crate::progress::WorkerReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    pub postgres: String,
    pub kafka: String,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.down.is_empty()
    }
}

impl Deps {
    pub fn new(config: &CommonConfig) -> anyhow::Result<Self> {
        let pg = PgPoolOptions::new()
            .max_connections(config.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(&config.database_url)
            .with_context(|| format!("invalid DATABASE_URL {}", config.redacted_database_url()))?;
        let kafka_admin = kafka_config(&config.kafka_brokers)
            .create()
            .context("creating the Kafka admin client")?;
        Ok(Self {
            pg,
            kafka_brokers: config.kafka_brokers.clone(),
            kafka_admin: Arc::new(kafka_admin),
            ready_timeout: config.ready_timeout(),
        })
    }

    /// A client configuration pointing at this deployment's brokers, for
    /// producers and consumers to extend.
    pub fn kafka_config(&self) -> ClientConfig {
        kafka_config(&self.kafka_brokers)
    }

    /// Probes PostgreSQL and Kafka concurrently, each under the readiness
    /// timeout, and adds the workers `watchdog` finds stalled.
    pub async fn readiness(&self, watchdog: &crate::progress::Watchdog) -> Readiness {
        let (postgres, kafka) = tokio::join!(self.check_postgres(), self.check_kafka());
        let mut down = Vec::new();
        let mut describe = |name: &str, result: anyhow::Result<()>| match result {
            Ok(()) => "up".to_owned(),
            Err(error) => {
                down.push(name.to_owned());
                format!("down: {error:#}")
            }
        };
        let checks = Checks {
            postgres: describe("postgres", postgres),
            kafka: describe("kafka", kafka),
        };
        let stalled = watchdog.stalled();
        down.extend(stalled.iter().map(|worker| worker.name.clone()));
        Readiness {
            stalled,
            status: if down.is_empty() {
                "ready"
            } else {
                "unavailable"
            },
            down,
            checks,
        }
    }

    async fn check_postgres(&self) -> anyhow::Result<()> {
        let probe = sqlx::query("select 1").execute(&self.pg);
        tokio::time::timeout(self.ready_timeout, probe)
            .await
            .context("timed out")?
            .context("query failed")?;
        Ok(())
    }

    async fn check_kafka(&self) -> anyhow::Result<()> {
        let admin = Arc::clone(&self.kafka_admin);
        let timeout = self.ready_timeout;
        // librdkafka's metadata call blocks its thread until the broker
        // answers or the timeout passes.
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
            .await
            .context("metadata probe panicked")?
            .context("fetching cluster metadata failed")?;
        Ok(())
    }
}

/// A pool whose connections find the read models (in `schema`) first, then
/// the event store (`search_path = <schema>, public`). `schema` must have
/// passed [`crate::config::parse_schema`].
pub fn read_model_pool(config: &CommonConfig, schema: &str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&config.database_url)
        .with_context(|| format!("invalid DATABASE_URL {}", config.redacted_database_url()))?
        .options([("search_path", format!("{schema},public"))]);
    Ok(PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

fn kafka_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // librdkafka logs connection failures itself; the readiness probe
        // reports them, so keep its own logging to errors only.
        .set("log_level", "3");
    config
}
