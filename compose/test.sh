#!/usr/bin/env bash
# `make test`: finds or builds the PostgreSQL and Kafka images, installs
# nginx, Chromium and chromedriver if they are missing (the gateway's and
# the console's tests run them), finds Debian's prometheus and promtool
# (the metrics test runs them), then runs the whole
# test suite (unit and integration) with cargo. Integration tests start
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
    docker ps -aq --filter label=orders-platform.test | xargs -r docker rm -f -v >/dev/null 2>&1 || true
}
remove_test_containers

# shellcheck source=compose/docker-api.sh
. "$here/docker-api.sh"
trap 'remove_test_containers; stop_docker_api_shim' EXIT

# Programs the tests run on the host, from Debian's packages, when a fresh
# machine lacks them: nginx for the gateway's tests (harness::gateway), and
# Chromium with its WebDriver server for the console's (harness::browser;
# browsers are never downloaded).
# Chromium comes with its recommended packages: they bring the fonts
# (fonts-liberation) that its screenshots need to show any text.
need_nginx=
need_chromium=
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    need_nginx=1
fi
if ! command -v chromedriver >/dev/null 2>&1; then
    need_chromium=1
fi
if [ -n "$need_nginx$need_chromium" ]; then
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
    as_root apt-get update -qq
    if [ -n "$need_nginx" ]; then
        say "installing nginx (Debian's package) for the gateway's tests"
        apt_install --no-install-recommends nginx
    fi
    if [ -n "$need_chromium" ]; then
        say "installing chromium and chromium-driver (Debian's packages) for the console's tests"
        apt_install chromium chromium-driver
    fi
fi

# Prometheus and promtool for the metrics test (tests/platform/metrics.rs:
# the alert rules are checked and unit-tested, and a real Prometheus scrapes
# the services). Debian's, from the base image's root filesystem when
# images.sh made one, else extracted from the package without installing
# it (an installed package would start a Prometheus server on the host).
cache=${ORDERS_CACHE_DIR:-$HOME/.cache/orders-platform}
prometheus_bin=
for dir in "$cache"/rootfs-bookworm-*/usr/bin "$cache/prometheus-deb/usr/bin"; do
    if [ -x "$dir/prometheus" ] && [ -x "$dir/promtool" ]; then
        prometheus_bin=$dir
    fi
done
if [ -z "$prometheus_bin" ]; then
    say "fetching Debian's prometheus package for the metrics test"
    as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    as_root apt-get update -qq
    deb_dir=$(mktemp -d)
    (cd "$deb_dir" && apt-get download -qq prometheus)
    rm -rf "$cache/prometheus-deb"
    mkdir -p "$cache"
    dpkg-deb -x "$deb_dir"/prometheus_*.deb "$cache/prometheus-deb"
    rm -rf "$deb_dir"
    prometheus_bin=$cache/prometheus-deb/usr/bin
fi
export PROMETHEUS_BIN=${PROMETHEUS_BIN:-$prometheus_bin/prometheus}
export PROMTOOL=${PROMTOOL:-$prometheus_bin/promtool}

say "checking formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings

say "running cargo test --workspace"
cargo test --workspace --locked "$@"
# The crash suite, alone: it measures recovery under a load of its own
# (tests/platform/chaos.rs says why it is not run beside the others).
say "running the crash suite on its own"
cargo test -p tests --locked --test platform -- --ignored chaos::
say "all tests passed"
