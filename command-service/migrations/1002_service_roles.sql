-- command-service's role keeps the idempotency keys (claim, store the
-- response, take over an abandoned claim, release on a 5xx, expire old
-- ones). See event-store's migrations for its grants on the event log.
grant select, insert, update, delete on idempotency_keys to orders_command;
