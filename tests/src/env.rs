//! One test's private slice of the shared containers.

use sqlx::{Connection, PgPool};
use uuid::Uuid;

use crate::infra::infra;

/// A database and a topic prefix of this test's own.
pub struct TestEnv {
    /// Short unique id, also part of the database name and topic prefix.
    pub id: String,
    pub database_url: String,
    pub kafka_brokers: String,
    pub topic_prefix: String,
    /// A pool on the test's database, for assertions.
    pub pg: PgPool,
}

impl TestEnv {
    pub async fn new() -> Self {
        let infra = infra().clone();
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let database = format!("test_{id}");
        let mut admin = sqlx::PgConnection::connect(&infra.database_url("postgres"))
            .await
            .expect("connecting to the test PostgreSQL");
        // As compose does: the database belongs to the owner, who migrates
        // it (`<service> migrate`); each service then connects as its own
        // role (`services`).
        service_kit::db::prepare_database(&mut admin, &database)
            .await
            .expect("creating the test database");
        let database_url = infra.database_url(&database);
        crate::infra::migrate_platform(&as_role(&database_url, service_kit::db::OWNER))
            .await
            .expect("migrating the test database as its owner");
        let pg = PgPool::connect(&database_url)
            .await
            .expect("connecting to the test database");
        Self {
            topic_prefix: format!("test-{id}."),
            id,
            database_url,
            kafka_brokers: infra.kafka_brokers,
            pg,
        }
    }

    /// An event store on this test's database, migrated.
    pub async fn event_store(&self) -> event_store::EventStore {
        let store = event_store::EventStore::new(self.pg.clone());
        store.migrate().await.expect("migrating the event store");
        store
    }

    /// This test's database as one of the platform's roles
    /// (`service_kit::db`), with that role's test password.
    pub fn database_url_as(&self, role: &str) -> String {
        as_role(&self.database_url, role)
    }

    /// [`TestEnv::common_config`] connecting as `role`, as the service that
    /// role belongs to does.
    pub fn common_config_as(&self, role: &str) -> service_kit::CommonConfig {
        service_kit::CommonConfig {
            database_url: self.database_url_as(role),
            ..self.common_config()
        }
    }

    /// Settings for a service running against this test's database and
    /// topics, as the superuser; services get their own role's through
    /// [`TestEnv::common_config_as`].
    pub fn common_config(&self) -> service_kit::CommonConfig {
        service_kit::CommonConfig {
            database_url: self.database_url.clone(),
            // As the services default to: a rebuild under load holds several
            // at once (its lock, its folds, the live consumer beside it).
            database_max_connections: 16,
            kafka_brokers: self.kafka_brokers.clone(),
            kafka_topic_prefix: self.topic_prefix.clone(),
            log_format: "pretty".into(),
            log_filter: "info".into(),
            ready_timeout_ms: 2000,
            stall_after_ms: 30_000,
            auth: crate::auth::auth_config(),
            limits: service_kit::http::Limits::default(),
            traces: service_kit::telemetry::TracesConfig::default(),
        }
    }
}

/// `database_url` (the superuser's) with `role`'s name and test password.
fn as_role(database_url: &str, role: &str) -> String {
    let (scheme, rest) = database_url.split_once("://").expect("a postgres:// URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let password = crate::infra::test_password(role);
    format!("{scheme}://{role}:{password}@{host}")
}

/// The test binary's subscriber, once: spans exported to the binary's
/// OTLP receiver (`otlp`), logs silent unless `TEST_LOG=1`.
pub(crate) fn init_test_logging() {
    crate::otlp::collector();
}
