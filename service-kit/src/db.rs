//! The platform's PostgreSQL roles, and the checks around migrations.
//!
//! Each process connects as a role of its own that holds only the grants it
//! needs (ARCHITECTURE.md, "Trust boundaries"): no service holds the
//! owner's or the superuser's password. The roles are created by
//! [`bootstrap`], run once by the superuser before anything else (`orders-db
//! bootstrap`, or the test harness), because creating roles needs
//! `CREATEROLE`, and a role with `CREATEROLE` can grant itself the
//! predefined roles that read and write the server's files and run
//! programs on its host: giving it to the owner would make the owner as
//! strong as the superuser. Everything else (tables, and the grants on
//! them) is made by the owner, in each crate's migrations, run by the
//! one-shot `<service> migrate`; the services only check that the
//! migrations they need are there ([`wait_until_migrated`]).
//!
//! The role names are fixed, because the migrations grant to them; their
//! passwords come from the environment ([`RolePasswords::from_env`]).

use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// The owner of every database object: runs the migrations, serves no
/// requests.
pub const OWNER: &str = "orders_owner";
/// command-service: appends to the event log, publishes it (the relay),
/// keeps idempotency keys.
pub const COMMAND: &str = "orders_command";
/// query-service: reads the read models, nothing else.
pub const QUERY: &str = "orders_query";
/// projector: reads the event log, owns and writes the read models.
pub const PROJECTOR: &str = "orders_projector";
/// saga-orchestrator: appends to the event log (the sagas' streams), keeps
/// its saga instances and intake progress.
pub const SAGA: &str = "orders_saga";

/// The roles the services connect as.
pub const SERVICE_ROLES: [&str; 4] = [COMMAND, QUERY, PROJECTOR, SAGA];

/// Serialises concurrent bootstraps on one database (role names are
/// cluster-wide, and two sessions creating the same role race).
const BOOTSTRAP_LOCK: i64 = 0x6f72_6465_7273_0001;

/// The password of each of the platform's roles.
#[derive(Clone)]
pub struct RolePasswords {
    pub owner: String,
    pub command: String,
    pub query: String,
    pub projector: String,
    pub saga: String,
}

impl std::fmt::Debug for RolePasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RolePasswords(***)")
    }
}

impl RolePasswords {
    /// The environment variable that holds `role`'s password:
    /// `ORDERS_OWNER_PASSWORD` for `orders_owner`, and so on.
    pub fn variable(role: &str) -> String {
        format!("{}_PASSWORD", role.to_ascii_uppercase())
    }

    /// Every password from its variable ([`RolePasswords::variable`]);
    /// each must be set and not empty.
    pub fn from_env() -> anyhow::Result<Self> {
        let get = |role: &str| {
            let name = Self::variable(role);
            std::env::var(&name)
                .ok()
                .filter(|v| !v.is_empty())
                .with_context(|| format!("{name} is not set"))
        };
        Ok(Self {
            owner: get(OWNER)?,
            command: get(COMMAND)?,
            query: get(QUERY)?,
            projector: get(PROJECTOR)?,
            saga: get(SAGA)?,
        })
    }

    /// Each role with its password, the owner first.
    pub fn iter(&self) -> [(&'static str, &str); 5] {
        [
            (OWNER, &self.owner),
            (COMMAND, &self.command),
            (QUERY, &self.query),
            (PROJECTOR, &self.projector),
            (SAGA, &self.saga),
        ]
    }
}

/// Creates the platform's roles, or brings existing ones back to what they
/// must be (login, no special attributes, the given password). Run by a
/// superuser; idempotent, and safe to run concurrently on one database.
///
/// The owner is made a member of the projector's role, so that its
/// migrations can hand the read models to the projector and set the
/// projector's default privileges (both need that membership).
pub async fn bootstrap(
    superuser: &mut PgConnection,
    passwords: &RolePasswords,
) -> anyhow::Result<()> {
    let mut tx = superuser.begin().await?;
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(BOOTSTRAP_LOCK)
        .execute(&mut *tx)
        .await?;
    for (role, password) in passwords.iter() {
        let exists: bool =
            sqlx::query_scalar("select exists (select from pg_roles where rolname = $1)")
                .bind(role)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            let create: String = sqlx::query_scalar("select format('create role %I', $1::text)")
                .bind(role)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("creating role {role}"))?;
        }
        // Utility statements take no parameters, so the server quotes the
        // name and the password itself (`format`'s %I and %L).
        let alter: String = sqlx::query_scalar(
            "select format('alter role %I with login nosuperuser nocreatedb nocreaterole \
             noreplication nobypassrls inherit password %L', $1::text, $2::text)",
        )
        .bind(role)
        .bind(password)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(alter))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("setting the attributes and password of role {role}"))?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("grant {PROJECTOR} to {OWNER}")))
        .execute(&mut *tx)
        .await
        .context("making the owner a member of the projector's role")?;
    tx.commit().await?;
    Ok(())
}

/// Makes `database` belong to the owner (creating it when missing) and lets
/// only the platform's roles connect to it. Run by a superuser connected to
/// another database of the cluster or to this one.
pub async fn prepare_database(superuser: &mut PgConnection, database: &str) -> anyhow::Result<()> {
    let exists: bool =
        sqlx::query_scalar("select exists (select from pg_database where datname = $1)")
            .bind(database)
            .fetch_one(&mut *superuser)
            .await?;
    let statement = if exists {
        "select format('alter database %I owner to %I', $1::text, $2::text)"
    } else {
        "select format('create database %I owner %I', $1::text, $2::text)"
    };
    let statement: String = sqlx::query_scalar(statement)
        .bind(database)
        .bind(OWNER)
        .fetch_one(&mut *superuser)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&mut *superuser)
        .await
        .with_context(|| format!("giving database {database} to {OWNER}"))?;
    // By default every role may connect and make temporary tables; the
    // platform's roles need neither beyond connecting.
    let roles = std::iter::once(OWNER)
        .chain(SERVICE_ROLES)
        .collect::<Vec<_>>()
        .join(", ");
    let grants: String = sqlx::query_scalar(
        "select format('revoke connect, temporary on database %I from public; \
         grant connect on database %I to ' || $2::text, $1::text, $1::text)",
    )
    .bind(database)
    .bind(&roles)
    .fetch_one(&mut *superuser)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(grants))
        .execute(&mut *superuser)
        .await
        .with_context(|| format!("limiting who may connect to {database}"))?;
    Ok(())
}

/// The versions of `migrator` that the database at `pool` has not applied
/// (all of them when it has never been migrated).
pub async fn pending_migrations(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<Vec<i64>> {
    let migrated: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(pool)
        .await?;
    let applied: Vec<i64> = if migrated {
        sqlx::query_scalar("select version from _sqlx_migrations where success")
            .fetch_all(pool)
            .await
            .context("reading the applied migrations")?
    } else {
        Vec::new()
    };
    Ok(migrator
        .iter()
        .map(|migration| migration.version)
        .filter(|version| !applied.contains(version))
        .collect())
}

/// How often a service looks again whether its migrations were applied.
const MIGRATED_CHECK: Backoff = Backoff::steady(Duration::from_secs(2));

/// Waits until every migration of `migrators` has been applied, saying what
/// to run while it waits (the services do not migrate: their roles may not
/// change the schema). False if `shutdown` came first.
pub async fn wait_until_migrated(
    pool: &PgPool,
    migrators: &[&Migrator],
    migrate_command: &str,
    shutdown: &CancellationToken,
) -> bool {
    let mut logged = false;
    loop {
        let mut pending = Vec::new();
        let mut failure = None;
        for migrator in migrators {
            match pending_migrations(pool, migrator).await {
                Ok(versions) => pending.extend(versions),
                Err(error) => failure = Some(format!("{error:#}")),
            }
        }
        match failure {
            None if pending.is_empty() => {
                if logged {
                    tracing::info!("the database schema is migrated");
                }
                return true;
            }
            None => {
                tracing::warn!(
                    ?pending,
                    "the database schema is not migrated: run `{migrate_command}` with the \
                     owner's DATABASE_URL; waiting"
                );
                logged = true;
            }
            Some(error) => tracing::warn!(error, "checking the database schema failed; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = MIGRATED_CHECK.sleep(1) => {}
        }
    }
}

/// How a tool waits for PostgreSQL while it starts (as under compose): once
/// a second, for a minute.
pub const STARTING: Backoff = Backoff::steady(Duration::from_secs(1)).with_attempts(60);

/// A pool on `DATABASE_URL` for `<service> migrate`, once PostgreSQL
/// answers (it may still be starting, as under compose); gives up after a
/// minute.
pub async fn connect_for_migrations(config: &crate::CommonConfig) -> anyhow::Result<PgPool> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let connected = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&config.database_url)
            .await;
        match connected {
            Ok(pool) => return Ok(pool),
            Err(error) if attempt < STARTING.attempts => {
                tracing::warn!(%error, "connecting to PostgreSQL failed; retrying");
                STARTING.sleep(1).await;
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("connecting to {}", config.redacted_database_url()));
            }
        }
    }
}

/// A crate's own migrator: every crate's migrations share sqlx's
/// bookkeeping table, so each leaves the versions it does not know alone.
pub fn own_migrator(mut migrator: Migrator) -> Migrator {
    migrator.set_ignore_missing(true);
    migrator
}

/// Applies each migrator on `pool` (the owner's) in order; `what` names
/// each in the error.
pub async fn migrate(pool: &PgPool, migrators: &[(&str, Migrator)]) -> anyhow::Result<()> {
    for (what, migrator) in migrators {
        migrator
            .run(pool)
            .await
            .with_context(|| format!("migrating {what}"))?;
    }
    Ok(())
}

/// `<service> migrate`: logs as configured, connects as the owner once
/// PostgreSQL answers, runs `migrate` and says so.
pub async fn migrate_command<F, Fut>(
    service: &str,
    config: &crate::CommonConfig,
    migrate: F,
) -> anyhow::Result<()>
where
    F: FnOnce(PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init_logs(&config.log_format, &config.log_filter);
    let pool = connect_for_migrations(config).await?;
    migrate(pool).await?;
    tracing::info!(service, "migrated");
    Ok(())
}
