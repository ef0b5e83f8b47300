-- The read models, written only by the projector and read by the
-- query-service. Every row carries the version of the stream it was built
-- from: an event is applied only when it is the row's next version, in the
-- same transaction that writes the row, so a redelivered event changes
-- nothing (see ARCHITECTURE.md, "The read side").
--
-- A rebuild fills copies of these tables (`<name>_shadow`, created with
-- `like ... including all`) and renames them into place; no other object
-- may depend on these tables by name.

create table rm_orders (
    order_id          uuid primary key,
    customer_id       uuid not null,
    status            text not null,
    lines             jsonb not null,
    total_cents       bigint not null,
    shipping_address  jsonb not null,
    rejection_reason  text,
    tracking_number   text,
    created_at        timestamptz not null,
    updated_at        timestamptz not null,
    version           bigint not null
);
-- Lists are newest first, paged by (created_at, order_id) cursors.
create index rm_orders_newest on rm_orders (created_at desc, order_id desc);
create index rm_orders_by_customer on rm_orders (customer_id, created_at desc, order_id desc);
create index rm_orders_by_status on rm_orders (status, created_at desc, order_id desc);

create table rm_products (
    sku          text primary key,
    name         text not null,
    price_cents  bigint not null,
    on_hand      bigint not null,
    reserved     bigint not null,
    available    bigint not null,
    version      bigint not null
);

create table rm_customers (
    customer_id    uuid primary key,
    name           text not null,
    email          text not null,
    balance_cents  bigint not null,
    version        bigint not null
);

create table rm_sagas (
    order_id        uuid primary key,
    status          text not null,
    current_step    text,
    failure_reason  text,
    started_at      timestamptz not null,
    updated_at      timestamptz not null,
    finished_at     timestamptz,
    -- What the projector folds the next event into.
    state           jsonb not null,
    -- The contract's saga detail, served as is.
    detail          jsonb not null,
    version         bigint not null
);
create index rm_sagas_newest on rm_sagas (started_at desc, order_id desc);
create index rm_sagas_by_status on rm_sagas (status, started_at desc, order_id desc);
create index rm_sagas_by_step on rm_sagas (current_step, started_at desc, order_id desc);

-- One row per projection: how far it is and how much it applied.
create table projections (
    name            text primary key,
    -- The highest global position applied.
    position        bigint not null default 0,
    events_applied  bigint not null default 0,
    -- Progress of a running rebuild (events read of the log's length).
    rebuild_read    bigint,
    rebuild_total   bigint,
    updated_at      timestamptz not null default now()
);
insert into projections (name) values ('orders'), ('products'), ('customers'), ('sagas');

-- Messages the projector could not apply, kept with the reason.
create table projector_dead_letters (
    id           bigint generated always as identity primary key,
    topic        text not null,
    partition    integer not null,
    "offset"     bigint not null,
    key          text,
    payload      text,
    reason       text not null,
    received_at  timestamptz not null default now(),
    constraint projector_dead_letters_message_key unique (topic, partition, "offset")
);
