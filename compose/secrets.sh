#!/usr/bin/env bash
# Makes, once, what the platform's containers must not find in the
# repository, beside the other cached artefacts ($ORDERS_CACHE_DIR, default
# ~/.cache/orders-platform), and keeps it for later runs:
#
#   secrets/                  mode 0700
#     db.env                  0600: POSTGRES_PASSWORD (the superuser's, read
#                             only by PostgreSQL and the one-shot bootstrap)
#                             and one password per database role
#                             (ORDERS_OWNER_PASSWORD, ORDERS_COMMAND_PASSWORD,
#                             ...; see service_kit::db)
#     signing/                0700: the platform's signing key pair, read
#                             only by `make token` and the service-token
#                             sidecar (orders-auth keygen)
#     jwks/jwks.json          0644: its public key set, mounted read-only
#                             into every service (AUTH_JWKS_FILE)
#
# The key is made with orders-auth from the services image, so run this
# after compose/images.sh. Sourced by compose/compose.sh for the variables
# (without making anything); run by compose/up.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
secrets=${ORDERS_SECRETS_DIR:-${ORDERS_CACHE_DIR:-$HOME/.cache/orders-platform}/secrets}
say() { printf '[secrets] %s\n' "$*" >&2; }

# 24 random bytes as hex: URL-safe, so it can go in a DATABASE_URL as is.
random_password() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

install -d -m 0700 "$secrets" "$secrets/signing"
install -d -m 0755 "$secrets/jwks"

if [ ! -s "$secrets/db.env" ]; then
    # A PostgreSQL volume from before the platform had its roles holds
    # tables owned by the superuser, which the owner cannot migrate; and
    # its superuser password is not the one about to be made.
    if docker volume inspect orders-platform_pgdata >/dev/null 2>&1; then
        say "the PostgreSQL volume orders-platform_pgdata predates $secrets/db.env;"
        say "run \`make clean\` (it deletes the platform's data) and \`make up\` again"
        exit 1
    fi
    say "making database passwords in $secrets/db.env"
    umask 077
    {
        echo "# Made by compose/secrets.sh; keep it out of the repository."
        echo "POSTGRES_PASSWORD=$(random_password)"
        for role in OWNER COMMAND QUERY PROJECTOR SAGA; do
            echo "ORDERS_${role}_PASSWORD=$(random_password)"
        done
    } >"$secrets/db.env.tmp"
    mv "$secrets/db.env.tmp" "$secrets/db.env"
fi

if [ ! -s "$secrets/signing/signing-key.pem" ] || [ ! -s "$secrets/jwks/jwks.json" ]; then
    say "making the platform's signing key in $secrets/signing"
    image=${SERVICES_IMAGE:-$(sed -n 's/^SERVICES_IMAGE=//p' "$here/.images.env" 2>/dev/null)}
    docker run --rm --network none --user "$(id -u):$(id -g)" \
        -v "$secrets:/secrets" "${image:-orders-platform/services:latest}" \
        orders-auth keygen --keys-dir /secrets/signing --jwks /secrets/jwks/jwks.json >&2
fi
