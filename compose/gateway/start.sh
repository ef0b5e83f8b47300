#!/bin/sh
# The gateway container's command, for the official nginx image and the
# offline one alike: renders nginx.conf.template with the addresses compose
# gives and runs nginx in the foreground. harness::gateway renders the same
# template for the tests.
#
# Placeholders (all required): GATEWAY_LISTEN, COMMAND_SERVICE_ADDR,
# QUERY_SERVICE_ADDR, SAGA_ORCHESTRATOR_ADDR, PROJECTOR_ADDR,
# GATEWAY_CONSOLE_DIR, GATEWAY_ACCESS_LOG, GATEWAY_ERROR_LOG. Values are
# addresses and paths; they may not contain `|`, `&` or a backslash.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
template=${GATEWAY_TEMPLATE:-$here/nginx.conf.template}
# nginx's prefix: the rendered file, its pid file and temporary files. The
# container may run as any user, so it lives in /tmp.
prefix=${GATEWAY_PREFIX:-/tmp/gateway}
mkdir -p "$prefix/temp"

script=
for name in GATEWAY_LISTEN COMMAND_SERVICE_ADDR QUERY_SERVICE_ADDR SAGA_ORCHESTRATOR_ADDR \
    PROJECTOR_ADDR GATEWAY_CONSOLE_DIR GATEWAY_ACCESS_LOG GATEWAY_ERROR_LOG; do
    value=$(printenv "$name") || { echo "gateway: $name is not set" >&2; exit 1; }
    case $value in *'|'* | *'&'* | *'\'*) echo "gateway: $name may not contain | & or \\" >&2; exit 1 ;; esac
    script="${script}s|\${$name}|$value|g;"
done
sed -e "$script" "$template" >"$prefix/nginx.conf"
# A placeholder left outside the comments is a name this script does not know.
if grep -v '^[[:space:]]*#' "$prefix/nginx.conf" | grep -q '\${'; then
    echo "gateway: $template has a placeholder this script does not fill:" >&2
    grep -n '\${' "$prefix/nginx.conf" | grep -v '^[0-9]*:[[:space:]]*#' >&2
    exit 1
fi
# -e: errors before the configuration is read go there too, not to the
# package's compiled-in log file.
exec nginx -p "$prefix/" -c "$prefix/nginx.conf" -e "$GATEWAY_ERROR_LOG"
