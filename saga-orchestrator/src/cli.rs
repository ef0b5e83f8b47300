//! `saga-orchestrator sagas ...`: the operator's command line, over the
//! same HTTP API and roles as everyone else (the token in `ORDERS_TOKEN`):
//!
//! ```text
//! saga-orchestrator sagas list [--status S] [--step S] [--stuck-for SECS] [--failure TEXT] [--min-attempts N]
//! saga-orchestrator sagas show <order id>
//! saga-orchestrator sagas retry <order id>
//! saga-orchestrator sagas retry --status failed [--step S] [--failure TEXT] [--dry-run]
//! ```
//!
//! Lists and details come from the query-service, retries go to the
//! orchestrator; both are reached through the gateway (`ORDERS_API`,
//! default `http://localhost:8080`) unless `--query-url` or
//! `--orchestrator-url` name them.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// `saga-orchestrator sagas ...`.
#[derive(Debug, clap::Parser)]
#[command(name = "saga-orchestrator sagas", about = "List, show and retry sagas")]
pub struct SagasCli {
    /// The platform's front door.
    #[arg(
        long,
        env = "ORDERS_API",
        default_value = "http://localhost:8080",
        global = true
    )]
    api: String,
    /// The query-service, if not behind `--api`.
    #[arg(long, env = "QUERY_SERVICE_URL", global = true)]
    query_url: Option<String>,
    /// The saga-orchestrator, if not behind `--api`.
    #[arg(long, env = "SAGA_ORCHESTRATOR_URL", global = true)]
    orchestrator_url: Option<String>,
    /// The bearer token to send (`make token ROLE=operator` prints one).
    #[arg(long, env = "ORDERS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: SagasCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SagasCommand {
    /// Sagas, newest first, with the list's filters.
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One saga: its steps, attempts, errors and history.
    Show { order_id: Uuid },
    /// Retries one failed saga, or every failed saga a filter selects (a
    /// bulk retry job, followed until it is done).
    Retry {
        /// The order whose saga to retry.
        #[arg(conflicts_with_all = ["status", "step", "failure", "min_attempts", "stuck_for"])]
        order_id: Option<Uuid>,
        #[command(flatten)]
        filter: Filter,
        /// Only count and show a sample of what would be retried.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The saga list's filters.
#[derive(Debug, clap::Args)]
struct Filter {
    /// running, compensating, completed, compensated or failed.
    #[arg(long)]
    status: Option<String>,
    /// reserve_inventory, charge_payment or create_shipment.
    #[arg(long)]
    step: Option<String>,
    /// Text in the failure reason or a step's last error.
    #[arg(long)]
    failure: Option<String>,
    /// Some step attempted at least this often.
    #[arg(long)]
    min_attempts: Option<u32>,
    /// Seconds without progress.
    #[arg(long)]
    stuck_for: Option<u64>,
}

impl Filter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        let mut add = |name, value: Option<String>| {
            if let Some(value) = value {
                query.push((name, value));
            }
        };
        add("status", self.status.clone());
        add("step", self.step.clone());
        add("failure", self.failure.clone());
        add("min_attempts", self.min_attempts.map(|n| n.to_string()));
        add("stuck_for", self.stuck_for.map(|n| n.to_string()));
        query
    }

    /// The filter as the bulk retry takes it: numbers as numbers, texts as
    /// texts (a `--failure 503` stays the text "503").
    fn json(&self) -> Value {
        let mut filter = json!({
            "status": self.status,
            "step": self.step,
            "failure": self.failure,
            "min_attempts": self.min_attempts,
            "stuck_for": self.stuck_for,
        });
        if let Value::Object(fields) = &mut filter {
            fields.retain(|_, value| !value.is_null());
        }
        filter
    }

    fn is_empty(&self) -> bool {
        self.query().is_empty()
    }
}

/// Runs `saga-orchestrator sagas ...` (`args` starting with the program's
/// name, then `sagas`), writing what it shows to `out`.
pub async fn run<I, T>(args: I, out: &mut (dyn Write + Send)) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    // `saga-orchestrator sagas list` parses as `sagas list`.
    args.remove(0);
    let cli = <SagasCli as clap::Parser>::try_parse_from(args)?;
    let api = Api::new(&cli)?;
    match &cli.command {
        SagasCommand::List { filter, limit } => list(&api, filter, *limit, out).await,
        SagasCommand::Show { order_id } => show(&api, *order_id, out).await,
        SagasCommand::Retry {
            order_id: Some(order_id),
            ..
        } => retry_one(&api, *order_id, out).await,
        SagasCommand::Retry {
            order_id: None,
            filter,
            dry_run,
        } => {
            anyhow::ensure!(
                !filter.is_empty(),
                "say which sagas: an order id, or a filter such as --status failed"
            );
            retry_many(&api, filter, *dry_run, out).await
        }
    }
}

/// The API's addresses and the token.
struct Api {
    http: Client,
    query: String,
    orchestrator: String,
    token: Option<String>,
}

impl Api {
    fn new(cli: &SagasCli) -> anyhow::Result<Self> {
        let base = |url: &Option<String>| {
            url.as_deref()
                .unwrap_or(&cli.api)
                .trim_end_matches('/')
                .to_owned()
        };
        Ok(Self {
            http: Client::builder().timeout(Duration::from_secs(30)).build()?,
            query: base(&cli.query_url),
            orchestrator: base(&cli.orchestrator_url),
            token: cli.token.clone(),
        })
    }

    /// Sends `request` with the token; the body of a success, or an error
    /// saying what the API answered.
    async fn send(&self, request: RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.context("calling the API")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("");
            anyhow::bail!("{status}: {detail}");
        }
        Ok((status, body))
    }
}

async fn list(
    api: &Api,
    filter: &Filter,
    limit: u32,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let mut query = filter.query();
    query.push(("limit", limit.min(200).to_string()));
    let url = reqwest::Url::parse_with_params(&format!("{}/v1/sagas", api.query), &query)
        .context("the query-service's address")?;
    let request = api.http.get(url);
    let (_, page) = api.send(request).await?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    writeln!(
        out,
        "{:<36}  {:<12}  {:<17}  {:<24}  failure",
        "order", "status", "step", "updated"
    )?;
    for item in &items {
        writeln!(
            out,
            "{:<36}  {:<12}  {:<17}  {:<24}  {}",
            text(&item["order_id"]),
            text(&item["status"]),
            text(&item["current_step"]),
            text(&item["updated_at"]),
            text(&item["failure_reason"]),
        )?;
    }
    writeln!(out, "{} sagas", items.len())?;
    Ok(())
}

async fn show(api: &Api, order_id: Uuid, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let request = api.http.get(format!("{}/v1/sagas/{order_id}", api.query));
    let (_, saga) = api.send(request).await?;
    writeln!(
        out,
        "saga {}  {}",
        text(&saga["saga_id"]),
        text(&saga["status"])
    )?;
    if let Some(reason) = saga["failure_reason"].as_str() {
        writeln!(out, "failure: {reason}")?;
    }
    writeln!(out, "steps:")?;
    for step in saga["steps"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {:<17} {:<20} attempts {} (undo {})  {}",
            text(&step["name"]),
            text(&step["status"]),
            step["attempts"],
            step["compensation_attempts"],
            text(&step["last_error"]),
        )?;
    }
    writeln!(out, "history:")?;
    for entry in saga["history"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {}  {:<26} {:<17} {}",
            text(&entry["at"]),
            text(&entry["event"]),
            text(&entry["step"]),
            text(&entry["detail"]),
        )?;
    }
    Ok(())
}

async fn retry_one(api: &Api, order_id: Uuid, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let request = api
        .http
        .post(format!("{}/v1/sagas/{order_id}/retry", api.orchestrator));
    api.send(request).await?;
    writeln!(out, "retrying the saga of {order_id}")?;
    Ok(())
}

async fn retry_many(
    api: &Api,
    filter: &Filter,
    dry_run: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let body = json!({ "filter": filter.json(), "dry_run": dry_run });
    let request = api
        .http
        .post(format!("{}/v1/sagas/retry", api.orchestrator))
        .json(&body);
    let (_, answer) = api.send(request).await?;
    if dry_run {
        writeln!(
            out,
            "{} sagas would be retried, for example:",
            answer["count"]
        )?;
        for saga in answer["sample"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  {}  {}",
                text(&saga["order_id"]),
                text(&saga["failure_reason"])
            )?;
        }
        return Ok(());
    }
    let job_id = text(&answer["job_id"]);
    writeln!(out, "job {job_id}: retrying {} sagas", answer["count"])?;
    let url = format!("{}/v1/sagas/retry/{job_id}", api.orchestrator);
    let progress = indicatif::ProgressBar::new(answer["count"].as_u64().unwrap_or(0));
    loop {
        let (_, job) = api.send(api.http.get(&url)).await?;
        let total = job["total"].as_u64().unwrap_or(0);
        let pending = job["pending"].as_u64().unwrap_or(0);
        progress.set_position(total - pending.min(total));
        if job["status"] == "done" {
            progress.finish_and_clear();
            writeln!(
                out,
                "job {job_id} done: {} retried, {} skipped (no longer failed); {} have left failed so far",
                job["retried"], job["skipped"], job["left_failed"]
            )?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A JSON value as text: strings as they are, null as `-`.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_retrys_filter_keeps_texts_as_texts_and_leaves_out_what_is_not_given() {
        let filter = Filter {
            status: Some("failed".into()),
            step: None,
            failure: Some("503".into()),
            min_attempts: Some(3),
            stuck_for: None,
        };
        assert_eq!(
            filter.json(),
            json!({"status": "failed", "failure": "503", "min_attempts": 3})
        );
    }
}
