-- What each of the platform's roles may do with the event log (see
-- ARCHITECTURE.md, "Trust boundaries"). The roles exist before any
-- migration runs: `orders-db bootstrap` creates them as the superuser, and
-- the migrations run as the owner, `orders_owner`, who owns these tables.
--
-- Only command-service and the saga-orchestrator append; nobody updates or
-- deletes a stored event. The projector reads the log to fill the gaps in
-- its read models and to rebuild them; the query-service gets nothing here.
-- Positions come from an identity column, whose sequence an insert uses
-- without a grant of its own.
grant select, insert on events to orders_command, orders_saga;
grant select on events to orders_projector;

-- Only command-service loads aggregates from snapshots and saves them.
grant select, insert, update on event_snapshots to orders_command;

-- The relay runs in command-service.
grant select, insert, update on event_relay_checkpoints to orders_command;

-- The services check at start-up that their migrations were applied.
grant select on _sqlx_migrations to orders_command, orders_saga, orders_projector;
