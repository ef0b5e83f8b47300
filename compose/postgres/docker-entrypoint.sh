#!/bin/bash
# Initialises $PGDATA on first start, then runs the server in the foreground.
# Mirrors the official image's interface: POSTGRES_USER (default postgres),
# POSTGRES_PASSWORD (required), POSTGRES_DB (default: the user's name), and
# `postgres [-c name=value]...` as the command.
set -euo pipefail

if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
shift

user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "POSTGRES_PASSWORD must be set" >&2
        exit 1
    fi
    echo "initialising the database cluster in $PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --encoding=UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    # Clients reach the server through Docker's port mapping or the host
    # network, from addresses initdb's localhost-only rules do not cover.
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        # Single-user mode creates the database without a temporary server.
        echo "create database \"$db\"" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    echo "initialisation complete"
fi

exec postgres "$@"
