#!/usr/bin/env bash
# `make bench-event-store`: the event store benchmarks (BENCHMARKS.md), in
# release mode, against PostgreSQL and the broker started in containers.
# Arguments are passed to the benchmark (`-- --help` lists them).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$(dirname "$here")"
"$here/images.sh" postgres kafka
# shellcheck source=compose/docker-api.sh
. "$here/docker-api.sh"
trap stop_docker_api_shim EXIT
cargo run --release --locked -p tests --bin bench-event-store -- "$@"
