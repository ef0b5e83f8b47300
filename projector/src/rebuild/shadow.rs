//! The shadow tables a rebuild writes: making them, indexing them like the
//! tables they replace, and swapping them in with those tables' grants.

use anyhow::Context;
use sqlx::{PgConnection, PgPool};

use super::INDEXERS;
use crate::views::Projection;

/// Makes an empty `<table>_shadow` for each projection and records that
/// its rebuild has started.
pub(super) async fn create_shadows(
    pool: &PgPool,
    projections: &[Projection],
    total: u64,
) -> anyhow::Result<()> {
    for projection in projections {
        let table = projection.table();
        for statement in [
            format!("drop table if exists {table}_shadow"),
            // Without indexes: they are built once the rows are in, which
            // is faster than maintaining them row by row.
            format!(
                "create table {table}_shadow (like {table} including defaults including constraints)"
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(pool)
                .await
                .with_context(|| format!("creating {table}_shadow"))?;
        }
        sqlx::query("update projections set rebuild_read = 0, rebuild_total = $2 where name = $1")
            .bind(projection.name())
            .bind(total as i64)
            .execute(pool)
            .await
            .context("recording rebuild progress")?;
    }
    Ok(())
}

/// In the swap's transaction: renames the shadow table and its indexes
/// into place, drops the old table and records the rebuilt projection's
/// counts.
pub(super) async fn swap_in(
    tx: &mut PgConnection,
    projection: Projection,
    indexes: &[String],
    events: u64,
    position: i64,
) -> anyhow::Result<()> {
    let table = projection.table();
    keep_grants(tx, table).await?;
    let renames = indexes
        .iter()
        .map(|name| format!("alter index {name}_shadow rename to {name}"));
    for statement in [
        format!("alter table {table} rename to {table}_old"),
        format!("alter table {table}_shadow rename to {table}"),
        format!("drop table {table}_old"),
    ]
    .into_iter()
    .chain(renames)
    {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("swapping {table}"))?;
    }
    sqlx::query(
        "update projections
         set events_applied = $2, position = $3, rebuild_read = null, rebuild_total = null,
             updated_at = now()
         where name = $1",
    )
    .bind(projection.name())
    .bind(events as i64)
    .bind(position)
    .execute(&mut *tx)
    .await
    .context("recording the rebuilt projection")?;
    Ok(())
}

/// Grants on `<table>_shadow` what `table` grants to others, so a role
/// given one read model (the orchestrator: `rm_sagas`) keeps it through a
/// rebuild; what every read model grants comes with the schema's default
/// privileges.
async fn keep_grants(tx: &mut PgConnection, table: &str) -> anyhow::Result<()> {
    let grants: Vec<(String, String)> = sqlx::query_as(
        "select grantee::text, privilege_type::text from information_schema.role_table_grants
         where table_schema = current_schema() and table_name = $1 and grantee <> current_user",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await
    .with_context(|| format!("reading the grants on {table}"))?;
    for (grantee, privilege) in grants {
        let statement = format!(
            "grant {privilege} on {table}_shadow to \"{}\"",
            grantee.replace('"', "\"\"")
        );
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("granting on {table}_shadow"))?;
    }
    Ok(())
}

/// Builds on each `<table>_shadow` the indexes `table` has (named
/// `<index>_shadow` until the swap renames them), primary keys included;
/// returns each table's indexes' names, in the order of `tables`.
///
/// Up to [`INDEXERS`] indexes are built at once, across tables and on the
/// same table (`create index` takes a lock that does not exclude another
/// `create index`); each primary key is made from its index once every
/// index is built, since that takes the table's exclusive lock.
pub(super) async fn index_shadows(
    pool: &PgPool,
    tables: &[&'static str],
) -> anyhow::Result<Vec<Vec<String>>> {
    let mut names = Vec::with_capacity(tables.len());
    let mut builds = Vec::new();
    let mut primary_keys = Vec::new();
    for &table in tables {
        let indexes: Vec<(String, String, bool)> = sqlx::query_as(
            "select i.relname::text, pg_get_indexdef(i.oid), x.indisprimary
             from pg_index x join pg_class i on i.oid = x.indexrelid
             where x.indrelid = $1::regclass",
        )
        .bind(table)
        .fetch_all(pool)
        .await
        .with_context(|| format!("reading the indexes of {table}"))?;
        let mut table_names = Vec::with_capacity(indexes.len());
        for (name, definition, primary) in indexes {
            builds.push((
                table,
                name.clone(),
                shadow_definition(table, &name, &definition)?,
            ));
            if primary {
                primary_keys.push((table, name.clone()));
            }
            table_names.push(name);
        }
        names.push(table_names);
    }
    let mut building = tokio::task::JoinSet::new();
    let mut builds = builds.into_iter();
    loop {
        while building.len() < INDEXERS {
            let Some((table, name, definition)) = builds.next() else {
                break;
            };
            let pool = pool.clone();
            building.spawn(async move {
                sqlx::query(sqlx::AssertSqlSafe(definition))
                    .execute(&pool)
                    .await
                    .with_context(|| format!("building index {name} on {table}_shadow"))
            });
        }
        match building.join_next().await {
            Some(built) => {
                built.context("an index build panicked")??;
            }
            None => break,
        }
    }
    for (table, name) in primary_keys {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "alter table {table}_shadow add primary key using index {name}_shadow"
        )))
        .execute(pool)
        .await
        .with_context(|| format!("making {name}_shadow the primary key"))?;
    }
    Ok(names)
}

/// `definition` (`CREATE [UNIQUE] INDEX <name> ON <schema>.<table> USING
/// ...`) made to build `<name>_shadow` on `<table>_shadow`.
fn shadow_definition(table: &str, name: &str, definition: &str) -> anyhow::Result<String> {
    let shadow_definition = definition
        .replacen(
            &format!(" INDEX {name} ON "),
            &format!(" INDEX {name}_shadow ON "),
            1,
        )
        .replacen(
            &format!(".{table} USING "),
            &format!(".{table}_shadow USING "),
            1,
        );
    anyhow::ensure!(
        shadow_definition.contains(&format!("{name}_shadow ON "))
            && shadow_definition.contains(&format!("{table}_shadow USING ")),
        "unexpected index definition: {definition}"
    );
    Ok(shadow_definition)
}
