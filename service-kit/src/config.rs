//! Settings shared by every service. Each service's `Config` flattens
//! [`CommonConfig`] into its own clap parser, so `--help` lists them all.

use std::fmt;
use std::time::Duration;

/// Connection and logging settings common to all services.
#[derive(Clone, clap::Args)]
pub struct CommonConfig {
    /// PostgreSQL connection URL (the event store and read models live here).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/orders"
    )]
    pub database_url: String,

    /// Most PostgreSQL connections this process opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Prefix of every Kafka topic and consumer group name, so several
    /// deployments (or tests) can share one broker.
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "orders.")]
    pub kafka_topic_prefix: String,

    /// Log format: `json` (one object per line) or `pretty` (for humans).
    #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = ["json", "pretty"])]
    pub log_format: String,

    /// Log filter in `tracing` syntax, for example `info` or `info,sqlx=warn`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// How long a readiness probe waits for PostgreSQL or Kafka, in
    /// milliseconds, before reporting it down.
    #[arg(long, env = "READY_TIMEOUT_MS", default_value_t = 2000)]
    pub ready_timeout_ms: u64,

    /// How long a consumer or the relay may be behind without making
    /// progress before it counts as stalled (readiness fails, the log and
    /// a gauge say so, and its Kafka client is recreated), in milliseconds.
    #[arg(long, env = "STALL_AFTER_MS", default_value_t = 30_000)]
    pub stall_after_ms: u64,

    /// Who may call: bearer-token verification (see `auth`).
    #[command(flatten)]
    pub auth: crate::auth::AuthConfig,

    /// What every HTTP listener refuses (see `http::limits`).
    #[command(flatten)]
    pub limits: crate::http::Limits,

    /// Where spans are exported (see `telemetry`).
    #[command(flatten)]
    pub traces: crate::telemetry::TracesConfig,
}

impl CommonConfig {
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_millis(self.ready_timeout_ms)
    }

    pub fn stall_after(&self) -> Duration {
        Duration::from_millis(self.stall_after_ms)
    }

    /// The topic the relay publishes the event log to.
    pub fn events_topic(&self) -> String {
        format!("{}events", self.kafka_topic_prefix)
    }

    /// The consumer group of a component (`projector`, `saga-orchestrator`),
    /// under this deployment's prefix.
    pub fn consumer_group(&self, component: &str) -> String {
        format!("{}{component}", self.kafka_topic_prefix)
    }

    /// The database URL with any password replaced, safe to log.
    pub fn redacted_database_url(&self) -> String {
        redact_url_password(&self.database_url)
    }
}

// The password must never reach logs, so `Debug` is written by hand.
impl fmt::Debug for CommonConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonConfig")
            .field("database_url", &self.redacted_database_url())
            .field("database_max_connections", &self.database_max_connections)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_topic_prefix", &self.kafka_topic_prefix)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("ready_timeout_ms", &self.ready_timeout_ms)
            .field("stall_after_ms", &self.stall_after_ms)
            .field("auth", &self.auth)
            .field("limits", &self.limits)
            .field("traces", &self.traces)
            .finish()
    }
}

/// A read-model schema name: a lower-case SQL identifier, so it can be put
/// in `search_path` as is.
pub fn parse_schema(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err("a lower-case identifier: letters, digits and _, not starting with a digit".into())
    }
}

/// Replaces the password of `scheme://user:password@host/...` with `***`.
fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url_password;

    #[test]
    fn password_is_hidden_and_everything_else_kept() {
        assert_eq!(
            redact_url_password("postgres://app:s3cret@db:5432/orders?sslmode=disable"),
            "postgres://app:***@db:5432/orders?sslmode=disable"
        );
    }

    #[test]
    fn url_without_password_is_unchanged() {
        assert_eq!(
            redact_url_password("postgres://app@db/orders"),
            "postgres://app@db/orders"
        );
        assert_eq!(redact_url_password("not a url"), "not a url");
    }
}
