use clap::Parser;
use projector::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, config } = Cli::parse();
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
