//! What gets killed, and how: the [`Faults`] trait, the schedule that
//! injects faults during the load, the probes that say a target serves
//! again, and [`ComposeFaults`] for the platform `make up` runs (the
//! short form's [`super::local::LocalPlatform`] is the other
//! implementation).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;

use super::{Endpoints, poll_until, say};

/// A process of the platform that can be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    CommandService,
    QueryService,
    SagaOrchestrator,
    Projector,
    Broker,
    Postgres,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::CommandService,
        Target::QueryService,
        Target::SagaOrchestrator,
        Target::Projector,
        Target::Broker,
        Target::Postgres,
    ];

    /// The compose service's name, also used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::CommandService => "command-service",
            Target::QueryService => "query-service",
            Target::SagaOrchestrator => "saga-orchestrator",
            Target::Projector => "projector",
            Target::Broker => "kafka",
            Target::Postgres => "postgres",
        }
    }

    pub fn parse(name: &str) -> Option<Target> {
        match name {
            "broker" => Some(Target::Broker),
            "postgresql" => Some(Target::Postgres),
            _ => Target::ALL.into_iter().find(|t| t.name() == name),
        }
    }

    /// The HTTP base URL of a service; `None` for PostgreSQL and the broker.
    pub fn url(self, endpoints: &Endpoints) -> Option<&str> {
        match self {
            Target::CommandService => Some(&endpoints.command),
            Target::QueryService => Some(&endpoints.query),
            Target::SagaOrchestrator => Some(&endpoints.orchestrator),
            Target::Projector => Some(&endpoints.projector),
            Target::Broker | Target::Postgres => None,
        }
    }
}

/// Kills a process of the platform with SIGKILL. Whatever supervises the
/// platform (compose's `restart: unless-stopped`, or the test's own
/// supervisor) starts it again; `kill` returns once the new process (or
/// container) has started, not necessarily once it serves.
pub trait Faults {
    fn kill(&self, target: Target) -> impl Future<Output = anyhow::Result<()>>;

    /// Restarts per target that no fault caused (a process that exited or
    /// crashed by itself), counted since the platform was handed over.
    fn unplanned_restarts(&self) -> impl Future<Output = anyhow::Result<BTreeMap<Target, u32>>>;
}

/// One fault as it happened.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub target: Target,
    /// When it was killed, from the start of the load.
    pub at: Duration,
    /// When it was killed.
    pub instant: Instant,
    /// How long until it served again; `None` if it did not within the
    /// recovery bound (or could not be killed: see `error`).
    pub recovered_after: Option<Duration>,
    pub error: Option<String>,
}

/// When each of `count` faults is due, from the start of a load of
/// `load`: spread evenly from 10% to 85% of it, so the last one falls
/// near the end and the platform has to recover under load.
pub fn schedule(count: usize, load: Duration) -> Vec<Duration> {
    match count {
        0 => vec![],
        1 => vec![load.mul_f64(0.5)],
        n => (0..n)
            .map(|i| load.mul_f64(0.10 + 0.75 * i as f64 / (n - 1) as f64))
            .collect(),
    }
}

/// Kills the targets one after the other at their scheduled times (a
/// fault waits for the previous target to serve again), and records each.
pub async fn inject(
    faults: &impl Faults,
    endpoints: &Endpoints,
    targets: &[Target],
    start: Instant,
    load: Duration,
    recovery_bound: Duration,
) -> Vec<FaultRecord> {
    let mut records = Vec::with_capacity(targets.len());
    for (&target, due) in targets.iter().zip(schedule(targets.len(), load)) {
        // A scheduled time, not a wait for a condition.
        tokio::time::sleep_until((start + due).into()).await;
        let instant = Instant::now();
        let at = instant - start;
        say(format!(
            "fault: SIGKILL {} at {:.1} s",
            target.name(),
            at.as_secs_f64()
        ));
        let mut record = FaultRecord {
            target,
            at,
            instant,
            recovered_after: None,
            error: None,
        };
        match faults.kill(target).await {
            Ok(()) => match serves_again(target, endpoints, recovery_bound).await {
                Ok(()) => {
                    let after = instant.elapsed();
                    say(format!(
                        "fault: {} serves again after {:.1} s",
                        target.name(),
                        after.as_secs_f64()
                    ));
                    record.recovered_after = Some(after);
                }
                Err(error) => record.error = Some(format!("{error:#}")),
            },
            Err(error) => record.error = Some(format!("killing it failed: {error:#}")),
        }
        if let Some(error) = &record.error {
            say(format!("fault: {}: {error}", target.name()));
        }
        records.push(record);
    }
    records
}

/// Waits (bounded) until `target` serves again: PostgreSQL answers a
/// query, the broker a metadata request, a service `/health/ready` with
/// 200.
pub async fn serves_again(
    target: Target,
    endpoints: &Endpoints,
    bound: Duration,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    poll_until(bound, &format!("{} serving again", target.name()), || {
        probe(target, endpoints, &http)
    })
    .await
}

/// One look at whether `target` serves.
pub async fn probe(
    target: Target,
    endpoints: &Endpoints,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    match target {
        Target::Postgres => {
            let mut conn = tokio::time::timeout(
                Duration::from_secs(3),
                sqlx::PgConnection::connect(&endpoints.database_url),
            )
            .await
            .context("connecting timed out")??;
            sqlx::query("select 1").execute(&mut conn).await?;
            Ok(())
        }
        Target::Broker => crate::infra::broker_answers(&endpoints.kafka_brokers).await,
        service => {
            let url = format!(
                "{}/health/ready",
                service.url(endpoints).expect("a service")
            );
            let response = http.get(&url).send().await?;
            let status = response.status();
            if !status.is_success() {
                bail!("{url} answered {status}: {}", response.text().await?);
            }
            Ok(())
        }
    }
}

/// Runs the docker CLI; returns its standard output, trimmed.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("docker")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .context("running docker")?;
    if !output.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A container's start time and restart count, from `docker inspect`.
async fn container_state(id: &str) -> anyhow::Result<(String, bool, u32)> {
    let out = docker(&[
        "inspect",
        "-f",
        "{{.State.StartedAt}} {{.State.Running}} {{.RestartCount}}",
        id,
    ])
    .await?;
    let mut parts = out.split_whitespace();
    let (Some(started), Some(running), Some(restarts)) = (parts.next(), parts.next(), parts.next())
    else {
        bail!("unexpected docker inspect output {out:?}");
    };
    Ok((started.to_owned(), running == "true", restarts.parse()?))
}

/// The container's restart count (restarts by its restart policy).
pub async fn restart_count(id: &str) -> anyhow::Result<u32> {
    Ok(container_state(id).await?.2)
}

/// Kills the container's main process with SIGKILL and waits (bounded)
/// until its restart policy has started the container again.
///
/// The process is killed from the host (`kill -KILL <pid>`), not with
/// `docker kill -s KILL`: Docker counts `docker kill` as a manual stop and
/// then ignores the restart policy (seen on this machine's Docker 20.10:
/// the container stayed down), while a process that dies by itself is a
/// crash, which the policy restarts. Where the host's process cannot be
/// signalled (not root, or the engine runs elsewhere), it falls back to
/// `docker kill -s KILL` and starts the container itself, as the policy
/// would have.
pub async fn kill_container(id: &str, bound: Duration) -> anyhow::Result<()> {
    let (started_before, _, _) = container_state(id).await?;
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", id]).await?;
    let killed_on_host = pid != "0"
        && tokio::process::Command::new("kill")
            .args(["-KILL", &pid])
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success());
    if !killed_on_host {
        docker(&["kill", "-s", "KILL", id]).await?;
        docker(&["start", id]).await?;
    }
    poll_until(bound, &format!("container {id} restarted"), || async {
        let (started, running, _) = container_state(id).await?;
        if started == started_before || !running {
            bail!("not restarted yet (running: {running})");
        }
        Ok(())
    })
    .await
}

/// The platform `make up` runs, its containers found by their compose
/// labels and restarted by compose's `restart: unless-stopped`.
pub struct ComposeFaults {
    project: String,
    /// Each target's container and its restart count when handed over.
    containers: BTreeMap<Target, (String, u32)>,
    kills: std::sync::Mutex<BTreeMap<Target, u32>>,
}

impl ComposeFaults {
    /// Finds the containers of compose project `project` (one per target).
    pub async fn find(project: &str) -> anyhow::Result<Self> {
        let mut containers = BTreeMap::new();
        for target in Target::ALL {
            let id = Self::container(project, target).await?;
            let restarts = restart_count(&id).await?;
            containers.insert(target, (id, restarts));
        }
        Ok(Self {
            project: project.to_owned(),
            containers,
            kills: Default::default(),
        })
    }

    async fn container(project: &str, target: Target) -> anyhow::Result<String> {
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--filter",
            &format!("label=com.docker.compose.service={}", target.name()),
        ])
        .await?;
        let ids: Vec<&str> = ids.lines().collect();
        match ids.as_slice() {
            [id] => Ok((*id).to_owned()),
            [] => bail!(
                "no running container of compose service {} in project {project}; run `make up` first",
                target.name()
            ),
            _ => bail!(
                "{} containers of compose service {} in project {project}; expected one",
                ids.len(),
                target.name()
            ),
        }
    }
}

impl Faults for ComposeFaults {
    async fn kill(&self, target: Target) -> anyhow::Result<()> {
        let (id, _) = self
            .containers
            .get(&target)
            .with_context(|| format!("no container for {} in {}", target.name(), self.project))?;
        *self
            .kills
            .lock()
            .expect("kills lock")
            .entry(target)
            .or_default() += 1;
        kill_container(id, Duration::from_secs(60)).await
    }

    async fn unplanned_restarts(&self) -> anyhow::Result<BTreeMap<Target, u32>> {
        let kills = self.kills.lock().expect("kills lock").clone();
        let mut unplanned = BTreeMap::new();
        for (target, (id, before)) in &self.containers {
            let now = restart_count(id).await?;
            let planned = kills.get(target).copied().unwrap_or(0);
            let extra = now.saturating_sub(*before).saturating_sub(planned);
            if extra > 0 {
                unplanned.insert(*target, extra);
            }
        }
        Ok(unplanned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_spread_from_a_tenth_to_most_of_the_load() {
        let load = Duration::from_secs(100);
        assert_eq!(schedule(0, load), Vec::<Duration>::new());
        assert_eq!(schedule(1, load), vec![Duration::from_secs(50)]);
        let times = schedule(4, load);
        assert_eq!(times.first(), Some(&Duration::from_secs(10)));
        assert_eq!(times.last(), Some(&Duration::from_secs(85)));
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }

    #[test]
    fn targets_are_named_as_compose_names_them() {
        for target in Target::ALL {
            assert_eq!(Target::parse(target.name()), Some(target));
        }
        assert_eq!(Target::parse("broker"), Some(Target::Broker));
        assert_eq!(Target::parse("nginx"), None);
    }
}
