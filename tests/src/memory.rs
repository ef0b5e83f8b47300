//! Peak resident memory of each process a benchmark runs: its own, which
//! hosts the services it starts, and every process of its containers
//! (PostgreSQL's server and backends, the broker).
//!
//! Read from `/proc/<pid>/status` every [`INTERVAL`] while the benchmark
//! runs, so a process that exits before the end (a backend whose
//! connection closed) still counts: `VmHWM`, the kernel's high-water mark
//! of a process's resident set, which counts the shared memory it touched
//! (PostgreSQL's shared buffers, in every backend that read them), and the
//! largest `RssAnon` seen, its private memory. Watching starts by
//! resetting the mark of the processes already running
//! (`/proc/<pid>/clear_refs`), so what is reported is the peak within the
//! watched part, not the benchmark's set-up (filling the log, say).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::infra::BenchInfra;

/// How often the processes are sampled.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// A running watch; [`PeakMemory::report`] stops it.
pub struct PeakMemory {
    stop: CancellationToken,
    task: JoinHandle<Peaks>,
}

/// One process's peak, under the name of what runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peak {
    /// `benchmark` (this process), or the container's name.
    pub owner: String,
    pub pid: u32,
    /// The process's command name (`/proc/<pid>/comm`).
    pub command: String,
    /// The peak resident set (`VmHWM`), in KiB.
    pub kib: u64,
    /// The largest private resident set sampled (`RssAnon`), in KiB.
    pub private_kib: u64,
}

type Peaks = BTreeMap<(String, u32), Peak>;

impl PeakMemory {
    /// Starts watching this process and every process of the benchmark's
    /// containers.
    pub fn watch(bench: &BenchInfra) -> anyhow::Result<Self> {
        Self::watch_containers(bench.containers())
    }

    /// Starts watching this process and every process of `containers`
    /// (each the name to report it under, and its id).
    pub fn watch_containers<'a>(
        containers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> anyhow::Result<Self> {
        let mut roots = vec![("benchmark".to_owned(), std::process::id())];
        for (name, id) in containers {
            roots.push((name.to_owned(), container_pid(id)?));
        }
        for (_, pid) in processes(&roots) {
            // Only possible for our own processes or as root; without it
            // the marks reach back to each process's start.
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut peaks = Peaks::new();
            loop {
                sample(&roots, &mut peaks);
                tokio::select! {
                    () = stopped.cancelled() => break,
                    () = tokio::time::sleep(INTERVAL) => {}
                }
            }
            sample(&roots, &mut peaks);
            peaks
        });
        Ok(Self { stop, task })
    }

    /// Stops watching; returns every process seen, largest peak first.
    pub async fn stop(self) -> anyhow::Result<Vec<Peak>> {
        self.stop.cancel();
        let mut peaks: Vec<Peak> = self
            .task
            .await
            .context("the memory watch panicked")?
            .into_values()
            .collect();
        peaks.sort_by(|a, b| b.kib.cmp(&a.kib).then(a.pid.cmp(&b.pid)));
        Ok(peaks)
    }

    /// Stops watching and renders, for each owner, the largest process of
    /// each program it ran as a Markdown table, with how many processes of
    /// that program were seen: a browser or a load generator the benchmark
    /// starts is a row of its own, not what hides the benchmark's process.
    pub async fn report(self, what: &str) -> anyhow::Result<String> {
        let peaks = self.stop().await?;
        Ok(render(what, &peaks))
    }
}

/// [`PeakMemory::report`]'s table of `peaks` (largest first, as
/// [`PeakMemory::stop`] gives them).
fn render(what: &str, peaks: &[Peak]) -> String {
    let mut programs: BTreeMap<(&str, &str), (&Peak, usize)> = BTreeMap::new();
    for peak in peaks {
        programs
            .entry((peak.owner.as_str(), peak.command.as_str()))
            .and_modify(|(_, seen)| *seen += 1)
            .or_insert((peak, 1));
    }
    let mut table = format!(
        "| peak resident memory during {what} | largest process | its peak (of it private) | processes seen |\n|---|---|---|---|\n"
    );
    for ((owner, command), (largest, seen)) in programs {
        table.push_str(&format!(
            "| {owner} | {command} (pid {}) | {:.0} MiB ({:.0} MiB) | {seen} |\n",
            largest.pid,
            largest.kib as f64 / 1024.0,
            largest.private_kib as f64 / 1024.0
        ));
    }
    table
}

/// The running containers of compose project `project`: each its service's
/// name and its id.
pub fn compose_containers(project: &str) -> anyhow::Result<Vec<(String, String)>> {
    let listed = docker(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--format",
        "{{.Label \"com.docker.compose.service\"}} {{.ID}}",
    ])?;
    Ok(listed
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(service, id)| (service.to_owned(), id.to_owned()))
        .collect())
}

/// The host pid of a container's first process.
fn container_pid(id: &str) -> anyhow::Result<u32> {
    docker(&["inspect", "--format", "{{.State.Pid}}", id])?
        .trim()
        .parse()
        .with_context(|| format!("the pid of container {id}"))
}

/// What `docker <args>` printed; an error with what it said if it failed.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("running docker {}", args[0]))?;
    anyhow::ensure!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn sample(roots: &[(String, u32)], peaks: &mut Peaks) {
    for (owner, pid) in processes(roots) {
        let Some((kib, private_kib)) = resident(pid) else {
            continue; // exited meanwhile
        };
        let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|name| name.trim().to_owned())
            .unwrap_or_default();
        let peak = peaks.entry((owner.clone(), pid)).or_insert(Peak {
            owner,
            pid,
            command,
            kib: 0,
            private_kib: 0,
        });
        peak.kib = peak.kib.max(kib);
        peak.private_kib = peak.private_kib.max(private_kib);
    }
}

/// Each root and its descendants, with the root's owner.
fn processes(roots: &[(String, u32)]) -> Vec<(String, u32)> {
    let mut parents = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(parent) = parent_of(pid) {
                parents.insert(pid, parent);
            }
        }
    }
    let mut found: Vec<(String, u32)> = roots.to_vec();
    for &pid in parents.keys() {
        let mut ancestor = pid;
        // Bounded: a pid's chain of parents ends at 1 (or 0).
        for _ in 0..64 {
            if let Some((owner, _)) = roots.iter().find(|(_, root)| *root == ancestor) {
                if ancestor != pid {
                    found.push((owner.clone(), pid));
                }
                break;
            }
            match parents.get(&ancestor) {
                Some(&parent) if parent > 1 => ancestor = parent,
                _ => break,
            }
        }
    }
    found
}

/// The parent pid, from `/proc/<pid>/stat` (the field after the command
/// name, which is in parentheses and may itself hold spaces).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// `VmHWM` and `RssAnon` of a process, in KiB.
fn resident(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("RssAnon:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_its_children_are_found_with_their_peaks() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id();
        let found = processes(&[("benchmark".to_owned(), me)]);
        assert!(found.contains(&("benchmark".to_owned(), me)));
        assert!(found.contains(&("benchmark".to_owned(), child.id())));
        let mut peaks = Peaks::new();
        sample(&[("benchmark".to_owned(), me)], &mut peaks);
        let mine = &peaks[&("benchmark".to_owned(), me)];
        assert!(mine.kib > 1024 && mine.private_kib > 0, "{mine:?}");
        assert!(mine.private_kib <= mine.kib, "{mine:?}");
        assert_eq!(
            peaks[&("benchmark".to_owned(), child.id())].command,
            "sleep"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn each_program_of_an_owner_is_a_row_with_its_largest_process() {
        let peak = |owner: &str, pid, command: &str, mib: u64| Peak {
            owner: owner.to_owned(),
            pid,
            command: command.to_owned(),
            kib: mib * 1024,
            private_kib: mib * 512,
        };
        let peaks = [
            peak("benchmark", 9, "chromium", 220),
            peak("postgres", 20, "postgres", 61),
            peak("benchmark", 1, "bench-saga-list", 90),
            peak("benchmark", 10, "chromium", 50),
            peak("postgres", 21, "postgres", 30),
        ];
        let table = render("the views", &peaks);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                "| benchmark | bench-saga-list (pid 1) | 90 MiB (45 MiB) | 1 |",
                "| benchmark | chromium (pid 9) | 220 MiB (110 MiB) | 2 |",
                "| postgres | postgres (pid 20) | 61 MiB (30 MiB) | 2 |",
            ]
        );
        assert!(table.starts_with("| peak resident memory during the views |"));
    }
}
