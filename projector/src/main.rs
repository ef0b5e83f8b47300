#[tokio::main]
async fn main() -> anyhow::Result<()> {
    projector::main_with_args(std::env::args_os()).await
}
