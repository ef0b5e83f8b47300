use clap::Parser;
use projector::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let common = config.common.clone();
    service_kit::service_main(
        projector::SERVICE,
        &common,
        config.http_addr,
        |listener, shutdown| projector::run(config, listener, shutdown),
    )
    .await
}
