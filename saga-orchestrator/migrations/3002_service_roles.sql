-- The orchestrator's role keeps its saga instances (start, claim, lease,
-- release) and its intake's progress. See event-store's migrations for its
-- grants on the event log.
grant select, insert, update, delete on saga_instances, saga_intake_progress to orders_saga;
