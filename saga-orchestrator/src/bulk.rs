//! Bulk retries: `POST /v1/sagas/retry {filter, dry_run}` retries every
//! failed saga the saga list's filter selects (`read_models::sagas`, over
//! `rm_sagas`), not only a page of them. A dry run answers with the count
//! and a sample; otherwise the selection is kept as a job
//! (`saga_retry_jobs`, one `saga_retry_job_items` row per saga) and worked
//! through in the background, each retry recorded in its saga's stream
//! with who asked and the job's id (`record::retry`). A saga no longer
//! failed when its turn comes is skipped. `GET /v1/sagas/retry/{job_id}`
//! reports the job's progress and, per saga, whether it has left `failed`
//! since (as the read model shows it now).
//!
//! A job outlives its process: an instance that starts resumes every
//! unfinished job, items another run had taken but not finished included
//! (a retry is recorded only of a saga that is failed, so running one
//! twice records it once).

use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::saga::SagaStatus;
use event_store::EventStore;
use read_models::sagas::SagaFilter;
use serde::{Deserialize, Serialize};
use service_kit::auth::Caller;
use service_kit::backoff::Backoff;
use service_kit::http::{ApiResult, JsonBody, PathParam, Problem};
use sqlx::{PgPool, QueryBuilder};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::api::ApiState;
use crate::instances;
use crate::record::{self, Retried};

/// The most sagas one job takes: a filter selecting more is refused.
pub const MOST_SAGAS: i64 = 100_000;
/// Sagas a dry run shows.
const SAMPLE: i64 = 10;
/// Sagas a job's worker takes at a time.
const BATCH: i64 = 100;
/// Sagas a job's page lists.
const LISTED: i64 = 10_000;

/// What a bulk retry is asked to do.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRetry {
    /// The saga list's filter; only failed sagas are retried, so a
    /// `status` other than `failed` is refused.
    #[serde(default)]
    pub filter: SagaFilter,
    /// Only count the sagas and show a sample.
    #[serde(default)]
    pub dry_run: bool,
}

/// The background side: works jobs through.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    pool: PgPool,
    /// Reads `rm_sagas` (the read models' schema first in its path).
    read_models: PgPool,
    wake: Arc<Notify>,
}

impl Jobs {
    pub fn new(store: EventStore, pool: PgPool, read_models: PgPool, wake: Arc<Notify>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                pool,
                read_models,
                wake,
            }),
        }
    }

    /// Resumes every unfinished job (after a restart), in the background.
    pub fn resume(&self) {
        let jobs = self.clone();
        tokio::spawn(async move {
            let mut failures = 0;
            let unfinished: Vec<(Uuid, String)> = loop {
                let found = sqlx::query_as(
                    "select job_id, requested_by from saga_retry_jobs where finished_at is null",
                )
                .fetch_all(&jobs.inner.pool)
                .await;
                match found {
                    Ok(unfinished) => break unfinished,
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%error, "finding unfinished retry jobs failed; trying again");
                        Backoff::RESTART.sleep(failures).await;
                    }
                }
            };
            for (job_id, requested_by) in unfinished {
                sqlx::query(
                    "update saga_retry_job_items set outcome = 'pending'
                     where job_id = $1 and outcome = 'running'",
                )
                .bind(job_id)
                .execute(&jobs.inner.pool)
                .await
                .ok();
                jobs.work(job_id, requested_by);
            }
        });
    }

    /// Works job `job_id` through in the background, until every saga of
    /// it is retried or skipped; a failure is logged and tried again.
    fn work(&self, job_id: Uuid, requested_by: String) {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let mut failures = 0;
            loop {
                match inner.next_batch(job_id, &requested_by).await {
                    Ok(true) => failures = 0,
                    Ok(false) => break,
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%job_id, error = format!("{error:#}"), "bulk retry interrupted; going on soon");
                        Backoff::RESTART.sleep(failures).await;
                    }
                }
            }
            tracing::info!(%job_id, "bulk retry done");
        });
    }
}

impl Inner {
    /// Retries the job's next batch of sagas; false once none is left (the
    /// job is then marked finished).
    async fn next_batch(&self, job_id: Uuid, requested_by: &str) -> anyhow::Result<bool> {
        let taken: Vec<Uuid> = sqlx::query_scalar(
            "update saga_retry_job_items set outcome = 'running'
             where (job_id, order_id) in (
               select job_id, order_id from saga_retry_job_items
               where job_id = $1 and outcome = 'pending'
               order by order_id limit $2
               for update skip locked)
             returning order_id",
        )
        .bind(job_id)
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await
        .context("taking the job's next sagas")?;
        if taken.is_empty() {
            sqlx::query(
                "update saga_retry_jobs set finished_at = now()
                 where job_id = $1 and finished_at is null
                   and not exists (select 1 from saga_retry_job_items
                                   where job_id = $1 and outcome in ('pending', 'running'))",
            )
            .bind(job_id)
            .execute(&self.pool)
            .await
            .context("finishing the job")?;
            return Ok(false);
        }
        let mut retried = Vec::new();
        let mut skipped = Vec::new();
        for order_id in taken {
            match record::retry(&self.store, order_id, requested_by, Some(job_id)).await? {
                Retried::Recorded => retried.push(order_id),
                Retried::NoSaga | Retried::NotFailed(_) => skipped.push(order_id),
            }
        }
        if !retried.is_empty() {
            instances::make_due(&self.pool, &retried).await?;
            self.wake.notify_one();
        }
        // A saga another run of the job retried meanwhile (an instance
        // that resumed the job while this one worked it) stays retried.
        for (outcome, order_ids) in [("retried", retried), ("skipped", skipped)] {
            sqlx::query(
                "update saga_retry_job_items set outcome = $2
                 where job_id = $1 and order_id = any($3) and outcome <> 'retried'",
            )
            .bind(job_id)
            .bind(outcome)
            .bind(&order_ids)
            .execute(&self.pool)
            .await
            .context("recording the job's progress")?;
        }
        Ok(true)
    }
}

/// A failed saga a dry run shows.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Sampled {
    order_id: Uuid,
    failure_reason: Option<String>,
    updated_at: DateTime<Utc>,
}

/// A dry run's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRun {
    /// The failed sagas the filter selects.
    pub count: i64,
    /// The newest of them, at most ten.
    pub sample: Vec<Sampled>,
}

/// A job's start.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobStarted {
    pub job_id: Uuid,
    /// The sagas it retries.
    pub count: usize,
}

/// Retries every failed saga the filter selects, as a job (or, with
/// `dry_run`, counts them and shows a sample).
#[utoipa::path(post, path = "/v1/sagas/retry", tag = "sagas", request_body = BulkRetry,
    responses(
        (status = 200, description = "a dry run: the count and a sample", body = DryRun),
        (status = 202, description = "the job is kept and runs in the background; `GET /v1/sagas/retry/{job_id}` reports it", body = JobStarted,
            headers(("Location" = String, description = "the job's page"))),
        (status = 400, description = "`/problems/validation`: the filter is invalid (an empty or too long failure text, placed_to before placed_from) or asks for sagas other than failed ones", body = service_kit::http::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation`: the body has the wrong shape, or the filter selects more than 100000 sagas", body = service_kit::http::ProblemBody, content_type = "application/problem+json")))]
pub async fn start(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(request): JsonBody<BulkRetry>,
) -> ApiResult<Response> {
    let filter = failed_only(request.filter)?;
    let jobs = &state.jobs.inner;
    if request.dry_run {
        let mut count = QueryBuilder::new("select count(*) from rm_sagas where true");
        filter.push_conditions(&mut count);
        let count: i64 = count
            .build_query_scalar()
            .fetch_one(&jobs.read_models)
            .await?;
        let mut sample = QueryBuilder::new(
            "select order_id, failure_reason, updated_at from rm_sagas where true",
        );
        filter.push_conditions(&mut sample);
        sample
            .push(" order by started_at desc, order_id desc limit ")
            .push_bind(SAMPLE);
        let sample: Vec<Sampled> = sample.build_query_as().fetch_all(&jobs.read_models).await?;
        return Ok(Json(DryRun { count, sample }).into_response());
    }
    // One more than a job takes tells a filter that selects too many.
    let mut select = QueryBuilder::new("select order_id from rm_sagas where true");
    filter.push_conditions(&mut select);
    select.push(" limit ").push_bind(MOST_SAGAS + 1);
    let order_ids: Vec<Uuid> = select
        .build_query_scalar()
        .fetch_all(&jobs.read_models)
        .await?;
    if order_ids.len() as i64 > MOST_SAGAS {
        return Err(Problem::validation(
            StatusCode::UNPROCESSABLE_ENTITY,
            "filter",
            format!("selects more than {MOST_SAGAS} sagas, which a job takes at most; narrow it"),
        )
        .into());
    }
    let job_id = Uuid::now_v7();
    create(jobs, job_id, &caller.subject, &filter, &order_ids).await?;
    state.jobs.work(job_id, caller.subject.clone());
    let location = format!("/v1/sagas/retry/{job_id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(JobStarted {
            job_id,
            count: order_ids.len(),
        }),
    )
        .into_response())
}

/// The filter, with only failed sagas selected (400 if it asks for
/// others, or is invalid).
fn failed_only(mut filter: SagaFilter) -> ApiResult<SagaFilter> {
    filter.validate().map_err(|invalid| {
        Problem::validation(
            StatusCode::BAD_REQUEST,
            format!("filter.{}", invalid.field),
            invalid.message,
        )
    })?;
    match filter.status {
        None | Some(SagaStatus::Failed) => filter.status = Some(SagaStatus::Failed),
        Some(_) => {
            return Err(Problem::validation(
                StatusCode::BAD_REQUEST,
                "filter.status",
                "only failed sagas are retried: leave it out or make it failed",
            )
            .into());
        }
    }
    Ok(filter)
}

/// Keeps the job, asked with `filter`, and the sagas it selected
/// (`order_ids`), in one transaction.
async fn create(
    jobs: &Inner,
    job_id: Uuid,
    requested_by: &str,
    filter: &SagaFilter,
    order_ids: &[Uuid],
) -> anyhow::Result<()> {
    let mut tx = jobs.pool.begin().await?;
    sqlx::query("insert into saga_retry_jobs (job_id, requested_by, filter) values ($1, $2, $3)")
        .bind(job_id)
        .bind(requested_by)
        .bind(serde_json::to_value(filter)?)
        .execute(&mut *tx)
        .await
        .context("keeping the job")?;
    sqlx::query(
        "insert into saga_retry_job_items (job_id, order_id) select $1, unnest($2::uuid[])",
    )
    .bind(job_id)
    .bind(order_ids)
    .execute(&mut *tx)
    .await
    .context("keeping the job's sagas")?;
    tx.commit().await?;
    Ok(())
}

/// One saga of a job, as its page shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct JobItem {
    order_id: Uuid,
    /// pending, running, retried or skipped.
    outcome: String,
    /// The saga's status in the read model now.
    status: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct JobRow {
    requested_by: String,
    requested_at: DateTime<Utc>,
    filter: serde_json::Value,
    finished_at: Option<DateTime<Utc>>,
}

/// One saga of a job, as its page shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobItemView {
    pub order_id: Uuid,
    /// pending, running, retried or skipped.
    pub outcome: String,
    /// The saga's status in the read model now.
    pub status: Option<String>,
    /// Retried, and no longer failed.
    pub left_failed: bool,
}

/// A job's progress.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub job_id: Uuid,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running` or `done`.
    pub status: &'static str,
    /// The filter the job was asked with.
    #[schema(value_type = Object)]
    pub filter: serde_json::Value,
    pub total: i64,
    pub pending: i64,
    pub retried: i64,
    pub skipped: i64,
    pub left_failed: usize,
    /// The first 10000 of its sagas, by order id.
    pub items: Vec<JobItemView>,
    pub items_truncated: bool,
}

/// A bulk retry job's progress and, per saga, whether it left `failed`.
#[utoipa::path(get, path = "/v1/sagas/retry/{job_id}", tag = "sagas",
    params(("job_id" = Uuid, Path, description = "the job's id")),
    responses(
        (status = 200, body = JobStatus),
        (status = 404, description = "`/problems/not-found`: no such job", body = service_kit::http::ProblemBody, content_type = "application/problem+json")))]
pub async fn status(
    State(state): State<ApiState>,
    PathParam(job_id): PathParam<Uuid>,
) -> ApiResult<Response> {
    let jobs = &state.jobs.inner;
    let Some(job) = sqlx::query_as::<_, JobRow>(
        "select requested_by, requested_at, filter, finished_at from saga_retry_jobs
         where job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(&jobs.pool)
    .await?
    else {
        return Err(Problem::not_found(format!("no retry job {job_id}")).into());
    };
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "select outcome, count(*) from saga_retry_job_items where job_id = $1 group by outcome",
    )
    .bind(job_id)
    .fetch_all(&jobs.pool)
    .await?;
    let count = |outcome: &str| {
        counts
            .iter()
            .filter(|(o, _)| o == outcome)
            .map(|(_, n)| n)
            .sum::<i64>()
    };
    let items: Vec<JobItem> = sqlx::query_as(
        "select i.order_id, i.outcome, s.status
         from saga_retry_job_items i left join rm_sagas s using (order_id)
         where i.job_id = $1 order by i.order_id limit $2",
    )
    .bind(job_id)
    .bind(LISTED)
    .fetch_all(&jobs.read_models)
    .await?;
    let total = counts.iter().map(|(_, n)| n).sum::<i64>();
    let items: Vec<JobItemView> = items
        .into_iter()
        .map(|item| JobItemView {
            left_failed: item.outcome == "retried"
                && item.status.as_deref().is_some_and(|s| s != "failed"),
            order_id: item.order_id,
            outcome: item.outcome,
            status: item.status,
        })
        .collect();
    let left_failed = items.iter().filter(|item| item.left_failed).count();
    Ok(Json(JobStatus {
        job_id,
        requested_by: job.requested_by,
        requested_at: job.requested_at,
        finished_at: job.finished_at,
        status: if job.finished_at.is_some() {
            "done"
        } else {
            "running"
        },
        filter: job.filter,
        total,
        pending: count("pending") + count("running"),
        retried: count("retried"),
        skipped: count("skipped"),
        left_failed,
        items,
        items_truncated: total > LISTED,
    })
    .into_response())
}
