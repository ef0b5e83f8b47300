use clap::Parser;
use saga_orchestrator::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let common = config.common.clone();
    service_kit::service_main(
        saga_orchestrator::SERVICE,
        &common,
        config.http_addr,
        |listener, shutdown| saga_orchestrator::run(config, listener, shutdown),
    )
    .await
}
