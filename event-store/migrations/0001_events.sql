-- The event log.
--
-- `position` is unique and grows with every insert. Readers of the whole log
-- follow it in (transaction_id, position) order and only read rows whose
-- transaction is older than every transaction still running, so a
-- transaction that commits late with low positions is never skipped (see
-- ARCHITECTURE.md, "Reading the log in order").
create table events (
    position        bigint generated always as identity primary key,
    transaction_id  bigint not null default (pg_current_xact_id()::text::bigint),
    event_id        uuid not null,
    stream_id       text not null,
    version         bigint not null check (version > 0),
    type            text not null,
    schema_version  integer not null check (schema_version > 0),
    data            jsonb not null,
    metadata        jsonb not null,
    recorded_at     timestamptz not null default now(),
    constraint events_event_id_key unique (event_id),
    constraint events_stream_version_key unique (stream_id, version)
);

-- The global read order.
create index events_transaction_order on events (transaction_id, position);

-- Aggregate state at some version of its stream, so loading a long stream
-- replays only the events after the snapshot.
create table event_snapshots (
    stream_id       text primary key,
    version         bigint not null,
    state_type      text not null,
    schema_version  integer not null,
    state           jsonb not null,
    taken_at        timestamptz not null default now()
);

-- How far each relay has published the log, written only after the broker
-- acknowledged.
create table event_relay_checkpoints (
    name            text primary key,
    transaction_id  bigint not null,
    position        bigint not null,
    updated_at      timestamptz not null default now()
);
