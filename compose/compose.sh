# Sourced by the compose scripts: defines `compose`, which runs Docker
# Compose (v2 plugin or v1 docker-compose) on compose/compose.yaml with the
# image names recorded by compose/images.sh and the secrets made by
# compose/secrets.sh.
_compose_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if docker compose version >/dev/null 2>&1; then
    _compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    _compose_cmd=(docker-compose)
else
    echo "Docker Compose is missing: install the docker-compose-plugin or docker-compose package" >&2
    exit 1
fi
touch "$_compose_dir/.images.env"
# The passwords and keys compose/secrets.sh made (outside the repository),
# for compose's interpolation; the sidecar that reads the private key runs
# as the key's owner.
export ORDERS_SECRETS_DIR=${ORDERS_SECRETS_DIR:-${ORDERS_CACHE_DIR:-$HOME/.cache/orders-platform}/secrets}
if [ -r "$ORDERS_SECRETS_DIR/db.env" ]; then
    set -a
    # shellcheck source=/dev/null
    . "$ORDERS_SECRETS_DIR/db.env"
    set +a
fi
# The gateway's configuration is mounted into its container; its checksum in
# the container's environment makes compose recreate it when it changes.
GATEWAY_CONFIG_REVISION=$(cat "$_compose_dir/gateway/nginx.conf.template" "$_compose_dir/gateway/start.sh" | cksum | cut -d' ' -f1)
export GATEWAY_CONFIG_REVISION
# Prometheus' likewise: its start script and alert rules.
PROMETHEUS_CONFIG_REVISION=$(cat "$_compose_dir/prometheus/start.sh" "$_compose_dir/prometheus/alerts.yml" | cksum | cut -d' ' -f1)
export PROMETHEUS_CONFIG_REVISION
ORDERS_UID=$(id -u)
ORDERS_GID=$(id -g)
export ORDERS_UID ORDERS_GID
compose() {
    "${_compose_cmd[@]}" --project-name orders-platform \
        --env-file "$_compose_dir/.images.env" \
        --file "$_compose_dir/compose.yaml" "$@"
}
