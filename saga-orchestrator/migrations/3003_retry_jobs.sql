-- Bulk retries (POST /v1/sagas/retry): a job per request, with every saga
-- it selected, so the job goes on after a restart and its page says, per
-- saga, what was done. The retry itself is recorded in each saga's stream.
create table saga_retry_jobs (
    job_id        uuid primary key,
    requested_by  text not null,
    requested_at  timestamptz not null default now(),
    -- The list filter it was asked with, as given.
    filter        jsonb not null,
    finished_at   timestamptz
);

create table saga_retry_job_items (
    job_id    uuid not null references saga_retry_jobs on delete cascade,
    order_id  uuid not null,
    -- pending, retried, or skipped (no longer failed when its turn came).
    outcome   text not null default 'pending',
    primary key (job_id, order_id)
);

grant select, insert, update on saga_retry_jobs, saga_retry_job_items to orders_saga;
