#[tokio::main]
async fn main() -> anyhow::Result<()> {
    saga_orchestrator::main_with_args(std::env::args_os()).await
}
