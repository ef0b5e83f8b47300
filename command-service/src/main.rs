use clap::Parser;
use command_service::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let common = config.common.clone();
    service_kit::service_main(
        command_service::SERVICE,
        &common,
        config.http_addr,
        |listener, shutdown| command_service::run(config, listener, shutdown),
    )
    .await
}
