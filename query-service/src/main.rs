use clap::Parser;
use query_service::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let common = config.common.clone();
    service_kit::service_main(
        query_service::SERVICE,
        &common,
        config.http_addr,
        |listener, shutdown| query_service::run(config, listener, shutdown),
    )
    .await
}
