//! Least privilege in PostgreSQL (CONTRACT.md, "Security"): each service
//! connects as a role of its own, set up as compose sets it up (roles by
//! the superuser's bootstrap, tables and grants by `<service> migrate` as
//! the owner; `harness::TestEnv` does both), and holds only its grants.

use std::time::Duration;

use domain::Event;
use domain::product::ProductEvent;
use event_store::{ExpectedVersion, Metadata, NewEvent, StreamAppend};
use harness::services;
use harness::{TestEnv, eventually};
use service_kit::db::{COMMAND, OWNER, PROJECTOR, QUERY, SAGA, SERVICE_ROLES};
use sqlx::{Connection, PgConnection};

/// PostgreSQL's "insufficient_privilege".
const INSUFFICIENT_PRIVILEGE: &str = "42501";

async fn connect_as(env: &TestEnv, role: &str) -> PgConnection {
    PgConnection::connect(&env.database_url_as(role))
        .await
        .unwrap_or_else(|error| panic!("connecting as {role}: {error}"))
}

/// The SQLSTATE of `statement` run as `connection`'s role; it must fail.
async fn refused(connection: &mut PgConnection, statement: &str) -> String {
    match sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut *connection)
        .await
    {
        Ok(_) => panic!("`{statement}` was allowed"),
        Err(sqlx::Error::Database(error)) => error.code().unwrap_or_default().into_owned(),
        Err(error) => panic!("`{statement}` failed otherwise: {error}"),
    }
}

const APPEND: &str = "insert into events (event_id, stream_id, version, type, schema_version, \
     data, metadata) values (gen_random_uuid(), 'product-forged', 1, 'ProductCreated', 1, \
     '{}', '{}')";

/// Every table of the test's database, schema-qualified.
async fn tables(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar(
        "select format('%I.%I', schemaname, tablename) from pg_tables
          where schemaname not in ('pg_catalog', 'information_schema')
          order by 1",
    )
    .fetch_all(&env.pg)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_query_services_role_reads_the_read_models_and_writes_nothing() {
    let env = TestEnv::new().await;
    let tables = tables(&env).await;
    assert!(tables.contains(&"public.events".to_owned()), "{tables:?}");
    for table in &tables {
        for privilege in ["insert", "update", "delete", "truncate"] {
            let allowed: bool = sqlx::query_scalar("select has_table_privilege($1, $2, $3)")
                .bind(QUERY)
                .bind(table)
                .bind(privilege)
                .fetch_one(&env.pg)
                .await
                .unwrap();
            assert!(!allowed, "{QUERY} may {privilege} {table}");
        }
        let readable: bool = sqlx::query_scalar("select has_table_privilege($1, $2, 'select')")
            .bind(QUERY)
            .bind(table)
            .fetch_one(&env.pg)
            .await
            .unwrap();
        assert_eq!(
            readable,
            table.starts_with("public.rm_"),
            "{QUERY} reading {table}"
        );
    }

    let mut query = connect_as(&env, QUERY).await;
    assert_eq!(refused(&mut query, APPEND).await, INSUFFICIENT_PRIVILEGE);
    assert_eq!(
        refused(&mut query, "select count(*) from events").await,
        INSUFFICIENT_PRIVILEGE
    );
    assert_eq!(
        refused(&mut query, "delete from rm_orders").await,
        INSUFFICIENT_PRIVILEGE
    );
    assert_eq!(
        refused(&mut query, "create table public.mine (id int)").await,
        INSUFFICIENT_PRIVILEGE
    );
    let orders: i64 = sqlx::query_scalar("select count(*) from rm_orders")
        .fetch_one(&mut query)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}

#[tokio::test]
async fn only_command_service_and_the_orchestrator_append_to_the_event_log() {
    let env = TestEnv::new().await;
    let mut projector = connect_as(&env, PROJECTOR).await;
    assert_eq!(
        refused(&mut projector, APPEND).await,
        INSUFFICIENT_PRIVILEGE
    );
    assert_eq!(
        refused(&mut projector, "update events set data = '{}'").await,
        INSUFFICIENT_PRIVILEGE
    );
    // Nor may the projector touch what command-service keeps.
    assert_eq!(
        refused(&mut projector, "delete from idempotency_keys").await,
        INSUFFICIENT_PRIVILEGE
    );
    let read: i64 = sqlx::query_scalar("select count(*) from events")
        .fetch_one(&mut projector)
        .await
        .unwrap();
    assert_eq!(read, 0);

    for role in [COMMAND, SAGA] {
        let mut writer = connect_as(&env, role).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(APPEND.replace("forged", role)))
            .execute(&mut writer)
            .await
            .unwrap_or_else(|error| panic!("{role} appending: {error}"));
        // Stored events are never changed, not even by their writers.
        assert_eq!(
            refused(&mut writer, "delete from events").await,
            INSUFFICIENT_PRIVILEGE
        );
        assert_eq!(
            refused(&mut writer, "update events set data = '{}'").await,
            INSUFFICIENT_PRIVILEGE
        );
        // And the read models are the projector's alone.
        assert_eq!(
            refused(&mut writer, "delete from rm_orders").await,
            INSUFFICIENT_PRIVILEGE
        );
    }
}

#[tokio::test]
async fn no_service_connects_as_a_superuser_or_as_the_owner() {
    let env = TestEnv::new().await;
    for role in SERVICE_ROLES {
        let (superuser, create_role, create_db, bypass_rls): (bool, bool, bool, bool) =
            sqlx::query_as(
                "select rolsuper, rolcreaterole, rolcreatedb, rolbypassrls
                   from pg_roles where rolname = $1",
            )
            .bind(role)
            .fetch_one(&env.pg)
            .await
            .unwrap();
        assert!(
            !(superuser || create_role || create_db || bypass_rls),
            "{role} has special attributes"
        );
        let owner_rights: bool = sqlx::query_scalar("select pg_has_role($1, $2, 'usage')")
            .bind(role)
            .bind(OWNER)
            .fetch_one(&env.pg)
            .await
            .unwrap();
        assert!(!owner_rights, "{role} has the owner's rights");
        let owns_database: bool = sqlx::query_scalar(
            "select pg_get_userbyid(datdba) = $1 from pg_database where datname = current_database()",
        )
        .bind(role)
        .fetch_one(&env.pg)
        .await
        .unwrap();
        assert!(!owns_database, "{role} owns the database");
    }

    // The owner is no superuser either, and only the projector owns
    // tables besides it.
    let owner_is_superuser: bool =
        sqlx::query_scalar("select rolsuper from pg_roles where rolname = $1")
            .bind(OWNER)
            .fetch_one(&env.pg)
            .await
            .unwrap();
    assert!(!owner_is_superuser);
    let owners: Vec<(String, String)> = sqlx::query_as(
        "select tablename::text, tableowner::text from pg_tables
          where schemaname = 'public' order by 1",
    )
    .fetch_all(&env.pg)
    .await
    .unwrap();
    for (table, owner) in owners {
        let expected = if table.starts_with("rm_")
            || table == "projections"
            || table == "projector_dead_letters"
        {
            PROJECTOR
        } else {
            OWNER
        };
        assert_eq!(owner, expected, "the owner of {table}");
    }
}

#[tokio::test]
async fn a_table_the_projector_creates_is_readable_by_the_query_service_at_once() {
    let env = TestEnv::new().await;
    let mut projector = connect_as(&env, PROJECTOR).await;
    sqlx::raw_sql("create table rm_probe_shadow (id int); insert into rm_probe_shadow values (7)")
        .execute(&mut projector)
        .await
        .unwrap();
    let mut query = connect_as(&env, QUERY).await;
    let read: i32 = sqlx::query_scalar("select id from rm_probe_shadow")
        .fetch_one(&mut query)
        .await
        .unwrap();
    assert_eq!(read, 7);
}

#[tokio::test]
async fn the_query_service_reads_a_read_model_right_after_its_rebuild() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    let created = ProductEvent::ProductCreated {
        sku: "lamp".into(),
        name: "Desk lamp".into(),
        price_cents: 2500,
        initial_stock: 4,
    };
    let metadata = Metadata {
        correlation_id: "tests".into(),
        causation_id: "tests".into(),
        ..Metadata::default()
    };
    store
        .append(&[StreamAppend::new(
            "product-lamp".to_owned(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                created.event_type(),
                created.data(),
                metadata,
            )],
        )])
        .await
        .unwrap();
    let table_before: u32 = sqlx::query_scalar("select 'rm_products'::regclass::oid::int4")
        .fetch_one(&env.pg)
        .await
        .map(|oid: i32| oid as u32)
        .unwrap();

    // The projector's rebuild, as its own role: a new table is filled and
    // renamed into place, and the old one dropped.
    let config = projector::Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        read_model_schema: "public".into(),
        consumer_group: None,
        batch_size: 500,
        fetch_wait_ms: 100,
        common: env.common_config_as(PROJECTOR),
    };
    projector::cli::rebuild(config, Some(projector::views::Projection::Products))
        .await
        .unwrap();
    let (table_after, owner): (i32, String) = sqlx::query_as(
        "select 'rm_products'::regclass::oid::int4, tableowner::text
           from pg_tables where schemaname = 'public' and tablename = 'rm_products'",
    )
    .fetch_one(&env.pg)
    .await
    .unwrap();
    assert_ne!(
        table_after as u32, table_before,
        "the table was not swapped"
    );
    assert_eq!(owner, PROJECTOR);

    // The public catalogue, through the query-service as its own role.
    let query = services::query_service(&env).await;
    // Anonymous: the catalogue is public.
    let client = reqwest::Client::new();
    let url = format!("{}/v1/products/lamp", query.url);
    let product: serde_json::Value = eventually(
        Duration::from_secs(30),
        "the rebuilt product served",
        || async {
            let response = client.get(&url).send().await?.error_for_status()?;
            Ok(response.json::<serde_json::Value>().await?)
        },
    )
    .await;
    assert_eq!(product["name"], "Desk lamp");
    assert_eq!(product["on_hand"], 4);
}
