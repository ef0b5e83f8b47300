//! The gateway (`compose/gateway/nginx.conf.template`) in front of services
//! started in-process: Debian's nginx (`compose/test.sh` installs it) run
//! on the host as a child of the test, from the template compose uses,
//! rendered with the services' addresses, on a free local port.
//!
//! ```ignore
//! let platform = Platform::start().await;
//! let gateway = Gateway::start(&platform).await;
//! platform.client.get(format!("{}/v1/orders", gateway.url)).send().await?;
//! ```
//!
//! nginx runs under a small shell that stops it when its standard input
//! closes: when the [`Gateway`] is dropped, and also when the test process
//! dies without dropping it, so no nginx outlives its test. Its logs, pid
//! file and rendered configuration are in a temporary directory, removed on
//! drop; [`Gateway::access_log`] says which upstream answered each request.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::eventually;
use crate::platform::Platform;

/// The template compose renders too (`compose/gateway/start.sh`).
pub const TEMPLATE: &str = include_str!("../../compose/gateway/nginx.conf.template");

/// The template's placeholders; `compose/gateway/start.sh` fills the same.
pub const PLACEHOLDERS: [&str; 8] = [
    "GATEWAY_LISTEN",
    "COMMAND_SERVICE_ADDR",
    "QUERY_SERVICE_ADDR",
    "SAGA_ORCHESTRATOR_ADDR",
    "PROJECTOR_ADDR",
    "GATEWAY_CONSOLE_DIR",
    "GATEWAY_ACCESS_LOG",
    "GATEWAY_ERROR_LOG",
];

/// The names of the upstreams in the template, as the access log shows them.
pub mod upstream {
    pub const COMMAND_SERVICE: &str = "command_service";
    pub const QUERY_SERVICE: &str = "query_service";
    pub const SAGA_ORCHESTRATOR: &str = "saga_orchestrator";
    pub const PROJECTOR: &str = "projector";
}

/// Where the gateway sends each process's routes: base URLs
/// (`http://127.0.0.1:PORT`), as [`crate::services::RunningService::url`].
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub command_service: String,
    pub query_service: String,
    pub saga_orchestrator: String,
    pub projector: String,
}

impl Upstreams {
    /// The public listeners of `platform`'s services.
    pub fn of(platform: &Platform) -> Self {
        Self {
            command_service: platform.command.url.clone(),
            query_service: platform.query.url.clone(),
            saga_orchestrator: platform.orchestrator_url().to_owned(),
            projector: platform.projector.url.clone(),
        }
    }
}

/// A running gateway; nginx stops when this is dropped.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    nginx: Watched,
    dir: PathBuf,
}

/// Stops the program it runs (nginx, here and in [`crate::prometheus`])
/// when the shell's standard input closes, so that a test process killed
/// mid-run leaves none behind; exits when the program does, with its
/// status. The reader gets the input as fd 3 because an asynchronous
/// list's standard input is /dev/null in a script.
const WATCHDOG: &str = r#"exec 3<&0
"$@" </dev/null &
program=$!
{ read -r _ <&3; kill -TERM "$program" 2>/dev/null; } &
wait "$program""#;

/// A program run on the host under [`WATCHDOG`]: stopped when this is
/// dropped, or when the test process dies.
pub(crate) struct Watched {
    /// Closing it stops the program.
    stdin: Option<ChildStdin>,
    shell: Child,
}

impl Watched {
    /// Runs `program` with `args` under the watchdog, its standard error
    /// to `log`; `command` may already hold its environment.
    pub(crate) fn spawn(
        mut command: Command,
        program: &std::ffi::OsStr,
        args: &[&std::ffi::OsStr],
        log: &Path,
    ) -> Self {
        let stderr = std::fs::File::create(log).expect("creating the program's log");
        let mut shell = command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting a program under sh");
        let stdin = shell.stdin.take();
        Self { stdin, shell }
    }

    /// The program's exit status, once it has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.shell.try_wait().expect("polling the program's shell")
    }
}

impl Watched {
    /// Stops the program and waits for it (at most 10 s, then kills it).
    pub(crate) fn stop(&mut self) {
        // EOF on the watchdog's input: it stops the program (SIGTERM) and
        // exits once the program has.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.shell.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Gateway {
    /// A gateway in front of `platform`'s four services.
    pub async fn start(platform: &Platform) -> Self {
        Self::start_for(Upstreams::of(platform)).await
    }

    /// A gateway in front of `upstreams`, which need not be running.
    pub async fn start_for(upstreams: Upstreams) -> Self {
        // The port is chosen here and bound by nginx a moment later; if
        // something took it meanwhile, nginx exits and another is tried.
        for _ in 0..5 {
            if let Some(gateway) = Self::try_start(&upstreams).await {
                return gateway;
            }
        }
        panic!("the gateway could not bind a free port in five tries");
    }

    /// The access log so far: one line per request, with `upstream=<name>`
    /// (one of [`upstream`]'s, or empty when the gateway answered itself).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// `None` when the port was taken before nginx bound it.
    async fn try_start(upstreams: &Upstreams) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("orders-gateway-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("temp")).expect("creating the gateway's directory");
        let port = free_port();
        let console = Path::new(env!("CARGO_MANIFEST_DIR")).join("../console");
        let console = console.canonicalize().unwrap_or(console);
        let values = [
            format!("127.0.0.1:{port}"),
            address(&upstreams.command_service),
            address(&upstreams.query_service),
            address(&upstreams.saga_orchestrator),
            address(&upstreams.projector),
            console.display().to_string(),
            dir.join("access.log").display().to_string(),
            dir.join("error.log").display().to_string(),
        ];
        let placeholders: Vec<(&str, &str)> = PLACEHOLDERS
            .iter()
            .copied()
            .zip(values.iter().map(String::as_str))
            .collect();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, render(TEMPLATE, &placeholders)).expect("writing nginx.conf");

        let prefix = format!("{}/", dir.display());
        let error_log = dir.join("error.log");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-p".as_ref(),
            prefix.as_ref(),
            "-c".as_ref(),
            conf.as_os_str(),
            "-e".as_ref(),
            error_log.as_os_str(),
        ];
        // As root, nginx's workers would run as nobody, who may not read a
        // checkout under a private home directory.
        if is_root() {
            args.extend([
                std::ffi::OsStr::new("-g"),
                std::ffi::OsStr::new("user root;"),
            ]);
        }
        let nginx = Watched::spawn(
            Command::new("sh"),
            nginx_binary().as_os_str(),
            &args,
            &dir.join("stderr.log"),
        );
        let mut gateway = Self {
            url: format!("http://127.0.0.1:{port}"),
            nginx,
            dir,
        };
        match gateway.wait_until_up().await {
            Ok(()) => Some(gateway),
            Err(status) => {
                let log = format!("{}{}", gateway.error_log(), gateway.stderr_log());
                if log.contains("Address already in use") {
                    None
                } else {
                    panic!("nginx exited ({status}) at start:\n{log}");
                }
            }
        }
    }

    /// Waits until `/health/gateway` answers 200; `Err` if nginx exited.
    async fn wait_until_up(&mut self) -> Result<(), ExitStatus> {
        let client = reqwest::Client::new();
        let health = format!("{}/health/gateway", self.url);
        let exited = eventually(Duration::from_secs(20), "the gateway starts", || {
            let exited = self.nginx.exited();
            let (client, health) = (client.clone(), health.clone());
            async move {
                if let Some(status) = exited {
                    return Ok(Some(status));
                }
                client.get(&health).send().await?.error_for_status()?;
                Ok(None)
            }
        })
        .await;
        exited.map_or(Ok(()), Err)
    }

    fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // nginx first (SIGTERM: the master stops its workers), then its
        // directory.
        self.nginx.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `template` with each `${NAME}` of `placeholders` replaced by its value.
/// Panics if a placeholder outside the comments is left: the template and
/// this list (and `compose/gateway/start.sh`'s) must name the same ones.
pub fn render(template: &str, placeholders: &[(&str, &str)]) -> String {
    let mut rendered = template.to_owned();
    for (name, value) in placeholders {
        rendered = rendered.replace(&format!("${{{name}}}"), value);
    }
    let left: Vec<&str> = rendered
        .lines()
        .filter(|line| !line.trim_start().starts_with('#') && line.contains("${"))
        .collect();
    assert!(
        left.is_empty(),
        "unfilled placeholders in the gateway's template: {left:?}"
    );
    rendered
}

/// `host:port` of a base URL.
pub(crate) fn address(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .and_then(|listener| listener.local_addr())
        .expect("a free local port")
        .port()
}

/// `NGINX` if set, else Debian's `/usr/sbin/nginx` (often not on a user's
/// `PATH`), else `nginx` from the `PATH`.
fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NGINX") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.exists() {
        return debian;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.exists());
    on_path.unwrap_or_else(|| {
        panic!("nginx is not installed: `make test` installs it (apt-get install nginx)")
    })
}

/// Whether this process runs as root (`/proc/self` belongs to its user).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_start_sh_and_the_harness_name_the_same_placeholders() {
        let start_sh = include_str!("../../compose/gateway/start.sh");
        for name in PLACEHOLDERS {
            assert!(start_sh.contains(name), "start.sh does not fill {name}");
            assert!(
                TEMPLATE.contains(&format!("${{{name}}}")),
                "the template has no {name}"
            );
        }
        let filled: Vec<(&str, &str)> = PLACEHOLDERS.iter().map(|name| (*name, "x")).collect();
        render(TEMPLATE, &filled);
    }
}
