#!/usr/bin/env bash
# Finds or builds every container image the platform needs, on machines with
# or without a container registry, and records the chosen names in
# compose/.images.env (read by the Makefile, compose and the test harness).
#
#   compose/images.sh postgres kafka services gateway prometheus   # any subset; `all` = all five
#
# Each step is idempotent: an image that is already there is not built again,
# and the expensive intermediate products (the Debian root filesystem, the
# tansu binary) are cached under $ORDERS_CACHE_DIR (default
# ~/.cache/orders-platform) so that a fresh clone on the same machine reuses
# them.
#
# Choices, in order:
#   PostgreSQL: $POSTGRES_IMAGE if set; else postgres:16 if present or
#               pullable; else orders-platform/postgres:15-bookworm-2 built
#               from Debian's packages.
#   Kafka:      $KAFKA_IMAGE if set; else apache/kafka:3.9.1 if present or
#               pullable; else orders-platform/tansu:0.6.0-3 (tansu with sqlite
#               storage, whose entrypoint adds the indexes tansu's schema
#               lacks; see compose/kafka/tansu-entrypoint.sh).
#   services:   orders-platform/services:latest, built with the multi-stage
#               compose/Dockerfile when rust:1-bookworm is present or
#               pullable, else from binaries built on the host copied into the
#               debootstrapped Debian base image.
#   gateway:    $GATEWAY_IMAGE if set; else nginx:1.28 if present or
#               pullable; else orders-platform/nginx:1.22-bookworm-2, Debian's
#               nginx from the base image (compose/gateway/Dockerfile).
#   prometheus: $PROMETHEUS_IMAGE if set; else prom/prometheus:v3.5.0 if
#               present or pullable; else orders-platform/prometheus:2.42-
#               bookworm-2, Debian's prometheus from the base image
#               (compose/prometheus/Dockerfile).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cache=${ORDERS_CACHE_DIR:-$HOME/.cache/orders-platform}
env_file=$here/.images.env

official_postgres=postgres:16
official_kafka=apache/kafka:3.9.1
official_rust=rust:1-bookworm
official_nginx=nginx:1.28
official_prometheus=prom/prometheus:v3.5.0
# The suffix of the root filesystem's cache folder and of its image is the
# base recipe's revision: bump both when the package list below changes, so
# old caches and images are not reused.
base_revision=2
base_image=orders-platform/debian:bookworm-$base_revision
# Everything the offline images need, installed once: PostgreSQL for the
# postgres image, sqlite3 for the tansu image's entrypoint (it indexes the
# broker's database), nginx and prometheus for the gateway and the metrics
# server, ca-certificates for all.
base_packages=postgresql-15,ca-certificates,sqlite3,nginx,prometheus
# Built from $base_image, so it carries the base's revision.
debian_postgres=orders-platform/postgres:15-bookworm-$base_revision
tansu_version=0.6.0
# The suffix is the image recipe's revision (compose/kafka): bump it when the
# Dockerfile, the scripts or the base change, so machines that have the old
# image build the new one.
tansu_image=orders-platform/tansu:$tansu_version-3
services_image=${SERVICES_IMAGE:-orders-platform/services:latest}
# Built from $base_image (bookworm's nginx is 1.22), so it carries the base's
# revision; bump the suffix when compose/gateway/Dockerfile changes.
debian_nginx=orders-platform/nginx:1.22-bookworm-$base_revision
# Likewise (bookworm's prometheus is 2.42); bump the suffix when
# compose/prometheus/Dockerfile changes.
debian_prometheus=orders-platform/prometheus:2.42-bookworm-$base_revision

# The legacy builder needs no buildx plugin, which Debian's docker.io lacks.
if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi

# Runs `docker build` quietly; its output is shown only when it fails.
docker_build() {
    local log
    log=$(mktemp)
    if ! docker build -q "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
}

started=$SECONDS
say() { printf '[images %4ss] %s\n' "$((SECONDS - started))" "$*" >&2; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# Uses an image that is present, or pulls it; fails fast without a registry.
present_or_pullable() {
    have_image "$1" && return 0
    [ "${OFFLINE:-0}" = 1 ] && return 1
    say "trying to pull $1"
    if timeout 600 docker pull -q "$1" >/dev/null 2>&1; then
        return 0
    fi
    say "$1 cannot be pulled (no registry?); building from source instead"
    return 1
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Records KEY=VALUE in compose/.images.env, replacing an earlier value.
record() {
    touch "$env_file"
    grep -v "^$1=" "$env_file" >"$env_file.tmp" || true
    printf '%s=%s\n' "$1" "$2" >>"$env_file.tmp"
    mv "$env_file.tmp" "$env_file"
}

# One Debian bookworm root filesystem with every package the offline images
# need ($base_packages), imported as one image layer that all of them start
# from, so it is stored once.
ensure_base() {
    if have_image "$base_image"; then
        say "$base_image is present"
        return
    fi
    local rootfs=$cache/rootfs-bookworm-$base_revision
    if [ ! -f "$rootfs/.complete" ]; then
        if ! command -v debootstrap >/dev/null 2>&1; then
            say "installing debootstrap"
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        fi
        say "debootstrapping Debian bookworm with $base_packages into $rootfs (about 2 min)"
        as_root rm -rf "$rootfs"
        mkdir -p "$cache"
        as_root debootstrap --variant=minbase --include="$base_packages" \
            bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$cache/debootstrap.log" 2>&1 || {
            tail -n 30 "$cache/debootstrap.log" >&2
            exit 1
        }
        # The package's own cluster is unused (the entrypoint runs initdb in
        # $PGDATA); caches, documentation and translations are dead weight in
        # an image, and so are moment-timezone's raw data files (210 MB,
        # pulled in by prometheus, whose web UI loads only
        # moment-timezone-with-data.min.js). The packages' services are not
        # started in the chroot (no init there), so nothing is left running.
        as_root rm -rf "$rootfs/var/lib/postgresql/15" "$rootfs/etc/postgresql/15" \
            "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/info" \
            "$rootfs"/usr/share/locale/*/ "$rootfs/usr/share/javascript/moment-timezone/data"
        as_root touch "$rootfs/.complete"
    fi
    say "importing $rootfs as $base_image"
    as_root tar --exclude=./.complete -C "$rootfs" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$base_image" >/dev/null
}

ensure_postgres() {
    local image
    if [ -n "${POSTGRES_IMAGE:-}" ]; then
        image=$POSTGRES_IMAGE
        have_image "$image" || present_or_pullable "$image" || { say "POSTGRES_IMAGE=$image is not available"; exit 1; }
    elif present_or_pullable "$official_postgres"; then
        image=$official_postgres
    else
        image=$debian_postgres
        if have_image "$image"; then
            say "$image is present"
        else
            ensure_base
            say "building $image"
            docker_build -t "$image" --build-arg BASE="$base_image" "$here/postgres" >/dev/null
        fi
    fi
    say "PostgreSQL image: $image"
    record POSTGRES_IMAGE "$image"
}

ensure_tansu_binary() {
    local bin=$cache/tansu-$tansu_version/bin/tansu
    if [ -x "$bin" ]; then
        return
    fi
    say "building tansu $tansu_version from crates.io (about 10 min on 2 cores; cached afterwards)"
    # --locked: without it a newer dependency breaks the build (FACTS.md).
    cargo install tansu --version "$tansu_version" --locked --features libsql \
        --root "$cache/tansu-$tansu_version" >"$cache/tansu-build.log" 2>&1 || {
        tail -n 30 "$cache/tansu-build.log" >&2
        exit 1
    }
}

ensure_kafka() {
    local image kind
    if [ -n "${KAFKA_IMAGE:-}" ]; then
        image=$KAFKA_IMAGE
        have_image "$image" || present_or_pullable "$image" || { say "KAFKA_IMAGE=$image is not available"; exit 1; }
    elif present_or_pullable "$official_kafka"; then
        image=$official_kafka
    else
        image=$tansu_image
        if have_image "$image"; then
            say "$image is present"
        else
            ensure_base
            ensure_tansu_binary
            local ctx
            ctx=$(mktemp -d)
            cp "$cache/tansu-$tansu_version/bin/tansu" "$here"/kafka/* "$ctx/"
            say "building $image"
            docker_build -t "$image" --build-arg BASE="$base_image" "$ctx" >/dev/null
            rm -rf "$ctx"
        fi
    fi
    case "$image" in
        *tansu*) kind=tansu ;;
        *) kind=apache ;;
    esac
    say "Kafka image: $image ($kind)"
    record KAFKA_IMAGE "$image"
    record KAFKA_KIND "$kind"
}

ensure_services() {
    local bins="command-service query-service projector saga-orchestrator orders-auth orders-db"
    # orders-auth and orders-db are service-kit's binaries.
    local packages="command-service query-service projector saga-orchestrator service-kit"
    if present_or_pullable "$official_rust"; then
        say "building $services_image with the multi-stage Dockerfile"
        docker_build -t "$services_image" -f "$here/Dockerfile" "$root" >/dev/null
    else
        ensure_base
        say "building the service binaries on the host (cargo build --release)"
        (cd "$root" && cargo build --release --locked --quiet $(printf -- '-p %s ' $packages))
        local ctx
        ctx=$(mktemp -d)
        for b in $bins; do cp "${CARGO_TARGET_DIR:-$root/target}/release/$b" "$ctx/"; done
        cp "$here/Dockerfile.offline" "$ctx/Dockerfile"
        # Docker's build cache keys COPY on file content, so unchanged
        # binaries give the same image id and `make up` recreates nothing.
        say "building $services_image from the host binaries"
        docker_build -t "$services_image" --build-arg BASE="$base_image" "$ctx" >/dev/null
        rm -rf "$ctx"
    fi
    say "services image: $services_image"
    record SERVICES_IMAGE "$services_image"
}

# An image whose configuration compose mounts (the gateway's, Prometheus'),
# so the official image and the offline one run the repository's own:
# $<variable> if set, else the official image if present or pullable, else
# the offline one built from the base with compose/<folder>/Dockerfile.
#   ensure_mounted <what> <variable> <official image> <offline image> <folder>
ensure_mounted() {
    local what=$1 variable=$2 official=$3 offline=$4 folder=$5 image
    if [ -n "${!variable:-}" ]; then
        image=${!variable}
        have_image "$image" || present_or_pullable "$image" || { say "$variable=$image is not available"; exit 1; }
    elif present_or_pullable "$official"; then
        image=$official
    else
        image=$offline
        if have_image "$image"; then
            say "$image is present"
        else
            ensure_base
            local ctx
            ctx=$(mktemp -d)
            cp "$here/$folder/Dockerfile" "$ctx/"
            say "building $image"
            docker_build -t "$image" --build-arg BASE="$base_image" "$ctx" >/dev/null
            rm -rf "$ctx"
        fi
    fi
    say "$what image: $image"
    record "$variable" "$image"
}

ensure_gateway() { ensure_mounted gateway GATEWAY_IMAGE "$official_nginx" "$debian_nginx" gateway; }
ensure_prometheus() { ensure_mounted prometheus PROMETHEUS_IMAGE "$official_prometheus" "$debian_prometheus" prometheus; }

[ $# -gt 0 ] || set -- all
for what in "$@"; do
    case "$what" in
        postgres) ensure_postgres ;;
        kafka) ensure_kafka ;;
        services) ensure_services ;;
        gateway) ensure_gateway ;;
        prometheus) ensure_prometheus ;;
        all) ensure_postgres; ensure_kafka; ensure_services; ensure_gateway; ensure_prometheus ;;
        *) echo "usage: $0 [postgres|kafka|services|gateway|prometheus|all]..." >&2; exit 2 ;;
    esac
done
say "done; image names are in ${env_file#"$root"/}"
