#!/usr/bin/env bash
# `make soak`: starts the platform as `make up` does (building what is
# missing), then runs the soak benchmark against it (BENCHMARKS.md): a
# steady offered load for 10 minutes and 200,000 events by default, lag
# over time, the broker's fetch latency at the start and the end. Extra
# arguments go to the benchmark (`compose/soak.sh --help` lists them).
#   compose/soak.sh [ARGS...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$(dirname "$here")"
case " $* " in
    *" --help "* | *" -h "*) ;;
    *) "$here/up.sh" ;;
esac
# Where `make up` put PostgreSQL and Kafka (the same variables as compose).
# As the owner, who may read every table (the read models through its
# membership of the projector's role); its password is in the secrets that
# `make up` made (compose/secrets.sh).
# shellcheck source=compose/compose.sh
. "$here/compose.sh"
export DATABASE_URL=${DATABASE_URL:-postgres://orders_owner:${ORDERS_OWNER_PASSWORD:?run make up first}@127.0.0.1:${POSTGRES_PORT:-5432}/${POSTGRES_DB:-orders}}
export KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}
# The clients call the platform as an admin, with a token signed with the
# platform's key (compose/token.sh); a day is longer than any run.
case " $* " in
    *" --help "* | *" -h "*) ;;
    *) ORDERS_TOKEN=${ORDERS_TOKEN:-$("$here/token.sh" admin "" 86400 | tail -n1)}; export ORDERS_TOKEN ;;
esac
cargo run --release --locked -p tests --bin bench-soak -- "$@"
