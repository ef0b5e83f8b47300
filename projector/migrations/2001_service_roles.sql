-- The read models belong to the projector's role: only it writes them, and
-- a rebuild, run by the projector, creates shadow tables, renames them into
-- place and drops the old ones, which only a table's owner may do. The
-- query-service's role may read them and nothing else.
--
-- These migrations run with the read-model schema first in `search_path`
-- (READ_MODEL_SCHEMA), so `current_schema()` is that schema and the
-- unqualified names below are its tables.
do $$
declare
    target text := current_schema();
begin
    -- Creating the shadow tables needs `create` on the schema; a new
    -- owner needs it too before tables can be handed to it.
    execute format('grant usage, create on schema %I to orders_projector', target);
    execute format('grant usage on schema %I to orders_query', target);
    -- A table the projector creates (a rebuild's shadow, renamed into
    -- place) is readable by the query-service from the moment it exists,
    -- so a query right after the swap does not fail on permissions.
    execute format(
        'alter default privileges for role orders_projector in schema %I '
        'grant select on tables to orders_query',
        target);
end
$$;

alter table rm_orders owner to orders_projector;
alter table rm_products owner to orders_projector;
alter table rm_customers owner to orders_projector;
alter table rm_sagas owner to orders_projector;
alter table projections owner to orders_projector;
alter table projector_dead_letters owner to orders_projector;

-- Tables made before the default privileges above.
grant select on rm_orders, rm_products, rm_customers, rm_sagas to orders_query;

-- The projector checks at start-up that its migrations were applied (this
-- schema's bookkeeping table, or the database's when the schema is public).
grant select on _sqlx_migrations to orders_projector;
