//! The event store's guarantees: versions, conflicts, all-or-nothing
//! multi-stream appends, idempotent event ids, gap-free global order under
//! concurrent and rolled-back writers, snapshots and upcasting.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use event_store::{
    Checkpoint, Error, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, Snapshot,
    StreamAppend, SubscriptionOptions, Upcasters,
};
use futures::StreamExt;
use harness::{TestEnv, eventually};
use serde_json::json;
use uuid::Uuid;

fn meta() -> Metadata {
    Metadata {
        correlation_id: "corr-1".into(),
        causation_id: "cause-1".into(),
        ..Metadata::default()
    }
}

fn event(n: u64) -> NewEvent {
    NewEvent::new("Counted", json!({ "n": n }), meta())
}

fn one(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Vec<StreamAppend> {
    vec![StreamAppend::new(stream, expected, events)]
}

#[tokio::test]
async fn appends_get_consecutive_versions_and_increasing_positions() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;

    let first = store
        .append(&one(
            "counter-a",
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        ))
        .await
        .unwrap();
    let second = store
        .append(&one("counter-a", ExpectedVersion::Exact(2), vec![event(3)]))
        .await
        .unwrap();
    assert_eq!(
        first
            .iter()
            .chain(&second)
            .map(|a| a.version)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(first[0].position < first[1].position && first[1].position < second[0].position);

    let read = store.read_stream("counter-a", 2, 10).await.unwrap();
    assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(read[0].data, json!({ "n": 2 }));
    assert_eq!(read[0].metadata["correlation_id"], "corr-1");
    assert_eq!(read[0].metadata["causation_id"], "cause-1");
    assert_eq!(store.stream_version("counter-a").await.unwrap(), 3);
    assert_eq!(store.stream_version("counter-none").await.unwrap(), 0);
}

#[tokio::test]
async fn a_stale_expected_version_is_a_typed_conflict_and_writes_nothing() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    store
        .append(&one("counter-b", ExpectedVersion::NoStream, vec![event(1)]))
        .await
        .unwrap();

    let stale = store
        .append(&one("counter-b", ExpectedVersion::Exact(0), vec![event(2)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&stale, Error::ConcurrencyConflict { stream_id, actual: 1, .. } if stream_id == "counter-b"),
        "{stale:?}"
    );
    let exists = store
        .append(&one("counter-b", ExpectedVersion::NoStream, vec![event(2)]))
        .await
        .unwrap_err();
    assert!(exists.is_concurrency_conflict(), "{exists:?}");
    assert_eq!(store.stream_version("counter-b").await.unwrap(), 1);
}

#[tokio::test]
async fn a_multi_stream_append_is_all_or_nothing() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    store
        .append(&one("product-x", ExpectedVersion::NoStream, vec![event(1)]))
        .await
        .unwrap();

    let appends = vec![
        StreamAppend::new("product-y", ExpectedVersion::NoStream, vec![event(1)]),
        StreamAppend::new("product-x", ExpectedVersion::Exact(5), vec![event(2)]),
    ];
    let error = store.append(&appends).await.unwrap_err();
    assert!(error.is_concurrency_conflict(), "{error:?}");
    assert_eq!(
        store.stream_version("product-y").await.unwrap(),
        0,
        "nothing written"
    );

    let appends = vec![
        StreamAppend::new("product-y", ExpectedVersion::NoStream, vec![event(1)]),
        StreamAppend::new(
            "product-x",
            ExpectedVersion::Exact(1),
            vec![event(2), event(3)],
        ),
    ];
    let appended = store.append(&appends).await.unwrap();
    assert_eq!(
        appended.iter().map(|a| a.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(store.stream_version("product-x").await.unwrap(), 3);
}

#[tokio::test]
async fn repeating_an_event_id_returns_the_original_result() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    let id = Uuid::new_v4();
    let append = one(
        "counter-c",
        ExpectedVersion::NoStream,
        vec![event(1).with_id(id)],
    );

    let original = store.append(&append).await.unwrap();
    // The retry still says NoStream, though the stream now exists: the
    // event id, not the version, decides that it is a repeat.
    let repeated = store.append(&append).await.unwrap();
    assert_eq!(original, repeated);
    assert_eq!(
        store.read_stream("counter-c", 1, 10).await.unwrap().len(),
        1
    );

    let different = one(
        "counter-c",
        ExpectedVersion::Any,
        vec![event(99).with_id(id)],
    );
    let error = store.append(&different).await.unwrap_err();
    assert!(
        matches!(error, Error::EventIdReused { event_id } if event_id == id),
        "{error:?}"
    );
}

#[tokio::test]
async fn concurrent_repeats_of_one_append_store_it_once() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    let append = one("counter-d", ExpectedVersion::Any, vec![event(1), event(2)]);
    let results = futures::future::join_all((0..8).map(|_| store.append(&append))).await;
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    assert_eq!(store.stream_version("counter-d").await.unwrap(), 2);
}

#[tokio::test]
async fn of_concurrent_creations_of_one_stream_exactly_one_is_stored() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    // Different events, all expecting no stream: one creates it, the rest
    // are told it exists.
    let creations: Vec<_> = (0..8)
        .map(|n| one("counter-e", ExpectedVersion::NoStream, vec![event(n)]))
        .collect();
    let results = futures::future::join_all(creations.iter().map(|a| store.append(a))).await;
    let (stored, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        refused
            .iter()
            .all(|r| r.as_ref().unwrap_err().is_concurrency_conflict()),
        "{refused:?}"
    );
    assert_eq!(store.stream_version("counter-e").await.unwrap(), 1);

    // The same creation sent eight times at once is stored once, and every
    // sender gets its result.
    let append = one(
        "counter-f",
        ExpectedVersion::NoStream,
        vec![event(1), event(2)],
    );
    let results = futures::future::join_all((0..8).map(|_| store.append(&append))).await;
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    assert_eq!(
        results[0].iter().map(|a| a.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(store.stream_version("counter-f").await.unwrap(), 2);
}

#[tokio::test]
async fn appends_of_the_same_streams_in_opposite_orders_do_not_deadlock() {
    let env = TestEnv::new().await;
    // A deadlock would be broken only after a minute, far past the deadline
    // below (sessions opened from now on take the setting).
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&env.pg)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "alter database {database} set deadlock_timeout = '60s'"
    )))
    .execute(&env.pg)
    .await
    .unwrap();
    let store = env.event_store().await;
    let pool = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    let many = |from: u64| (from..from + 300).map(event).collect::<Vec<_>>();
    for round in 0..5u64 {
        let version = ExpectedVersion::Exact(round * 300);
        // Each statement writes 300 events of one stream before it reaches
        // the other: in the given order the two would each hold a version
        // the other needs.
        let a_then_b = vec![
            StreamAppend::new("counter-a", version, many(0)),
            StreamAppend::new("counter-b", version, many(0)),
        ];
        let b_then_a = vec![
            StreamAppend::new("counter-b", version, many(1000)),
            StreamAppend::new("counter-a", version, many(1000)),
        ];
        // Both transactions are open before either statement is sent; each
        // commits as soon as its statement is through.
        let append = |mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
                      appends: Vec<StreamAppend>| {
            let store = store.clone();
            async move {
                let written = store.append_in(&mut tx, &appends).await.is_ok();
                if written {
                    tx.commit().await.unwrap();
                }
                written
            }
        };
        let first = append(pool.begin().await.unwrap(), a_then_b);
        let second = append(pool.begin().await.unwrap(), b_then_a);
        let both = tokio::time::timeout(
            Duration::from_secs(30),
            futures::future::join(first, second),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the two appends are stuck on each other"));
        assert!(both.0 != both.1, "round {round}: exactly one is written");
        assert_eq!(
            store.stream_version("counter-a").await.unwrap(),
            (round + 1) * 300
        );
        assert_eq!(
            store.stream_version("counter-b").await.unwrap(),
            (round + 1) * 300
        );
    }
}

#[tokio::test]
async fn appends_written_together_are_each_judged_on_their_own() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    store
        .append(&one("group-a", ExpectedVersion::NoStream, vec![event(1)]))
        .await
        .unwrap();
    store
        .append(&one(
            "group-b",
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        ))
        .await
        .unwrap();
    let earlier = one("group-d", ExpectedVersion::NoStream, vec![event(1)]);
    let earlier_result = store.append(&earlier).await.unwrap();

    let appends = vec![
        // A new stream.
        one(
            "group-new",
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        ),
        // Two streams at once, one existing and one new.
        vec![
            StreamAppend::new("group-a", ExpectedVersion::Exact(1), vec![event(2)]),
            StreamAppend::new("group-c", ExpectedVersion::NoStream, vec![event(1)]),
        ],
        // A stale expectation.
        one("group-b", ExpectedVersion::Exact(5), vec![event(3)]),
        // A repeat of an append already stored.
        earlier.clone(),
        // The same new stream as the first one: the first creates it.
        one("group-new", ExpectedVersion::NoStream, vec![event(9)]),
        // Nothing to append.
        one("group-e", ExpectedVersion::Any, vec![]),
    ];
    let results = store.append_each(&appends).await;

    let versions = |r: &event_store::Result<Vec<event_store::Appended>>| {
        r.as_ref()
            .unwrap()
            .iter()
            .map(|a| a.version)
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(&results[0]), [1, 2]);
    assert_eq!(versions(&results[1]), [2, 1]);
    assert!(
        matches!(
            &results[2],
            Err(Error::ConcurrencyConflict { stream_id, actual: 2, .. }) if stream_id == "group-b"
        ),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3].as_ref().unwrap(), &earlier_result);
    assert!(
        matches!(
            &results[4],
            Err(Error::ConcurrencyConflict { actual: 2, .. })
        ),
        "{:?}",
        results[4]
    );
    assert!(
        matches!(&results[5], Err(Error::EmptyAppend)),
        "{:?}",
        results[5]
    );

    // What was refused wrote nothing; what was written reads back.
    for (stream, version) in [
        ("group-new", 2),
        ("group-a", 2),
        ("group-b", 2),
        ("group-c", 1),
        ("group-d", 1),
        ("group-e", 0),
    ] {
        assert_eq!(
            store.stream_version(stream).await.unwrap(),
            version,
            "{stream}"
        );
    }
    let new = store.read_stream("group-new", 1, 10).await.unwrap();
    assert_eq!(
        new.iter().map(|e| e.data["n"].clone()).collect::<Vec<_>>(),
        [json!(1), json!(2)]
    );
}

#[tokio::test]
async fn concurrent_appends_are_committed_in_groups_and_each_gets_its_own_answer() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    // Ten counters, each counted up by ten writers that read the version,
    // append at it and start over when another writer got there first;
    // beside them, a hundred appends to new streams. All at once.
    let counters = (0..100).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = format!("tally-{}", n % 10);
            loop {
                let version = store.stream_version(&stream).await.unwrap();
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                match store.append(&one(&stream, expected, vec![event(n)])).await {
                    Ok(appended) => return appended[0].version,
                    Err(error) if error.is_concurrency_conflict() => continue,
                    Err(error) => panic!("{error}"),
                }
            }
        })
    });
    let creations = (0..100).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = format!("fresh-{n}");
            store
                .append(&one(
                    &stream,
                    ExpectedVersion::NoStream,
                    vec![event(n), event(n)],
                ))
                .await
                .unwrap()
        })
    });
    let counted = futures::future::join_all(counters).await;
    let created = futures::future::join_all(creations).await;

    // Every counter went up by exactly one per writer, each writer was told
    // the version it took, and no two were told the same.
    let mut taken: Vec<u64> = counted.into_iter().map(Result::unwrap).collect();
    taken.sort();
    assert_eq!(taken, (1..=10).flat_map(|v| [v; 10]).collect::<Vec<_>>());
    for counter in 0..10 {
        assert_eq!(
            store
                .stream_version(&format!("tally-{counter}"))
                .await
                .unwrap(),
            10
        );
    }
    for appended in created {
        let appended = appended.unwrap();
        assert_eq!(
            appended.iter().map(|a| a.version).collect::<Vec<_>>(),
            [1, 2]
        );
    }
    // Fewer transactions than appends: some were committed together.
    let (appends, transactions): (i64, i64) = sqlx::query_as(
        "select count(distinct (stream_id, version)) filter (where version = 1 or stream_id like 'tally-%'),
                count(distinct transaction_id)
         from events",
    )
    .fetch_one(&env.pg)
    .await
    .unwrap();
    assert_eq!(appends, 200);
    assert!(
        transactions < appends,
        "{transactions} transactions for {appends} appends"
    );
}

/// Writers that commit out of position order, hold their transaction open or
/// roll back, while a reader follows the log.
async fn racing_writers(store: &EventStore, writers: usize, rounds: usize) -> BTreeSet<Uuid> {
    let tasks = (0..writers).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut committed = BTreeSet::new();
            for round in 0..rounds {
                let events: Vec<NewEvent> = (0..1 + (round % 3) as u64).map(event).collect();
                let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
                let stream = format!("race-{w}-{}", round % 4);
                let mut tx = store.pool().begin().await.unwrap();
                store
                    .append_in(&mut tx, &one(&stream, ExpectedVersion::Any, events))
                    .await
                    .unwrap();
                match (w + round) % 5 {
                    // Holds its low positions while others commit higher ones.
                    0 => {
                        sqlx::query("select pg_sleep(0.15)")
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                        tx.commit().await.unwrap();
                        committed.extend(ids);
                    }
                    1 => tx.rollback().await.unwrap(),
                    _ => {
                        tx.commit().await.unwrap();
                        committed.extend(ids);
                    }
                }
                store.notify_appended();
            }
            committed
        })
    });
    let mut committed = BTreeSet::new();
    for task in futures::future::join_all(tasks).await {
        committed.extend(task.unwrap());
    }
    committed
}

#[tokio::test]
async fn a_follower_of_the_global_order_gets_every_committed_event_exactly_once() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    let mut subscription = store.subscribe(
        Checkpoint::START,
        SubscriptionOptions {
            batch_size: 50,
            poll_interval: Duration::from_millis(100),
        },
    );

    let committed = racing_writers(&store, 12, 20).await;

    let mut received = Vec::new();
    let mut last = Checkpoint::START;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received.len() < committed.len() {
        let event = tokio::time::timeout_at(deadline, subscription.next())
            .await
            .expect("every committed event arrives within 60 s")
            .expect("subscription open")
            .unwrap();
        assert!(event.checkpoint() > last, "global order only moves forward");
        last = event.checkpoint();
        received.push(event.event_id);
    }
    // Nothing more (no duplicates) arrives.
    let extra = tokio::time::timeout(Duration::from_millis(500), subscription.next()).await;
    assert!(extra.is_err(), "unexpected extra event: {extra:?}");

    let unique: BTreeSet<Uuid> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "no event delivered twice");
    assert_eq!(unique, committed, "every committed event, and only those");
}

/// The same race against the naive reader (`where position > last`) that
/// the store's ordering replaces: it must lose events, or the race above
/// does not exercise what it claims to.
#[tokio::test]
async fn the_race_makes_a_naive_position_reader_skip_events() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let pool = store.pool().clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut last = 0i64;
            let mut seen = HashSet::new();
            loop {
                let finished = done.load(Ordering::SeqCst);
                let rows: Vec<(i64, Uuid)> = sqlx::query_as(
                    "select position, event_id from events where position > $1 order by position",
                )
                .bind(last)
                .fetch_all(&pool)
                .await
                .unwrap();
                for (position, id) in rows {
                    last = position;
                    seen.insert(id);
                }
                if finished {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let committed = racing_writers(&store, 12, 20).await;
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let missed = committed.iter().filter(|id| !seen.contains(*id)).count();
    assert!(
        missed > 0,
        "the naive reader saw everything; the race is too gentle"
    );
}

#[tokio::test]
async fn read_all_is_held_back_by_an_open_writer_and_reports_it() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    let mut open = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut open,
            &one("slow", ExpectedVersion::Any, vec![event(1)]),
        )
        .await
        .unwrap();
    store
        .append(&one("fast", ExpectedVersion::Any, vec![event(2)]))
        .await
        .unwrap();

    assert!(
        store
            .read_all(Checkpoint::START, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let held = store.held_back().await.unwrap();
    assert_eq!(held.events, 1, "{held:?}");

    open.commit().await.unwrap();
    // Transaction ids are the server's, not the database's: a transaction
    // another test has open on the same server holds the bound back too,
    // for as long as it stays open.
    let all = eventually(Duration::from_secs(30), "both events read", || async {
        let all = store.read_all(Checkpoint::START, 10).await?;
        anyhow::ensure!(!all.is_empty(), "nothing read yet");
        Ok(all)
    })
    .await;
    assert_eq!(
        all.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>(),
        ["slow", "fast"],
        "global order is commit-safe order"
    );
    eventually(Duration::from_secs(30), "nothing held back", || async {
        let held = store.held_back().await?;
        anyhow::ensure!(held.events == 0, "{held:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_snapshot_and_the_events_after_it_are_read_together() {
    let env = TestEnv::new().await;
    let store = env.event_store().await;
    let versions = |events: &[RecordedEvent]| events.iter().map(|e| e.version).collect::<Vec<_>>();

    // No stream, no snapshot.
    let nothing = store
        .read_stream_from_snapshot("counter", "test-counter", 1, 10)
        .await
        .unwrap();
    assert_eq!((nothing.snapshot, nothing.events.len()), (None, 0));

    let events = (0..5).map(|_| event(1)).collect();
    store
        .append(&one("counter", ExpectedVersion::NoStream, events))
        .await
        .unwrap();
    let no_snapshot = store
        .read_stream_from_snapshot("counter", "test-counter", 1, 10)
        .await
        .unwrap();
    assert_eq!(no_snapshot.snapshot, None);
    assert_eq!(versions(&no_snapshot.events), [1, 2, 3, 4, 5]);

    let snapshot = Snapshot {
        stream_id: "counter".into(),
        version: 3,
        state_type: "test-counter".into(),
        schema_version: 1,
        state: json!({ "reserved": 3 }),
    };
    store.save_snapshot(&snapshot).await.unwrap();
    let after = store
        .read_stream_from_snapshot("counter", "test-counter", 1, 10)
        .await
        .unwrap();
    assert_eq!(after.snapshot.as_ref(), Some(&snapshot));
    assert_eq!(versions(&after.events), [4, 5]);
    // At most `limit` events; the caller reads on from the last.
    let limited = store
        .read_stream_from_snapshot("counter", "test-counter", 1, 1)
        .await
        .unwrap();
    assert_eq!(versions(&limited.events), [4]);
    assert_eq!(limited.snapshot.as_ref(), Some(&snapshot));

    // A snapshot of another shape or schema version is not used.
    for (state_type, schema_version) in [("test-counter", 2), ("other", 1)] {
        let other = store
            .read_stream_from_snapshot("counter", state_type, schema_version, 10)
            .await
            .unwrap();
        assert_eq!(other.snapshot, None);
        assert_eq!(versions(&other.events), [1, 2, 3, 4, 5]);
    }

    // A snapshot at the head: no events after it.
    let head = Snapshot {
        version: 5,
        state: json!({ "reserved": 5 }),
        ..snapshot
    };
    store.save_snapshot(&head).await.unwrap();
    let at_head = store
        .read_stream_from_snapshot("counter", "test-counter", 1, 10)
        .await
        .unwrap();
    assert_eq!((at_head.snapshot, at_head.events.len()), (Some(head), 0));
}

#[tokio::test]
async fn old_schema_versions_are_upcast_on_read() {
    let env = TestEnv::new().await;
    env.event_store().await; // migrations
    let upcasters = Upcasters::default().register("CustomerRegistered", 1, |mut data| {
        let name = data["name"].as_str().ok_or("no name")?.to_owned();
        let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
        data["first_name"] = json!(first);
        data["last_name"] = json!(last);
        data.as_object_mut().unwrap().remove("name");
        Ok(data)
    });
    let store = EventStore::with_upcasters(env.pg.clone(), upcasters);
    let v1 = NewEvent::new(
        "CustomerRegistered",
        json!({ "name": "Ada Lovelace" }),
        meta(),
    );
    let v2 = NewEvent::new(
        "CustomerRegistered",
        json!({ "first_name": "Grace", "last_name": "Hopper" }),
        meta(),
    )
    .with_schema_version(2);
    store
        .append(&one("customer-1", ExpectedVersion::NoStream, vec![v1]))
        .await
        .unwrap();
    store
        .append(&one("customer-2", ExpectedVersion::NoStream, vec![v2]))
        .await
        .unwrap();

    let ada = &store.read_stream("customer-1", 1, 1).await.unwrap()[0];
    assert_eq!(ada.schema_version, 2);
    assert_eq!(
        ada.data,
        json!({ "first_name": "Ada", "last_name": "Lovelace" })
    );
    // The global order holds back events while any older transaction in
    // the cluster (another test's) is still open: wait until both show.
    let all = eventually(
        Duration::from_secs(10),
        "both events in the global order",
        || async {
            let all = store.read_all(Checkpoint::START, 10).await?;
            anyhow::ensure!(all.len() == 2, "{} of 2 visible", all.len());
            Ok(all)
        },
    )
    .await;
    let grace = &all[1];
    assert_eq!(grace.schema_version, 2);
    assert_eq!(
        grace.data,
        json!({ "first_name": "Grace", "last_name": "Hopper" })
    );

    // Read as JSON text (what the relay and rebuilds read), in pages and
    // as one streamed query: the old shape is upcast all the same, the
    // current one passes through as stored.
    let raw = store.read_all_raw(Checkpoint::START, 10).await.unwrap();
    let streamed: Vec<_> = store
        .stream_all_raw(Checkpoint::START, true)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    for events in [raw, streamed] {
        let parsed: Vec<_> = events
            .into_iter()
            .map(|event| event.parse().unwrap())
            .collect();
        assert_eq!(parsed, all, "the same events as read_all");
    }
}
