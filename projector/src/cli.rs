//! The command line: `projector` serves; `projector rebuild` rebuilds read
//! models from the event store with a progress bar and a final count;
//! `projector migrate` makes the schema, as the owner.

use std::time::Duration;

use anyhow::Context;
use event_store::EventStore;
use indicatif::{ProgressBar, ProgressStyle};
use service_kit::Deps;

use crate::Config;
use crate::rebuild::{Progress, Rebuild, RebuildError};
use crate::views::Projection;

#[derive(Debug, clap::Parser)]
#[command(
    name = "projector",
    version,
    about = "Builds the read models from the event stream, and rebuilds them from the event store."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Rebuilds read models from the event store while the current ones keep
    /// serving, then swaps them in; a running projector carries on live.
    Rebuild {
        /// One projection (orders, products, customers, sagas, daily_sales);
        /// all when omitted.
        #[arg(long, value_parser = parse_projection)]
        projection: Option<Projection>,
    },
    /// Creates the read-model schema and applies the event store's and the
    /// read models' migrations (tables, and the grants of each service's
    /// database role) as the owner, whose DATABASE_URL it must be given,
    /// then exits. The projector itself never migrates: its role may not
    /// change the schema beyond its own tables.
    Migrate,
}

fn parse_projection(name: &str) -> Result<Projection, String> {
    Projection::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
        format!("one of {}", known.join(", "))
    })
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn started(&self, total: u64) {
        self.0.set_length(total);
    }

    fn advanced(&self, read: u64) {
        if read > self.0.length().unwrap_or(0) {
            self.0.set_length(read);
        }
        self.0.set_position(read);
    }
}

/// `projector rebuild [--projection NAME]`.
pub async fn rebuild(config: Config, projection: Option<Projection>) -> anyhow::Result<()> {
    let projections = projection.map_or(Projection::ALL.to_vec(), |p| vec![p]);
    let deps = Deps::new(&config.common)?;
    let pool = service_kit::deps::read_model_pool(&config.common, &config.read_model_schema)?;
    let store = EventStore::new(deps.pg.clone());
    if !crate::wait_until_migrated(&deps.pg, &pool, &service_kit::shutdown::on_signal()).await {
        return Ok(());
    }
    crate::store::register(&pool).await?;
    let rebuild = match Rebuild::acquire(&pool, &projections).await {
        Ok(rebuild) => rebuild,
        Err(RebuildError::AlreadyRunning(name)) => {
            anyhow::bail!("a rebuild of {name} is already running")
        }
        Err(RebuildError::Failed(error)) => return Err(error),
    };
    let names: Vec<&str> = rebuild.projections().iter().map(|p| p.name()).collect();
    eprintln!("rebuilding {} from the event store", names.join(", "));
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} events \
             {per_sec} eta {eta}",
        )
        .context("the progress bar template")?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let report = rebuild.run(&pool, &store, &Bar(bar.clone())).await?;
    bar.finish();
    let seconds = report.elapsed.as_secs_f64();
    println!(
        "rebuilt in {seconds:.1} s: {} events read ({:.0} events/s)",
        report.events_read,
        report.events_read as f64 / seconds.max(1e-9)
    );
    for (projection, applied) in &report.applied {
        println!("  {:<10} {applied} events applied", projection.name());
    }
    if report.refused > 0 {
        println!(
            "  {} events could not be applied; see the projector_dead_letters table",
            report.refused
        );
    }
    Ok(())
}
