#!/bin/bash
# Healthy once tansu-entrypoint.sh has indexed the broker's storage (its
# marker file) and tansu accepts connections on BROKER_LISTEN.
set -u
ready=${BROKER_READY_FILE:-/var/lib/kafka/storage-indexed}
listen=${BROKER_LISTEN:-0.0.0.0:9092}
[ -f "$ready" ] || { echo "broker storage not indexed yet" >&2; exit 1; }
host=${listen%:*}
case "$host" in "" | 0.0.0.0 | "[::]" | "::") host=127.0.0.1 ;; esac
host=${host#[}
host=${host%]}
exec 3<>"/dev/tcp/$host/${listen##*:}"
