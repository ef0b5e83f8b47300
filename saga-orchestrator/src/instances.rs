//! `saga_instances`: which sagas have work left and when, and which instance
//! is executing each (see its migration). The saga's stream is the record
//! of what happened; this table only says where to look. Every statement
//! on it is here.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// How a saga's row stands (its `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Has work left, at `due_at`.
    Active,
    /// Completed or compensated.
    Done,
    /// Waits for an operator.
    Failed,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// Claims due sagas. The status is written out rather than bound, so the
/// planner can use the partial index `saga_instances_due` (a test keeps it
/// equal to [`Standing::Active`]).
const CLAIM: &str = "update saga_instances s
     set lease_owner = $1, lease_until = now() + $2 * interval '1 millisecond'
     where order_id in (
       select order_id from saga_instances
       where status = 'active' and due_at <= now()
         and (lease_until is null or lease_until < now())
         and order_id <> all($4)
       order by due_at
       limit $3
       -- Instances claiming at once take different rows.
       for update skip locked)
     returning s.order_id, s.nudges";

/// Leases up to `limit` due sagas to `owner` for `lease`, none of
/// `driving` (the sagas `owner` is executing already); each with its
/// `nudges`.
pub async fn claim(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
    limit: usize,
    driving: &[Uuid],
) -> anyhow::Result<Vec<(Uuid, i64)>> {
    sqlx::query_as(CLAIM)
        .bind(owner)
        .bind(lease.as_millis() as f64)
        .bind(limit as i64)
        .bind(driving)
        .fetch_all(pool)
        .await
        .context("claiming due sagas")
}

/// Keeps `owner`'s lease on a saga for another `lease`; an error if it was
/// lost.
pub async fn renew(
    pool: &PgPool,
    order_id: Uuid,
    owner: &str,
    lease: Duration,
) -> anyhow::Result<()> {
    let renewed = sqlx::query(
        "update saga_instances set lease_until = now() + $3 * interval '1 millisecond'
         where order_id = $1 and lease_owner = $2",
    )
    .bind(order_id)
    .bind(owner)
    .bind(lease.as_millis() as f64)
    .execute(pool)
    .await
    .context("renewing the lease")?;
    anyhow::ensure!(renewed.rows_affected() == 1, "lost the lease");
    Ok(())
}

/// A finished run's lease to give back: how the saga stands, when it is
/// next due, and its `nudges` when it was leased.
#[derive(Debug, Clone)]
pub struct Released {
    pub order_id: Uuid,
    pub standing: Standing,
    pub due: DateTime<Utc>,
    pub nudges: i64,
}

/// Gives back `owner`'s leases, in one statement. A saga nudged meanwhile
/// (a cancellation, an operator retry) stays active and due now, whatever
/// its run concluded.
pub async fn release(pool: &PgPool, owner: &str, released: &[Released]) -> anyhow::Result<()> {
    let order_ids: Vec<Uuid> = released.iter().map(|r| r.order_id).collect();
    let standings: Vec<&str> = released.iter().map(|r| r.standing.as_str()).collect();
    let dues: Vec<DateTime<Utc>> = released.iter().map(|r| r.due).collect();
    let nudges: Vec<i64> = released.iter().map(|r| r.nudges).collect();
    sqlx::query(
        "update saga_instances s
         set status = case when s.nudges = r.nudges then r.status else 'active' end,
             due_at = case when s.nudges = r.nudges then r.due_at else now() end,
             lease_owner = null, lease_until = null, updated_at = now()
         from unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::bigint[])
           as r(order_id, status, due_at, nudges)
         where s.order_id = r.order_id and s.lease_owner = $5",
    )
    .bind(&order_ids)
    .bind(&standings)
    .bind(&dues)
    .bind(&nudges)
    .bind(owner)
    .execute(pool)
    .await
    .context("releasing the sagas' leases")?;
    Ok(())
}

/// Makes the rows of new sagas, leased to `owner`; returns those it made
/// (a row that exists already is left to [`make_due`]).
pub async fn lease_new(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
    order_ids: &[Uuid],
) -> anyhow::Result<Vec<Uuid>> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "insert into saga_instances (order_id, lease_owner, lease_until)
         select id, $2, now() + $3 * interval '1 millisecond' from unnest($1::uuid[]) as id
         on conflict (order_id) do nothing
         returning order_id",
    )
    .bind(order_ids)
    .bind(owner)
    .bind(lease.as_millis() as f64)
    .fetch_all(pool)
    .await
    .context("leasing the new sagas")
}

/// Makes sagas due now, creating their rows when new; a saga that had
/// ended becomes active again. `order_ids` must not repeat.
pub async fn make_due(pool: &PgPool, order_ids: &[Uuid]) -> anyhow::Result<()> {
    sqlx::query(
        "insert into saga_instances (order_id) select * from unnest($1::uuid[])
         on conflict (order_id) do update
           set status = 'active', due_at = now(), nudges = saga_instances.nudges + 1,
               updated_at = now()",
    )
    .bind(order_ids)
    .execute(pool)
    .await
    .context("making the sagas due")?;
    Ok(())
}

/// How many sagas stand each way, over every instance's sagas: every
/// standing is in the answer, zero when no saga stands so.
pub async fn count_by_standing(pool: &PgPool) -> anyhow::Result<Vec<(Standing, i64)>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("select status, count(*) from saga_instances group by status")
            .fetch_all(pool)
            .await
            .context("counting the sagas by standing")?;
    Ok([Standing::Active, Standing::Done, Standing::Failed]
        .into_iter()
        .map(|standing| {
            let count = rows
                .iter()
                .find(|(status, _)| status == standing.as_str())
                .map_or(0, |(_, count)| *count);
            (standing, count)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statuses_written_out_in_sql_are_the_standings() {
        let active = format!("'{}'", Standing::Active.as_str());
        assert!(CLAIM.contains(&format!("status = {active}")));
        let migration = include_str!("../migrations/3000_saga_instances.sql");
        assert!(migration.contains(&format!("default {active}")));
        assert!(migration.contains(&format!("where status = {active}")));
    }
}
