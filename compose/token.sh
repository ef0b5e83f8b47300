#!/usr/bin/env bash
# `make token ROLE=<role> [SUBJECT=<customer id>] [TTL=<seconds>]`: prints a
# token signed with the platform's key (compose/secrets.sh), on the last
# line of its output, for example:
#   curl -H "Authorization: Bearer $(make -s token ROLE=admin | tail -n1)" ...
# orders-auth runs from the services image, with no network, as the key's
# owner, with the key's directory mounted read-only.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
role=${1:-${ROLE:-}}
subject=${2:-${SUBJECT:-}}
ttl=${3:-${TTL:-3600}}
if [ -z "$role" ]; then
    echo "usage: make token ROLE=customer|reader|writer|operator|admin|service [SUBJECT=<id>] [TTL=<seconds>]" >&2
    exit 2
fi
# shellcheck source=compose/compose.sh
. "$here/compose.sh"
if [ ! -s "$ORDERS_SECRETS_DIR/signing/signing-key.pem" ]; then
    echo "no signing key in $ORDERS_SECRETS_DIR/signing: run \`make up\` first" >&2
    exit 1
fi
image=${SERVICES_IMAGE:-$(sed -n 's/^SERVICES_IMAGE=//p' "$here/.images.env")}
args=(token --keys-dir /keys --role "$role" --ttl "$ttl")
if [ -n "$subject" ]; then
    args+=(--subject "$subject")
fi
docker run --rm --network none --user "$ORDERS_UID:$ORDERS_GID" \
    -v "$ORDERS_SECRETS_DIR/signing:/keys:ro" "${image:-orders-platform/services:latest}" \
    orders-auth "${args[@]}"
