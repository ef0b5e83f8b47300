#!/usr/bin/env bash
# The cost of tracing on POST /v1/orders (BENCHMARKS.md, "The cost of
# tracing"): two release builds of `bench-orders`, run alternately, each
# round in four ways: the old build as it is; the new build with
# RUST_LOG=warn (no spans made, no per-request line: tracing as good as
# absent); with RUST_LOG=info and no exporter (what runs by default); and
# with every span exported over OTLP to `otlp-sink` on the host.
#
# Besides each run's table row (throughput against the one-INSERT floor),
# it prints the benchmark process's CPU time per order during its own
# phase (user + system, from /proc, sampled every 50 ms, divided by the
# orders wrk counted). The services and the floor share that process, and
# the floor's phase comes first, so the second wrk process's lifetime is
# ours. CPU per request varies far less between runs than throughput on a
# 2-core machine that is also running PostgreSQL, the broker and wrk.
#
#   tools/bench-tracing.sh OLD_BENCH_ORDERS NEW_BENCH_ORDERS [ROUNDS]
#
# Build both first, each in its own worktree and CARGO_TARGET_DIR (shared
# target directories overwrite each other's workspace crates):
#   cargo build --release --locked -p tests --bin bench-orders --bin otlp-sink
set -euo pipefail
old=${1:?usage: tools/bench-tracing.sh OLD_BENCH_ORDERS NEW_BENCH_ORDERS [ROUNDS]}
new=${2:?usage: tools/bench-tracing.sh OLD_BENCH_ORDERS NEW_BENCH_ORDERS [ROUNDS]}
rounds=${3:-3}
sink=$(dirname "$new")/otlp-sink
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
compose/images.sh postgres kafka >/dev/null
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
set -a
# shellcheck source=/dev/null
. compose/.images.env
set +a
# shellcheck source=compose/docker-api.sh
. compose/docker-api.sh
"$sink" 127.0.0.1:4318 >/dev/null 2>&1 &
sink_pid=$!
logs=$(mktemp -d)
trap 'kill $sink_pid 2>/dev/null || true; stop_docker_api_shim; rm -rf "$logs"' EXIT

# run LABEL BINARY [VAR=VALUE...]: one run, one line on stdout.
run() {
    local label=$1 bin=$2
    shift 2
    env "$@" "$bin" --connections 16 --seconds 10 >"$logs/out" 2>"$logs/err" &
    local pid=$! wrk_pid cpu
    : >"$logs/samples"
    while kill -0 "$pid" 2>/dev/null; do
        wrk_pid=$(pgrep -x wrk | head -1 || true)
        cpu=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || true)
        [ -n "$cpu" ] && echo "${wrk_pid:-0} $cpu" >>"$logs/samples"
        sleep 0.05
    done
    if ! wait "$pid"; then
        echo "$label: the benchmark failed; its log:" >&2
        tail -20 "$logs/err" >&2
        return 1
    fi
    local row rps
    row=$(grep '^| 16 ' "$logs/out")
    rps=$(echo "$row" | awk -F'|' '{print $3}' | awk '{print $1}')
    awk -v label="$label" -v row="$row" -v rps="$rps" -v tick="$(getconf CLK_TCK)" '
        $1 != 0 && $1 != previous { wrk++ }
        $1 != 0 && wrk == 2 { if (first == "") first = $2; last = $2 }
        { previous = $1 }
        END {
            cpu = (rps > 0 && last > first) ? sprintf("%.0f", (last - first) / tick * 1e6 / (rps * 10)) : "?"
            printf "%-10s %s CPU per order: %s us\n", label, row, cpu
        }' "$logs/samples"
}

for round in $(seq "$rounds"); do
    echo "round $round"
    run old "$old"
    run warn "$new" RUST_LOG=warn
    run off "$new" RUST_LOG=info
    run export "$new" RUST_LOG=info OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
done
