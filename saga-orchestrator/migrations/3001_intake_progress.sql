-- How far each saga intake (by consumer group) has read the order events,
-- as a global position of the event store. Only the stall check reads it:
-- with it, an intake that restarts behind a backlog and then gets nothing
-- from the broker is seen to be stuck, not idle. Written at most once a
-- second, never moved back.
create table saga_intake_progress (
    consumer_group text primary key,
    position       bigint not null,
    updated_at     timestamptz not null default now()
);
