//! One of the platform's four services, chosen by the first argument:
//! `platform-service command-service|query-service|saga-orchestrator|projector
//! [flags]`. The rest of the command line and the environment are the
//! service's own (`--help` after the name lists them).
//!
//! It runs what that service's `main.rs` runs (`<service>::main_with_args`). It exists because
//! cargo gives an integration test the path of a binary only when the binary
//! belongs to the test's own package (`CARGO_BIN_EXE_<name>`): the
//! crash-safety test (`tests/platform/chaos.rs`) starts the services as child
//! processes from this debug build, so it can kill each with SIGKILL.

use std::ffi::OsString;

use anyhow::bail;

const USAGE: &str =
    "usage: platform-service command-service|query-service|saga-orchestrator|projector [flags]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(service) = args.next() else {
        bail!(USAGE);
    };
    // clap sees the service's name as the program name.
    let argv: Vec<OsString> = std::iter::once(service.clone()).chain(args).collect();
    match service.to_str().unwrap_or_default() {
        "command-service" => command_service::main_with_args(argv).await,
        "query-service" => query_service::main_with_args(argv).await,
        "saga-orchestrator" => saga_orchestrator::main_with_args(argv).await,
        "projector" => projector::main_with_args(argv).await,
        other => bail!("unknown service {other:?}; {USAGE}"),
    }
}
