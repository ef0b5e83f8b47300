#[tokio::main]
async fn main() -> anyhow::Result<()> {
    query_service::main_with_args(std::env::args_os()).await
}
