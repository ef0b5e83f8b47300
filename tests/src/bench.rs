//! What the benchmark binaries share.

use event_store::relay::MessageFormat;

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
