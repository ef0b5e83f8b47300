#!/usr/bin/env bash
# `make up`: finds or builds every image, starts the platform with compose,
# waits until all four services, the gateway and Prometheus (every target
# scraped) are ready and prints where
# they are, the gateway (the one origin for the API and the console) first.
# Running it again with nothing changed leaves the running containers alone.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
started=$SECONDS
say() { printf '[up %4ss] %s\n' "$((SECONDS - started))" "$*" >&2; }

"$here/images.sh" all
"$here/secrets.sh"
# shellcheck source=compose/compose.sh
. "$here/compose.sh"

# The one-shot steps (db-bootstrap, then migrate) run before the services,
# which compose starts only once migrate has exited successfully.
say "starting the platform"
if ! compose up -d --remove-orphans; then
    for step in db-bootstrap migrate; do
        say "$step's last logs:"
        compose logs --tail=30 "$step" >&2 || true
    done
    exit 1
fi

declare -A ports=(
    [command-service]=${COMMAND_SERVICE_PORT:-8081}
    [query-service]=${QUERY_SERVICE_PORT:-8082}
    [saga-orchestrator]=${SAGA_ORCHESTRATOR_PORT:-8083}
    [projector]=${PROJECTOR_PORT:-8084}
)
deadline=$((SECONDS + ${UP_TIMEOUT:-180}))
for service in command-service query-service saga-orchestrator projector; do
    url=http://localhost:${ports[$service]}
    until curl -fsS -o /dev/null "$url/health/ready" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            say "$service is not ready at $url/health/ready; its last logs:"
            compose logs --tail=30 "$service" >&2
            exit 1
        fi
        sleep 1
    done
    say "$service ready"
done
gateway=http://localhost:${GATEWAY_PORT:-8080}
until curl -fsS -o /dev/null "$gateway/health/gateway" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
        say "the gateway is not ready at $gateway/health/gateway; its last logs:"
        compose logs --tail=30 gateway >&2
        exit 1
    fi
    sleep 1
done
say "gateway ready"
# Prometheus is ready once it has scraped every service: each target up.
prometheus=http://localhost:${PROMETHEUS_PORT:-9090}
until [ "$(curl -fsS "$prometheus/api/v1/targets?state=active" 2>/dev/null | grep -o '"health":"up"' | wc -l)" -ge 4 ]; do
    if [ $SECONDS -ge $deadline ]; then
        say "Prometheus does not have every target up at $prometheus/targets; its last logs:"
        compose logs --tail=30 prometheus >&2
        exit 1
    fi
    sleep 1
done
say "prometheus ready: every target up"

cat <<MSG

The platform is up:
  gateway            $gateway/  (the whole public API, /v1/...)
  console            $gateway/console/
  Prometheus         $prometheus/  (alerts: $prometheus/alerts, targets: $prometheus/targets)
  command-service    http://localhost:${ports[command-service]}
  query-service      http://localhost:${ports[query-service]}
  saga-orchestrator  http://localhost:${ports[saga-orchestrator]}
  projector          http://localhost:${ports[projector]}
  PostgreSQL         postgres://orders_owner:***@127.0.0.1:${POSTGRES_PORT:-5432}/${POSTGRES_DB:-orders}
                     (passwords in $ORDERS_SECRETS_DIR/db.env)
  Kafka              127.0.0.1:${KAFKA_PORT:-9092}
Each service serves /health/live, /health/ready and /metrics on its own
port (the gateway: /health/gateway). Every other request needs a token: \`make token ROLE=admin\` prints one (README.md, "Tokens").
Stop with \`make down\`.
MSG
