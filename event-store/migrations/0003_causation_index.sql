-- Which events an event caused: an order's causal trace follows
-- `causation_id` from the order's own events to every event they caused,
-- in any stream, one index lookup per event (see `EventStore::trace`).
create index events_causation on events ((metadata ->> 'causation_id'));
