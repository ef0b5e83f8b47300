//! PostgreSQL and a Kafka-protocol broker in containers, started once per
//! test binary and shared by every test in it.
//!
//! The containers live on a thread of their own with its own tokio runtime,
//! because each `#[tokio::test]` has a runtime that ends with the test. They
//! carry the label `orders-platform.test`, by which `compose/test.sh` removes
//! them when the test binary has exited.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::Connection;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::eventually;

/// Label on every container the harness starts.
pub const CONTAINER_LABEL: &str = "orders-platform.test";

const PG_USER: &str = "postgres";
const PG_PASSWORD: &str = "postgres";

/// Where the shared containers can be reached from the tests.
#[derive(Debug, Clone)]
pub struct Infra {
    /// `postgres://user:password@host:port` without a database name.
    pub pg_base_url: String,
    /// Bootstrap servers for Kafka clients.
    pub kafka_brokers: String,
}

impl Infra {
    pub fn database_url(&self, database: &str) -> String {
        format!("{}/{database}", self.pg_base_url)
    }
}

/// The shared containers, started on first use.
pub fn infra() -> &'static Infra {
    static INFRA: OnceLock<Infra> = OnceLock::new();
    INFRA.get_or_init(|| {
        crate::env::init_test_logging();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-containers".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("building the containers' runtime");
                runtime.block_on(async move {
                    match start().await {
                        Ok((infra, containers)) => {
                            let _ = sender.send(Ok(infra));
                            // Keep the containers (and this runtime) for the
                            // life of the test binary.
                            let _keep = containers;
                            std::future::pending::<()>().await;
                        }
                        Err(error) => {
                            let _ = sender.send(Err(error));
                        }
                    }
                });
            })
            .expect("spawning the containers' thread");
        match receiver.recv() {
            Ok(Ok(infra)) => infra,
            Ok(Err(error)) => panic!("starting the test containers failed: {error:#}"),
            Err(_) => panic!("the containers' thread died"),
        }
    })
}

/// The images to start, as recorded by `compose/images.sh`.
pub struct Images {
    pub postgres: String,
    pub kafka: String,
    pub kafka_kind: String,
}

/// Image names from the environment, else from `compose/.images.env` as
/// written by `compose/images.sh`.
pub fn images() -> anyhow::Result<Images> {
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/.images.env");
    let mut file_values = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(&recorded) {
        for line in text.lines() {
            if let Some((key, value)) = line.split_once('=') {
                file_values.insert(key.trim().to_owned(), value.trim().to_owned());
            }
        }
    }
    let get = |key: &str| {
        std::env::var(key)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| file_values.get(key).cloned())
            .with_context(|| {
                format!(
                    "{key} is not set and not recorded in {}; run `make test` \
                     (or `compose/images.sh postgres kafka`) first",
                    recorded.display()
                )
            })
    };
    Ok(Images {
        postgres: get("POSTGRES_IMAGE")?,
        kafka: get("KAFKA_IMAGE")?,
        kafka_kind: get("KAFKA_KIND").unwrap_or_else(|_| "apache".into()),
    })
}

fn generic_image(reference: &str) -> GenericImage {
    // The tag follows the last ':' after the last '/' (a registry host may
    // carry a port).
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(colon) => {
            GenericImage::new(&reference[..slash + colon], &reference[slash + colon + 1..])
        }
        None => GenericImage::new(reference, "latest"),
    }
}

async fn start() -> anyhow::Result<(Infra, Vec<ContainerAsync<GenericImage>>)> {
    let images = images()?;
    let (postgres, kafka) = tokio::join!(
        start_postgres(&images.postgres, false),
        start_kafka(&images.kafka, &images.kafka_kind)
    );
    let (postgres, pg_base_url) = postgres?;
    // Roles are the cluster's, so once for every test of this binary.
    bootstrap_roles(&pg_base_url).await?;
    let (kafka, kafka_brokers) = kafka?;
    Ok((
        Infra {
            pg_base_url,
            kafka_brokers,
        },
        vec![postgres, kafka],
    ))
}

/// PostgreSQL (with its default durability) and the broker for a
/// benchmark, from the images `make` recorded; the containers live as long
/// as this value.
pub struct BenchInfra {
    /// `postgres://user:password@host:port`, without a database.
    pub pg_base: String,
    pub brokers: String,
    containers: [ContainerAsync<GenericImage>; 2],
}

impl BenchInfra {
    /// The containers' names and ids.
    pub fn containers(&self) -> [(&'static str, &str); 2] {
        [
            ("postgres", self.containers[0].id()),
            ("broker", self.containers[1].id()),
        ]
    }
}

pub async fn start_for_benchmark() -> anyhow::Result<BenchInfra> {
    let images = images()?;
    eprintln!(
        "starting PostgreSQL ({}) and the broker ({})",
        images.postgres, images.kafka
    );
    let (pg, pg_base) = start_postgres(&images.postgres, true).await?;
    let (kafka, brokers) = start_kafka(&images.kafka, &images.kafka_kind).await?;
    Ok(BenchInfra {
        pg_base,
        brokers,
        containers: [pg, kafka],
    })
}

/// Creates database `name` on the server at `pg_base` (as in
/// [`BenchInfra::pg_base`]) with the platform's roles, migrated as its
/// owner as `<service> migrate` does; returns its URL (the superuser's,
/// which benchmarks use throughout).
pub async fn create_database(pg_base: &str, name: &str) -> anyhow::Result<String> {
    bootstrap_roles(pg_base).await?;
    let mut admin = sqlx::PgConnection::connect(&format!("{pg_base}/postgres")).await?;
    service_kit::db::prepare_database(&mut admin, name)
        .await
        .with_context(|| format!("creating database {name}"))?;
    let url = format!("{pg_base}/{name}");
    let (scheme, rest) = url.split_once("://").context("a postgres:// URL")?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let owner = service_kit::db::OWNER;
    migrate_platform(&format!(
        "{scheme}://{owner}:{}@{host}",
        test_password(owner)
    ))
    .await?;
    Ok(url)
}

/// The test password of one of the platform's roles. Tests use fixed ones;
/// `make up` makes random ones outside the repository.
pub fn test_password(role: &str) -> String {
    format!("{role}-test-password")
}

/// The platform's roles on the server at `pg_base` (the superuser's URL,
/// without a database), with their test passwords.
pub async fn bootstrap_roles(pg_base: &str) -> anyhow::Result<()> {
    let password = |role| test_password(role);
    let passwords = service_kit::db::RolePasswords {
        owner: password(service_kit::db::OWNER),
        command: password(service_kit::db::COMMAND),
        query: password(service_kit::db::QUERY),
        projector: password(service_kit::db::PROJECTOR),
        saga: password(service_kit::db::SAGA),
    };
    let mut admin = sqlx::PgConnection::connect(&format!("{pg_base}/postgres")).await?;
    service_kit::db::bootstrap(&mut admin, &passwords)
        .await
        .context("creating the platform's database roles")
}

/// What compose's `migrate` step does: every service's `migrate`, as the
/// owner at `owner_url` (read models in the `public` schema).
pub async fn migrate_platform(owner_url: &str) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(owner_url)
        .await
        .context("connecting as the owner")?;
    command_service::migrate(&pool).await?;
    saga_orchestrator::migrate(&pool).await?;
    let store = event_store::EventStore::new(pool.clone());
    projector::migrate(&pool, &pool, &store, "public").await?;
    pool.close().await;
    Ok(())
}

/// A PostgreSQL container and its `postgres://user:password@host:port` URL
/// (without a database). `durable: false` turns off fsync and friends, which
/// tests do not need; benchmarks keep the defaults.
///
/// The containers share the host's network, listening on a free port: a
/// published port goes through docker's userland proxy, which on this
/// 2-core machine took half a core under load (as in `compose/`, where the
/// services use the host's network too).
pub async fn start_postgres(
    image: &str,
    durable: bool,
) -> anyhow::Result<(ContainerAsync<GenericImage>, String)> {
    let port = free_port()?.to_string();
    let mut args = vec![
        "postgres",
        "-c",
        "max_connections=500",
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
    ];
    let port_setting = format!("port={port}");
    args.push(&port_setting);
    if !durable {
        args.extend([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]);
    }
    let container = generic_image(image)
        .with_network("host")
        .with_labels([(CONTAINER_LABEL, "1")])
        .with_env_var("POSTGRES_USER", PG_USER)
        .with_env_var("POSTGRES_PASSWORD", PG_PASSWORD)
        .with_cmd(args)
        .with_shm_size(256 * 1024 * 1024)
        .with_startup_timeout(Duration::from_secs(120))
        .start()
        .await
        .with_context(|| format!("starting {image}"))?;
    let base = format!("postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}");
    // The official image runs a temporary server without TCP while it
    // initialises, so a TCP connection that works means it is ready.
    let url = format!("{base}/postgres");
    eventually(
        Duration::from_secs(90),
        "PostgreSQL accepting connections",
        || {
            let url = url.clone();
            async move {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query("select 1").execute(&mut conn).await?;
                Ok(())
            }
        },
    )
    .await;
    Ok((container, base))
}

/// What the tansu image's entrypoint prints once the broker's storage has
/// its indexes (compose/kafka/tansu-entrypoint.sh).
const TANSU_STORAGE_INDEXED: &str = "broker storage indexed";

/// A Kafka-protocol broker container and its bootstrap address; a tansu
/// broker only once its storage is indexed.
pub async fn start_kafka(
    image: &str,
    kind: &str,
) -> anyhow::Result<(ContainerAsync<GenericImage>, String)> {
    // A broker tells clients where to reconnect (its advertised listener), so
    // it must know its port before it starts: pick a free one.
    let port = free_port()?;
    let advertised = format!("127.0.0.1:{port}");
    let mut generic = generic_image(image);
    if kind == "tansu" {
        // The image's entrypoint indexes tansu's storage after tansu has
        // created it; a broker without those indexes slows down with
        // everything stored (compose/kafka/tansu-entrypoint.sh). Kind
        // `tansu-unindexed` starts an image from before that step
        // (orders-platform/tansu:0.6.0-2), for comparisons only.
        generic = generic.with_wait_for(WaitFor::message_on_stdout(TANSU_STORAGE_INDEXED));
    }
    let request = generic
        .with_labels([(CONTAINER_LABEL, "1")])
        .with_startup_timeout(Duration::from_secs(120));
    let request = match kind {
        // On the host's network, like PostgreSQL (see `start_postgres`).
        "tansu" | "tansu-unindexed" => request
            .with_network("host")
            .with_env_var("BROKER_LISTEN", &advertised)
            .with_env_var("BROKER_ADVERTISED", &advertised),
        "apache" => {
            let mut request = request.with_mapped_port(port, 9092.tcp());
            for (key, value) in apache_kafka_env(&advertised) {
                request = request.with_env_var(key, value);
            }
            request
        }
        other => bail!("KAFKA_KIND must be `tansu`, `tansu-unindexed` or `apache`, not `{other}`"),
    };
    let container = request
        .start()
        .await
        .with_context(|| format!("starting {image}"))?;
    let brokers = advertised;
    eventually(
        Duration::from_secs(90),
        "Kafka answering metadata requests",
        || broker_answers(&brokers),
    )
    .await;
    Ok((container, brokers))
}

/// Single-node KRaft settings for the official apache/kafka image.
fn apache_kafka_env(advertised: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_NODE_ID", "1".into()),
        ("KAFKA_PROCESS_ROLES", "broker,controller".into()),
        (
            "KAFKA_LISTENERS",
            "PLAINTEXT://:9092,CONTROLLER://:9093".into(),
        ),
        (
            "KAFKA_ADVERTISED_LISTENERS",
            format!("PLAINTEXT://{advertised}"),
        ),
        ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into()),
        (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".into(),
        ),
        ("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093".into()),
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".into()),
        ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1".into()),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".into()),
        ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".into()),
    ]
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The broker at `brokers` answers a metadata request within 2 s.
pub async fn broker_answers(brokers: &str) -> anyhow::Result<()> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("log_level", "0")
            .create()?;
        consumer.fetch_metadata(None, Duration::from_secs(2))?;
        anyhow::Ok(())
    })
    .await?
}
