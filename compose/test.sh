#!/usr/bin/env bash
# `make test`: finds or builds the PostgreSQL and Kafka images, then runs the
# whole test suite (unit and integration) with cargo. Integration tests start
# their own containers from those images with testcontainers.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cd "$root"

started=$SECONDS
say() { printf '[test %4ss] %s\n' "$((SECONDS - started))" "$*" >&2; }

"$here/images.sh" postgres kafka
set -a
# shellcheck source=/dev/null
. "$here/.images.env"
set +a

# Containers the harness started are kept for the life of a test binary;
# remove them (and any left by an interrupted run) when done.
remove_test_containers() {
    docker ps -aq --filter label=orders-platform.test | xargs -r docker rm -f >/dev/null 2>&1 || true
}
shim_pid=
cleanup() {
    [ -n "$shim_pid" ] && kill "$shim_pid" 2>/dev/null || true
    remove_test_containers
}
trap cleanup EXIT
remove_test_containers

# testcontainers 0.28 talks to Docker through bollard 0.21, which always asks
# for API 1.53 and does not negotiate down. Older engines (Debian's Docker
# 20.10 speaks 1.41) get a loopback shim that lowers the version in each path.
required_api=1.53
engine_api=$(docker version --format '{{.Server.APIVersion}}')
if [ "$(printf '%s\n%s\n' "$engine_api" "$required_api" | sort -V | head -n1)" != "$required_api" ]; then
    say "Docker engine API $engine_api is older than $required_api: starting docker-api-shim"
    cargo build --locked --quiet -p tests --bin docker-api-shim
    socket=/var/run/docker.sock
    case "${DOCKER_HOST:-}" in unix://*) socket=${DOCKER_HOST#unix://} ;; esac
    port_file=$(mktemp)
    rm -f "$port_file"
    target/debug/docker-api-shim "$socket" "$port_file" >/dev/null &
    shim_pid=$!
    for _ in $(seq 100); do
        [ -s "$port_file" ] && break
        sleep 0.1
    done
    [ -s "$port_file" ] || { say "docker-api-shim did not start"; exit 1; }
    export DOCKER_HOST=tcp://127.0.0.1:$(cat "$port_file")
    rm -f "$port_file"
fi

say "checking formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings

say "running cargo test --workspace"
cargo test --workspace --locked "$@"
say "all tests passed"
