//! `orders-db bootstrap`: what the superuser does once before the platform's
//! migrations can run: create the platform's database roles (or set their
//! passwords again), give the database to the owner and let only those roles
//! connect to it (`service_kit::db`). Compose runs it as a one-shot step
//! before `<service> migrate`; it is the only step that holds the
//! superuser's password.

use anyhow::Context;
use clap::Parser;
use service_kit::db::{self, RolePasswords};
use sqlx::Connection;

#[derive(Parser)]
#[command(
    name = "orders-db",
    version,
    about = "Creates the platform's PostgreSQL roles and gives its database to the owner."
)]
enum Cli {
    /// Creates or updates the roles `orders_owner`, `orders_command`,
    /// `orders_query`, `orders_projector` and `orders_saga` with the
    /// passwords in ORDERS_OWNER_PASSWORD, ORDERS_COMMAND_PASSWORD,
    /// ORDERS_QUERY_PASSWORD, ORDERS_PROJECTOR_PASSWORD and
    /// ORDERS_SAGA_PASSWORD, then makes DATABASE belong to `orders_owner`
    /// (creating it when missing).
    Bootstrap {
        /// A superuser's URL, to any database of the cluster (`postgres`).
        #[arg(long, env = "BOOTSTRAP_DATABASE_URL", hide_env_values = true)]
        superuser_url: String,

        /// The platform's database.
        #[arg(long, env = "POSTGRES_DB", default_value = "orders")]
        database: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let Cli::Bootstrap {
        superuser_url,
        database,
    } = Cli::parse();
    let passwords = RolePasswords::from_env()?;
    let mut superuser = connect(&superuser_url).await?;
    db::bootstrap(&mut superuser, &passwords)
        .await
        .context("creating the roles")?;
    db::prepare_database(&mut superuser, &database)
        .await
        .context("preparing the database")?;
    eprintln!(
        "orders-db: roles ready; database {database} belongs to {}",
        db::OWNER
    );
    Ok(())
}

/// PostgreSQL may still be starting (compose starts this step once its
/// healthcheck passes, which can be a moment before it takes passwords).
async fn connect(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    let mut attempts = 0;
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(connection) => return Ok(connection),
            Err(error) if attempts < service_kit::db::STARTING.attempts => {
                attempts += 1;
                eprintln!("orders-db: connecting to PostgreSQL failed ({error}); retrying");
                service_kit::db::STARTING.sleep(attempts).await;
            }
            Err(error) => return Err(error).context("connecting to PostgreSQL as the superuser"),
        }
    }
}
