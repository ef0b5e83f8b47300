#!/bin/bash
# Starts tansu with sqlite storage, and adds the indexes tansu's schema lacks.
#   BROKER_LISTEN      address to listen on (default 0.0.0.0:9092)
#   BROKER_ADVERTISED  host:port clients are told to connect to (default
#                      127.0.0.1 and the listen port); it must be reachable
#                      from the clients, e.g. the host port mapped to 9092
#   BROKER_DATA_DIR    where the sqlite database lives (default
#                      /var/lib/kafka/data; mount a volume there to keep data)
#   BROKER_STORAGE     tansu storage URL (default sqlite://db/tansu.db, relative
#                      to BROKER_DATA_DIR); this build has only the sqlite
#                      engine (memory:// would lose messages, FACTS.md)
#   BROKER_SCHEMA_TIMEOUT  seconds to wait for a new database's tables
#                      (default 60)
#   BROKER_READY_FILE  the marker written once the storage is indexed
#                      (default /var/lib/kafka/storage-indexed)
#
# tansu 0.6.0 creates its tables when it starts, without an index on
# `header (topition, offset_id)`, so every fetch scans all the headers ever
# stored (ARCHITECTURE.md, "Deployment notes"). This script creates the
# missing indexes idempotently: before tansu starts when the database already
# has its tables, else as soon as tansu has created them and listens. Then it
# writes the marker $BROKER_READY_FILE and prints "broker storage indexed";
# the healthcheck (tansu-healthcheck.sh) and the test harness wait for that.
# It forwards SIGTERM and SIGINT to tansu and exits with tansu's status (1 if
# the storage could not be indexed).
set -euo pipefail
listen=${BROKER_LISTEN:-0.0.0.0:9092}
advertised=${BROKER_ADVERTISED:-127.0.0.1:${listen##*:}}
data=${BROKER_DATA_DIR:-/var/lib/kafka/data}
storage=${BROKER_STORAGE:-sqlite://db/tansu.db}
schema_timeout=${BROKER_SCHEMA_TIMEOUT:-60}
ready=${BROKER_READY_FILE:-/var/lib/kafka/storage-indexed}

# A marker left by an earlier run of this container is stale.
rm -f "$ready"
mkdir -p "$data/db"
# tansu resolves a sqlite URL's path relative to its working directory: the
# host and path of sqlite://HOST/PATH?QUERY, without a leading slash.
cd "$data"
db=
case "$storage" in
    sqlite://*)
        db=${storage#sqlite://}
        db=${db%%\?*}
        db=${db#/}
        ;;
esac

# The indexes, for the lookups tansu 0.6.0 otherwise answers by scanning a
# whole table (EXPLAIN QUERY PLAN of its statements; ARCHITECTURE.md says
# why each).
indexes="
create index if not exists header_topition_offset_id on header (topition, offset_id);
create index if not exists watermark_topition on watermark (topition);
"
index_names="'header_topition_offset_id', 'watermark_topition'"
# Every table tansu 0.6.0 creates (tansu-storage's ddl/*.sql).
tables="cluster consumer_group producer scram_credential topic
consumer_group_detail producer_epoch topic_configuration topition txn
consumer_offset header producer_detail record txn_detail watermark
txn_offset_commit txn_topition txn_offset_commit_tp txn_produce_offset"

log() { printf 'tansu-entrypoint: %s\n' "$*"; }

# sqlite3 waits up to 10 s for a write lock that tansu holds (WAL mode:
# readers never block, one writer at a time).
sql() { sqlite3 -batch -bail -cmd '.timeout 10000' "$db" "$@"; }

schema_present() {
    [ -s "$db" ] || return 1
    local want n
    want=$(wc -w <<<"$tables")
    n=$(sql "select count(*) from sqlite_master where type = 'table' and name in ($(printf "'%s'," $tables | sed 's/,$//'));" 2>/dev/null) || return 1
    [ "$n" = "$want" ]
}

create_indexes() {
    local created
    sql "$indexes" || return 1
    created=$(sql "select group_concat(name, ', ') from sqlite_master where type = 'index' and name in ($index_names);") || return 1
    touch "$ready" || return 1
    log "broker storage indexed ($db: $created)"
}

# Whether tansu accepts connections. It registers the broker (its first
# write, which does not wait for a lock) after creating its tables and before
# it listens.
listening() {
    local host=${listen%:*} port=${listen##*:}
    case "$host" in "" | 0.0.0.0 | "[::]" | "::") host=127.0.0.1 ;; esac
    host=${host#[}
    host=${host%]}
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

failed=0
if [ -z "$db" ]; then
    touch "$ready"
    log "broker storage indexed (not sqlite: nothing to index)"
elif schema_present; then
    # An existing database (a volume kept from an earlier container): index
    # it before tansu starts, so nothing runs beside the index build.
    create_indexes
fi

stopping=0
tansu=
stop() {
    stopping=1
    if [ -n "$tansu" ]; then kill -TERM "$tansu" 2>/dev/null || true; fi
}
trap stop TERM INT

tansu broker \
    --listener-url "tcp://$listen" \
    --advertised-listener-url "tcp://$advertised" \
    --storage-engine "$storage" \
    "$@" &
tansu=$!
# A signal that came before tansu started.
if [ "$stopping" = 1 ]; then stop; fi

if [ ! -f "$ready" ]; then
    # A new database: tansu creates its tables as it starts. Index them once
    # it listens (the index build cannot make its registration fail then),
    # before any client is let in by the healthcheck or the test harness.
    deadline=$((SECONDS + schema_timeout))
    until [ "$stopping" = 1 ] || ! kill -0 "$tansu" 2>/dev/null || { listening && schema_present; }; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "tansu did not create its tables in $db and listen within ${schema_timeout}s; stopping it" >&2
            failed=1
            stop
            break
        fi
        sleep 0.2
    done
    if [ "$stopping" = 0 ] && kill -0 "$tansu" 2>/dev/null && ! create_indexes; then
        log "creating the indexes in $db failed; stopping tansu" >&2
        failed=1
        stop
    fi
fi

# A trapped signal interrupts `wait`; wait until tansu has gone, then once
# more for its status (bash keeps it).
set +e
while kill -0 "$tansu" 2>/dev/null; do wait "$tansu"; done
wait "$tansu"
status=$?
if [ "$failed" = 1 ]; then
    status=1
fi
exit "$status"
