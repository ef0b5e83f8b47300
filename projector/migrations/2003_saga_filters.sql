-- What the saga list filters by besides status and step (GET /v1/sagas):
-- the most attempts any step has had, and the failure reason with each
-- step's last error. Filled here from the state each row keeps, so rows
-- folded before this need no rebuild.
alter table rm_sagas
    add column attempts integer not null default 0,
    add column errors text not null default '';

update rm_sagas set
    attempts = coalesce((
        select max(greatest((step ->> 'attempts')::integer,
                            (step ->> 'compensation_attempts')::integer))
        from jsonb_array_elements(state -> 'saga' -> 'steps') as step), 0),
    errors = concat_ws(E'\n', failure_reason, (
        select string_agg(step ->> 'last_error', E'\n')
        from jsonb_array_elements(state -> 'saga' -> 'steps') as step));

-- Sagas without progress: the ones not ended, by when they last moved.
create index rm_sagas_unfinished on rm_sagas (updated_at)
    where status not in ('completed', 'compensated');

-- The orchestrator's bulk retry selects failed sagas with the list's
-- filter, from this table (and nothing else of the read models). A rebuild
-- keeps the grant: the swapped-in table gets the old one's grants.
do $$
begin
    execute format('grant usage on schema %I to orders_saga', current_schema());
end
$$;
grant select on rm_sagas to orders_saga;
