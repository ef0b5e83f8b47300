-- Which sagas have work left and when, and which orchestrator instance is
-- working on each. The saga's own stream (saga-<order id>) is the record of
-- what happened; this table only says where to look, so a restarted or
-- additional instance finds every unfinished saga.
create table saga_instances (
    order_id     uuid primary key,
    -- active: has work left (at due_at); failed: waits for an operator;
    -- done: completed or compensated.
    status       text not null default 'active',
    due_at       timestamptz not null default now(),
    -- The instance executing the saga, until lease_until; a saga is claimed
    -- only when its lease has run out, so one instance at a time runs it.
    lease_owner  text,
    lease_until  timestamptz,
    -- Bumped by whatever makes the saga due again (a cancellation, an
    -- operator retry), so an executor finishing meanwhile keeps it active.
    nudges       bigint not null default 0,
    updated_at   timestamptz not null default now()
);
create index saga_instances_due on saga_instances (due_at) where status = 'active';
