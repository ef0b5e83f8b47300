#!/usr/bin/env bash
# `make bench-event-store`, `bench-orders`, `bench-projector`, `bench-sagas`:
# a benchmark binary of the tests crate (BENCHMARKS.md), in release mode,
# against PostgreSQL and the broker started in containers. Extra arguments
# go to the benchmark (`-- --help` lists them).
#   compose/bench.sh BINARY [ARGS...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$(dirname "$here")"
binary=${1:?usage: compose/bench.sh BINARY [ARGS...]}
shift
"$here/images.sh" postgres kafka
if [ "$binary" = bench-orders ] && ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (Debian's package) to drive the HTTP load" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; else sudo apt-get install -y -qq wrk >/dev/null; fi
fi
# The benchmark stops its services and removes its containers itself (also
# on Ctrl-C); a benchmark that is killed leaves them, so whatever containers
# with the test label appeared during this run are removed on exit. Those
# that were there before (another run's) are left alone.
label=orders-platform.test
before=$(docker ps -aq --no-trunc --filter "label=$label" | sort)
remove_new_containers() {
    comm -13 <(printf '%s\n' "$before") <(docker ps -aq --no-trunc --filter "label=$label" | sort) |
        xargs -r docker rm -f -v >/dev/null 2>&1 || true
}
# shellcheck source=compose/docker-api.sh
. "$here/docker-api.sh"
trap 'remove_new_containers; stop_docker_api_shim' EXIT
cargo run --release --locked -p tests --bin "$binary" -- "$@"
