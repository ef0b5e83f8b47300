//! A real Prometheus scraping the platform's services, started with the
//! same script and alert rules as compose's (`compose/prometheus/`), and
//! `promtool`. Both are Debian's programs: `make test` finds them
//! (`PROMETHEUS_BIN`, `PROMTOOL`) in the base image's root filesystem or
//! extracts them from the package.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::eventually;
use crate::gateway::{Watched, address, free_port};
use crate::platform::Platform;

/// `compose/prometheus`: the start script, the rules and their tests.
pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/prometheus")
}

/// Prometheus, running until dropped.
pub struct Prometheus {
    pub url: String,
    process: Watched,
    dir: PathBuf,
}

impl Prometheus {
    /// Scraping `platform`'s four services every second.
    pub async fn start(platform: &Platform) -> Self {
        let orchestrator = platform.orchestrator.as_ref().expect("running");
        let addrs = [
            ("COMMAND_SERVICE_ADDR", address(&platform.command.url)),
            ("QUERY_SERVICE_ADDR", address(&platform.query.url)),
            ("SAGA_ORCHESTRATOR_ADDR", address(&orchestrator.url)),
            ("PROJECTOR_ADDR", address(&platform.projector.url)),
        ];
        // The port is chosen here and bound by Prometheus a moment later;
        // if something took it meanwhile, Prometheus exits and another is
        // tried.
        for _ in 0..5 {
            if let Some(prometheus) = Self::try_start(&addrs).await {
                return prometheus;
            }
        }
        panic!("Prometheus could not bind a free port in five tries");
    }

    async fn try_start(addrs: &[(&str, String)]) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("orders-prometheus-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("creating Prometheus' directory");
        let port = free_port();
        let mut command = Command::new("sh");
        command
            .env("PROMETHEUS_BIN", program("PROMETHEUS_BIN", "prometheus"))
            .env("PROMETHEUS_DATA", &dir)
            .env("PROMETHEUS_LISTEN", format!("127.0.0.1:{port}"))
            .env("SCRAPE_INTERVAL", "1s")
            .envs(addrs.iter().map(|(name, value)| (name, value)));
        let start = config_dir().join("start.sh");
        let process = Watched::spawn(
            command,
            "sh".as_ref(),
            &[start.as_os_str()],
            &dir.join("prometheus.log"),
        );
        let mut prometheus = Self {
            url: format!("http://127.0.0.1:{port}"),
            process,
            dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return Some(prometheus);
            }
            let exited = prometheus.process.exited().is_some();
            if exited || Instant::now() >= deadline {
                eprintln!("Prometheus did not start:\n{}", prometheus.log());
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What Prometheus wrote to its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`'s `data`, failing unless its status is success.
    pub async fn api(&self, path: &str) -> anyhow::Result<Value> {
        let body: Value = reqwest::get(format!("{}/api/v1/{path}", self.url))
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(body["status"] == "success", "{path}: {body}");
        Ok(body["data"].clone())
    }

    /// Waits until every scrape target is up; its targets by job.
    pub async fn all_targets_up(&self) -> Vec<Value> {
        eventually(Duration::from_secs(60), "every target up", || async {
            let data = self.api("targets?state=active").await?;
            let targets = data["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let down: Vec<&Value> = targets.iter().filter(|t| t["health"] != "up").collect();
            anyhow::ensure!(
                targets.len() == 4 && down.is_empty(),
                "targets not all up: {down:?}\nPrometheus' log:\n{}",
                self.log()
            );
            Ok(targets)
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `promtool` with `args` in [`config_dir`]; its output, or an error
/// with the output if it failed.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new(program("PROMTOOL", "promtool"))
        .args(args)
        .current_dir(config_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| anyhow::anyhow!("running promtool: {error}; {HOW}"))?;
    let mut input = child.stdin.take().expect("piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes())?;
    }
    drop(input);
    let output = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(output.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

const HOW: &str = "`make test` finds Debian's prometheus and promtool; \
                   or set PROMETHEUS_BIN and PROMTOOL";

/// The program named by `variable`, else Debian's in the base image's
/// root filesystem under the cache, else `name` from the `PATH`.
fn program(variable: &str, name: &str) -> PathBuf {
    if let Some(set) = std::env::var_os(variable).filter(|v| !v.is_empty()) {
        return PathBuf::from(set);
    }
    let cache = std::env::var_os("ORDERS_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/orders-platform"))
        });
    let cached = cache.and_then(|cache| {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
            .ok()?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .map(|dir| dir.join("usr/bin").join(name))
            .filter(|candidate| candidate.is_file())
            .collect();
        found.sort();
        found.pop()
    });
    cached.unwrap_or_else(|| PathBuf::from(name))
}
