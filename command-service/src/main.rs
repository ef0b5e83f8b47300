#[tokio::main]
async fn main() -> anyhow::Result<()> {
    command_service::main_with_args(std::env::args_os()).await
}
