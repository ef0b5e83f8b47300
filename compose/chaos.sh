#!/usr/bin/env bash
# `make chaos`: starts the platform as `make up` does (building what is
# missing), then runs the crash-safety suite against it: clients place and
# cancel orders (70 per second offered for 150 s by default) while each
# container (every service, the broker, PostgreSQL) has its process killed
# with SIGKILL and compose's `restart: unless-stopped` brings it back; then
# every acknowledged request, saga, invariant, read model and projection is
# checked against the event store. Prints the figures; exits non-zero if a
# check failed. Extra arguments go to the suite (`compose/chaos.sh --help`
# lists them: --rate, --seconds, --clients, --settle-seconds, --faults ...).
#   compose/chaos.sh [ARGS...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$(dirname "$here")"
case " $* " in
    *" --help "* | *" -h "*) ;;
    *) "$here/up.sh" ;;
esac
# Where `make up` put PostgreSQL (the same variables as compose); the
# services' and Kafka's ports are read from the same variables by the suite.
# As the owner, who may read every table (the read models through its
# membership of the projector's role); its password is in the secrets that
# `make up` made (compose/secrets.sh).
# shellcheck source=compose/compose.sh
. "$here/compose.sh"
export CHAOS_DATABASE_URL=${CHAOS_DATABASE_URL:-postgres://orders_owner:${ORDERS_OWNER_PASSWORD:?run make up first}@127.0.0.1:${POSTGRES_PORT:-5432}/${POSTGRES_DB:-orders}}
# The clients call the platform as an admin, with a token signed with the
# platform's key (compose/token.sh); a day is longer than any run.
case " $* " in
    *" --help "* | *" -h "*) ;;
    *) ORDERS_TOKEN=${ORDERS_TOKEN:-$("$here/token.sh" admin "" 86400 | tail -n1)}; export ORDERS_TOKEN ;;
esac
cargo run --release --locked -p tests --bin chaos -- "$@"
