//! What the benchmark binaries share.

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use event_relay::MessageFormat;

use crate::services::RunningService;

/// How the relay publishes, as the benchmarks take it.
#[derive(Debug, clap::Args)]
pub struct RelayFormatArgs {
    /// What each relayed message holds (RELAY_MESSAGE_FORMAT): one event
    /// with the CloudEvents headers, one without, or a batch of events.
    #[arg(
        long,
        default_value = "cloudevents",
        value_parser = command_service::message_format_parser(),
        conflicts_with = "without_cloudevents_headers"
    )]
    relay_format: MessageFormat,
    /// The same as `--relay-format plain`: publish events without their
    /// CloudEvents headers, to see what the headers cost the broker.
    #[arg(long)]
    without_cloudevents_headers: bool,
}

impl RelayFormatArgs {
    pub fn format(&self) -> MessageFormat {
        if self.without_cloudevents_headers {
            MessageFormat::Plain
        } else {
            self.relay_format
        }
    }
}

/// How long a benchmark's runtime may take to stop its remaining tasks
/// after the benchmark returned; the process exits then either way.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A benchmark binary's `main`: runs `body` on a multi-threaded runtime
/// (until it ends or Ctrl-C), prints its error if any, and exits.
///
/// `body` should stop every service it started (see [`Services`]) and drop
/// its own Kafka clients before its containers are removed: a consumer
/// dropped after its broker is gone waits in librdkafka's close for a
/// group coordinator that never answers, logging `AllBrokersDown`, and the
/// runtime's shutdown would wait for it forever. As a last resort the
/// runtime is given [`SHUTDOWN_GRACE`] to finish whatever is left, so a
/// benchmark always ends.
pub fn main(body: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("building the runtime failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Interrupted, the body is dropped: its services are cancelled and its
    // containers removed (their Drop), so nothing is left running.
    let result = runtime.block_on(async {
        tokio::select! {
            result = body => result,
            () = interrupted() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    let stopping = Instant::now();
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    if stopping.elapsed() >= SHUTDOWN_GRACE {
        eprintln!(
            "some task did not stop within {SHUTDOWN_GRACE:?} of the benchmark's end; exiting anyway"
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C; never, where it cannot be listened for.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The services a benchmark runs in its own process, stopped together.
#[derive(Default)]
pub struct Services(Vec<RunningService>);

/// Longest wait for one service to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

impl Services {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a running service; returns its URL.
    pub fn add(&mut self, service: RunningService) -> String {
        let url = service.url.clone();
        self.0.push(service);
        url
    }

    /// Waits until every service answers `GET /health/ready` with 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        for service in &self.0 {
            loop {
                let ready = client
                    .get(format!("{}/health/ready", service.url))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    anyhow::bail!("{} did not become ready in {timeout:?}", service.name);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Cancels every service and waits until each has finished (its Kafka
    /// consumers closed, its producers flushed), reporting the ones that
    /// failed or took longer than 30 s.
    pub async fn stop(self) {
        let stops = self.0.into_iter().map(|service| async move {
            let name = service.name;
            match tokio::time::timeout(STOP_TIMEOUT, service.stop()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => eprintln!("{name} stopped with an error: {error:#}"),
                Err(_) => eprintln!("{name} did not stop within {STOP_TIMEOUT:?}"),
            }
        });
        futures::future::join_all(stops).await;
    }
}

/// POSTs `body` as JSON; a status other than 2xx is an error naming it.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let response = client.post(url).json(&body).send().await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
    anyhow::ensure!(status.is_success(), "POST {url}: {status}: {body}");
    Ok(body)
}

/// The products and customers the load benchmarks place orders with:
/// enough stock and money that every saga succeeds.
pub struct Catalogue {
    pub skus: Vec<String>,
    pub customers: Vec<String>,
}

impl Catalogue {
    /// Registers `products` products (SKUs `<prefix>-<i>`) and `customers`
    /// customers with `deposit_cents` each through the command-service at
    /// `url`.
    pub async fn create(
        client: &reqwest::Client,
        url: &str,
        prefix: &str,
        products: usize,
        customers: usize,
        deposit_cents: i64,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        use serde_json::json;
        let mut skus = Vec::with_capacity(products);
        for i in 0..products {
            let sku = format!("{prefix}-{i}");
            post(
                client,
                &format!("{url}/v1/products"),
                json!({"sku": sku, "name": format!("Product {i}"), "price_cents": 1000 + i, "initial_stock": 1_000_000}),
            )
            .await?;
            skus.push(sku);
        }
        let mut ids = Vec::with_capacity(customers);
        for i in 0..customers {
            let customer = post(
                client,
                &format!("{url}/v1/customers"),
                json!({"name": format!("Customer {i}"), "email": format!("{prefix}-{i}@example.com")}),
            )
            .await?;
            let id = customer["customer_id"]
                .as_str()
                .context("customer_id")?
                .to_owned();
            post(
                client,
                &format!("{url}/v1/customers/{id}/deposits"),
                json!({"amount_cents": deposit_cents}),
            )
            .await?;
            ids.push(id);
        }
        Ok(Self {
            skus,
            customers: ids,
        })
    }

    /// The `n`th order's body: one or two lines over the catalogue, spread
    /// evenly over products and customers, shipped to GB.
    pub fn order(&self, n: usize) -> serde_json::Value {
        let first = &self.skus[n % self.skus.len()];
        let mut lines = vec![serde_json::json!({"sku": first, "quantity": 1})];
        if n.is_multiple_of(3) && self.skus.len() > 1 {
            let second = &self.skus[(n * 7 + 1) % self.skus.len()];
            if second != first {
                lines.push(serde_json::json!({"sku": second, "quantity": 2}));
            }
        }
        serde_json::json!({
            "customer_id": self.customers[n % self.customers.len()],
            "lines": lines,
            "shipping_address": {"name": "Ada", "line1": "1 Analytical Way", "city": "London", "postal_code": "N1", "country": "GB"}
        })
    }
}
