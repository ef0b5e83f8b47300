-- Responses to POST requests that carried an Idempotency-Key, so a repeat
-- gets the first response again. Versions 1000-1999 belong to
-- command-service (see ARCHITECTURE.md, "Migrations").
create table idempotency_keys (
    key           text primary key,
    -- uuid v5 of method, path and body: a repeat must match it exactly.
    request_hash  uuid not null,
    -- null while the first request is still being handled.
    status        smallint,
    content_type  text,
    etag          text,
    body          bytea,
    created_at    timestamptz not null default now(),
    completed_at  timestamptz
);
create index idempotency_keys_created_at on idempotency_keys (created_at);
