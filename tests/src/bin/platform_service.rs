//! One of the platform's four services, chosen by the first argument:
//! `platform-service command-service|query-service|saga-orchestrator|projector
//! [flags]`. The rest of the command line and the environment are the
//! service's own (`--help` after the name lists them).
//!
//! It runs the same code as that service's `main.rs`. It exists because
//! cargo gives an integration test the path of a binary only when the binary
//! belongs to the test's own package (`CARGO_BIN_EXE_<name>`): the
//! crash-safety test (`tests/platform/chaos.rs`) starts the services as child
//! processes from this debug build, so it can kill each with SIGKILL.

use std::ffi::OsString;

use anyhow::bail;
use clap::Parser;

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
        "command-service" => {
            let config = command_service::Config::parse_from(argv);
            let common = config.common.clone();
            service_kit::service_main(
                command_service::SERVICE,
                &common,
                config.http_addr,
                |listener, shutdown| command_service::run(config, listener, shutdown),
            )
            .await
        }
        "query-service" => {
            let config = query_service::Config::parse_from(argv);
            let common = config.common.clone();
            service_kit::service_main(
                query_service::SERVICE,
                &common,
                config.http_addr,
                |listener, shutdown| query_service::run(config, listener, shutdown),
            )
            .await
        }
        "saga-orchestrator" => {
            let config = saga_orchestrator::Config::parse_from(argv);
            let common = config.common.clone();
            service_kit::service_main(
                saga_orchestrator::SERVICE,
                &common,
                config.http_addr,
                |listener, shutdown| saga_orchestrator::run(config, listener, shutdown),
            )
            .await
        }
        "projector" => {
            use projector::cli::{Cli, Command};
            let Cli { command, config } = Cli::parse_from(argv);
            match command {
                Some(Command::Rebuild { projection }) => {
                    service_kit::telemetry::init(&config.common.log_format, "warn");
                    projector::cli::rebuild(config, projection).await
                }
                None => {
                    let common = config.common.clone();
                    service_kit::service_main(
                        projector::SERVICE,
                        &common,
                        config.http_addr,
                        |listener, shutdown| projector::run(config, listener, shutdown),
                    )
                    .await
                }
            }
        }
        other => bail!("unknown service {other:?}; {USAGE}"),
    }
}
