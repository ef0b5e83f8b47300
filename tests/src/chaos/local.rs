//! The whole platform on this machine for the short form of the
//! crash-safety suite: PostgreSQL and the broker in containers of its own
//! (not the shared ones of [`crate::infra`], which other tests use), and the
//! four services as child processes of the test, from the debug build
//! (`platform-service`). Everything can be killed with SIGKILL:
//!
//! - a service is killed with `Child::start_kill` (SIGKILL on Unix) and
//!   started again at once on the same port by its supervisor task, which
//!   also restarts a service that exits by itself (as compose's
//!   `restart: unless-stopped` would) and counts those exits;
//! - PostgreSQL and the broker run on the host's network on ports picked
//!   here, with `--restart unless-stopped`, so after their main process is
//!   killed with SIGKILL docker starts the same container (same data, same
//!   port) again (see [`super::faults::kill_container`]).
//!
//! Containers carry the harness label (`compose/test.sh` removes leftovers)
//! and are removed when this value is dropped; child processes are killed
//! when dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::Connection;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::faults::{self, Faults, Target, docker, kill_container, restart_count};
use super::{Endpoints, poll_until, say};
use crate::infra::{CONTAINER_LABEL, images};

const PG_USER: &str = "postgres";
const PG_PASSWORD: &str = "postgres";
const DATABASE: &str = "orders";
const TOPIC_PREFIX: &str = "chaos.";

/// How long PostgreSQL, the broker and the services get to start.
const START_BOUND: Duration = Duration::from_secs(120);

/// A container removed (with its volumes) when dropped.
struct Container {
    id: String,
    restarts_at_start: u32,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A request to the supervisor of a service: kill it with SIGKILL and
/// start it again; the answer comes once the new process was spawned.
type KillRequest = oneshot::Sender<anyhow::Result<()>>;

struct Supervised {
    kill: mpsc::Sender<KillRequest>,
    task: JoinHandle<()>,
}

/// PostgreSQL, the broker and the four services, each killable.
pub struct LocalPlatform {
    pub endpoints: Endpoints,
    postgres: Container,
    broker: Container,
    services: BTreeMap<Target, Supervised>,
    unplanned_exits: Arc<Mutex<BTreeMap<Target, u32>>>,
    container_kills: Mutex<BTreeMap<Target, u32>>,
}

impl Drop for LocalPlatform {
    fn drop(&mut self) {
        // Dropping a supervisor's task drops its child, which kills it.
        for supervised in self.services.values() {
            supervised.task.abort();
        }
    }
}

impl LocalPlatform {
    /// Starts everything and waits (bounded) until all four services are
    /// ready. `exe` is the `platform-service` binary; `service_env` is
    /// added to every service's environment (settings such as
    /// `SAGA_LEASE_MS`).
    pub async fn start(exe: &Path, service_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let images = images()?;
        let pg_port = free_port()?;
        let broker_port = free_port()?;
        let postgres = start_postgres(&images.postgres, pg_port).await?;
        let broker = start_broker(&images.kafka, &images.kafka_kind, broker_port).await?;
        let pg_base = format!("postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{pg_port}");
        let kafka_brokers = format!("127.0.0.1:{broker_port}");
        let admin_url = format!("{pg_base}/postgres");
        poll_until(START_BOUND, "PostgreSQL accepting connections", || async {
            let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
            sqlx::query("select 1").execute(&mut conn).await?;
            Ok(())
        })
        .await?;
        // The roles, the database and its schema, as compose's one-shot
        // steps make them; each service then connects as its own role.
        crate::infra::create_database(&pg_base, DATABASE)
            .await
            .context("creating and migrating the database")?;
        poll_until(
            START_BOUND,
            "the broker answering metadata requests",
            || crate::infra::broker_answers(&kafka_brokers),
        )
        .await?;
        // The tansu image indexes the broker's storage once tansu has made
        // it, and says so (compose/kafka/tansu-entrypoint.sh; as
        // `harness::infra` waits for it). Read from the logs, not with
        // `docker exec`: through the harness's docker-api-shim an exec's
        // exit status is lost.
        if images.kafka_kind == "tansu" {
            let id = &broker.id;
            poll_until(START_BOUND, "the broker's storage indexed", || async move {
                let logs = docker(&["logs", id]).await?;
                anyhow::ensure!(logs.contains("broker storage indexed"), "not indexed yet");
                Ok(())
            })
            .await?;
        }

        let ports: BTreeMap<Target, u16> = [
            Target::CommandService,
            Target::QueryService,
            Target::SagaOrchestrator,
            Target::Projector,
        ]
        .into_iter()
        .map(|target| Ok((target, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
        // command-service's step API, which only the orchestrator calls.
        let internal_port = free_port()?;
        let url = |target| format!("http://127.0.0.1:{}", ports[&target]);
        let endpoints = Endpoints {
            command: url(Target::CommandService),
            query: url(Target::QueryService),
            orchestrator: url(Target::SagaOrchestrator),
            projector: url(Target::Projector),
            database_url: format!("{pg_base}/{DATABASE}"),
            kafka_brokers: kafka_brokers.clone(),
        };
        let unplanned_exits = Arc::new(Mutex::new(BTreeMap::new()));
        let mut services = BTreeMap::new();
        for (&target, &port) in &ports {
            let mut env: Vec<(String, String)> = vec![
                ("HTTP_ADDR".into(), format!("127.0.0.1:{port}")),
                (
                    "DATABASE_URL".into(),
                    role_url(&pg_port, database_role(target)),
                ),
                ("DATABASE_MAX_CONNECTIONS".into(), "8".into()),
                (
                    "AUTH_JWKS_FILE".into(),
                    crate::auth::jwks_file().display().to_string(),
                ),
                ("KAFKA_BROKERS".into(), kafka_brokers.clone()),
                ("KAFKA_TOPIC_PREFIX".into(), TOPIC_PREFIX.into()),
                ("LOG_FORMAT".into(), "pretty".into()),
                (
                    "RUST_LOG".into(),
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                ),
            ];
            match target {
                Target::CommandService => env.push((
                    "INTERNAL_HTTP_ADDR".into(),
                    format!("127.0.0.1:{internal_port}"),
                )),
                Target::SagaOrchestrator => env.extend([
                    (
                        "COMMAND_SERVICE_INTERNAL_URL".into(),
                        format!("http://127.0.0.1:{internal_port}"),
                    ),
                    (
                        "SERVICE_TOKEN_FILE".into(),
                        crate::auth::service_token_file().display().to_string(),
                    ),
                ]),
                _ => {}
            }
            env.extend(
                service_env
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            let (kill, requests) = mpsc::channel(1);
            let task = tokio::spawn(supervise(
                target,
                exe.to_owned(),
                env,
                requests,
                Arc::clone(&unplanned_exits),
            ));
            services.insert(target, Supervised { kill, task });
        }
        let platform = Self {
            endpoints,
            postgres,
            broker,
            services,
            unplanned_exits,
            container_kills: Mutex::default(),
        };
        for target in platform.services.keys() {
            faults::serves_again(*target, &platform.endpoints, START_BOUND).await?;
        }
        Ok(platform)
    }

    fn container(&self, target: Target) -> &Container {
        match target {
            Target::Postgres => &self.postgres,
            _ => &self.broker,
        }
    }
}

impl Faults for LocalPlatform {
    async fn kill(&self, target: Target) -> anyhow::Result<()> {
        match target {
            Target::Postgres | Target::Broker => {
                *self
                    .container_kills
                    .lock()
                    .expect("kills lock")
                    .entry(target)
                    .or_default() += 1;
                kill_container(&self.container(target).id, Duration::from_secs(60)).await
            }
            service => {
                let supervised = &self.services[&service];
                let (answer, answered) = oneshot::channel();
                supervised
                    .kill
                    .send(answer)
                    .await
                    .map_err(|_| anyhow::anyhow!("{}'s supervisor is gone", service.name()))?;
                answered
                    .await
                    .map_err(|_| anyhow::anyhow!("{}'s supervisor is gone", service.name()))?
            }
        }
    }

    async fn unplanned_restarts(&self) -> anyhow::Result<BTreeMap<Target, u32>> {
        let mut all = self.unplanned_exits.lock().expect("exits lock").clone();
        let kills = self.container_kills.lock().expect("kills lock").clone();
        for target in [Target::Postgres, Target::Broker] {
            let container = self.container(target);
            let restarts = restart_count(&container.id).await?;
            let extra = restarts
                .saturating_sub(container.restarts_at_start)
                .saturating_sub(kills.get(&target).copied().unwrap_or(0));
            if extra > 0 {
                all.insert(target, extra);
            }
        }
        Ok(all)
    }
}

/// Runs one service as a child process for as long as the platform lives:
/// kills and restarts it on request, restarts it when it exits by itself.
async fn supervise(
    target: Target,
    exe: PathBuf,
    env: Vec<(String, String)>,
    mut requests: mpsc::Receiver<KillRequest>,
    unplanned_exits: Arc<Mutex<BTreeMap<Target, u32>>>,
) {
    let spawn = || {
        let verbose = std::env::var("TEST_LOG").is_ok_and(|v| v == "1");
        let output = || {
            if verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            }
        };
        Command::new(&exe)
            .arg(target.name())
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ({})", target.name(), exe.display()))
    };
    let mut child: Option<Child> = None;
    loop {
        let Some(running) = child.as_mut() else {
            match spawn() {
                Ok(started) => child = Some(started),
                Err(error) => {
                    say(format!("{error:#}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        };
        enum Next {
            Exited(std::io::Result<std::process::ExitStatus>),
            Request(Option<KillRequest>),
        }
        let next = tokio::select! {
            status = running.wait() => Next::Exited(status),
            request = requests.recv() => Next::Request(request),
        };
        match next {
            Next::Exited(status) => {
                say(format!(
                    "{} exited by itself ({status:?}); starting it again",
                    target.name()
                ));
                *unplanned_exits
                    .lock()
                    .expect("exits lock")
                    .entry(target)
                    .or_default() += 1;
                child = None;
                // Like a supervisor's restart delay, so a service that
                // cannot start does not spin.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Next::Request(None) => return,
            Next::Request(Some(answer)) => {
                let mut killed = child.take().expect("running");
                let result = async {
                    killed.start_kill()?;
                    killed.wait().await?;
                    child = Some(spawn()?);
                    anyhow::Ok(())
                }
                .await;
                let _ = answer.send(result);
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

async fn run_container(args: &[String]) -> anyhow::Result<Container> {
    let mut all: Vec<&str> = vec![
        "run",
        "-d",
        "--network",
        "host",
        "--restart",
        "unless-stopped",
        "--label",
    ];
    let label = format!("{CONTAINER_LABEL}=1");
    all.push(&label);
    all.extend(args.iter().map(String::as_str));
    let id = docker(&all).await?;
    if id.is_empty() {
        bail!("docker run printed no container id");
    }
    Ok(Container {
        id,
        restarts_at_start: 0,
    })
}

/// PostgreSQL on the host's network at `port`. fsync and full-page writes
/// are off (they guard against a machine crash, not a killed process), but
/// commits stay synchronous: with `synchronous_commit = off` a commit is
/// acknowledged before its WAL leaves the server's memory, and SIGKILL
/// would lose acknowledged requests.
/// The database role each service connects as (`service_kit::db`).
fn database_role(target: Target) -> &'static str {
    match target {
        Target::CommandService => service_kit::db::COMMAND,
        Target::QueryService => service_kit::db::QUERY,
        Target::SagaOrchestrator => service_kit::db::SAGA,
        Target::Projector => service_kit::db::PROJECTOR,
        other => unreachable!("{other:?} is not a service"),
    }
}

fn role_url(pg_port: &u16, role: &str) -> String {
    let password = crate::infra::test_password(role);
    format!("postgres://{role}:{password}@127.0.0.1:{pg_port}/{DATABASE}")
}

async fn start_postgres(image: &str, port: u16) -> anyhow::Result<Container> {
    let args: Vec<String> = [
        "--shm-size",
        "256m",
        "-e",
        &format!("POSTGRES_USER={PG_USER}"),
        "-e",
        &format!("POSTGRES_PASSWORD={PG_PASSWORD}"),
        image,
        "postgres",
        "-c",
        "max_connections=300",
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        &format!("port={port}"),
        "-c",
        "fsync=off",
        "-c",
        "full_page_writes=off",
    ]
    .map(str::to_owned)
    .to_vec();
    run_container(&args)
        .await
        .with_context(|| format!("starting {image}"))
}

/// The broker on the host's network at `port`, advertising that address.
async fn start_broker(image: &str, kind: &str, port: u16) -> anyhow::Result<Container> {
    let address = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = Vec::new();
    let mut env = |key: &str, value: String| {
        args.push("-e".into());
        args.push(format!("{key}={value}"));
    };
    match kind {
        k if k.starts_with("tansu") => {
            env("BROKER_LISTEN", address.clone());
            env("BROKER_ADVERTISED", address.clone());
        }
        "apache" => {
            let controller = free_port()?;
            env("KAFKA_NODE_ID", "1".into());
            env("KAFKA_PROCESS_ROLES", "broker,controller".into());
            env(
                "KAFKA_LISTENERS",
                format!("PLAINTEXT://{address},CONTROLLER://127.0.0.1:{controller}"),
            );
            env(
                "KAFKA_ADVERTISED_LISTENERS",
                format!("PLAINTEXT://{address}"),
            );
            env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into());
            env(
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".into(),
            );
            env(
                "KAFKA_CONTROLLER_QUORUM_VOTERS",
                format!("1@127.0.0.1:{controller}"),
            );
            env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".into());
            env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1".into());
            env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".into());
            env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".into());
        }
        other => bail!("KAFKA_KIND must be `tansu` or `apache`, not `{other}`"),
    }
    args.push(image.to_owned());
    run_container(&args)
        .await
        .with_context(|| format!("starting {image}"))
}
