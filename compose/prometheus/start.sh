#!/bin/sh
# The Prometheus container's command, for the official image (prom/prometheus)
# and the offline one (Debian's package) alike: writes prometheus.yml with
# the addresses compose gives, then runs Prometheus in the foreground with
# the alert rules beside this script. The metrics test (tests/platform/
# metrics.rs) runs this same script on the host against the services it
# starts.
#
# Settings: COMMAND_SERVICE_ADDR, QUERY_SERVICE_ADDR, SAGA_ORCHESTRATOR_ADDR,
# PROJECTOR_ADDR (host:port, required); PROMETHEUS_LISTEN (default
# 0.0.0.0:9090), PROMETHEUS_DATA (default /prometheus), SCRAPE_INTERVAL
# (default 15s), PROMETHEUS_BIN (default: prometheus on the PATH).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
data=${PROMETHEUS_DATA:-/prometheus}
interval=${SCRAPE_INTERVAL:-15s}
mkdir -p "$data"

for name in COMMAND_SERVICE_ADDR QUERY_SERVICE_ADDR SAGA_ORCHESTRATOR_ADDR PROJECTOR_ADDR; do
    value=$(printenv "$name") || { echo "prometheus: $name is not set" >&2; exit 1; }
    case $value in *[!A-Za-z0-9.:_-]*) echo "prometheus: $name is not a host:port: $value" >&2; exit 1 ;; esac
done

# One job per service, named as the service (the alert rules and the
# dashboards select by it); the rules are read from beside this script.
cat >"$data/prometheus.yml" <<YAML
global:
  scrape_interval: $interval
  evaluation_interval: $interval
rule_files:
  - $here/alerts.yml
scrape_configs:
  - job_name: command-service
    static_configs: [{ targets: ["$COMMAND_SERVICE_ADDR"] }]
  - job_name: query-service
    static_configs: [{ targets: ["$QUERY_SERVICE_ADDR"] }]
  - job_name: saga-orchestrator
    static_configs: [{ targets: ["$SAGA_ORCHESTRATOR_ADDR"] }]
  - job_name: projector
    static_configs: [{ targets: ["$PROJECTOR_ADDR"] }]
YAML

exec "${PROMETHEUS_BIN:-prometheus}" \
    --config.file="$data/prometheus.yml" \
    --storage.tsdb.path="$data" \
    --storage.tsdb.retention.time="${PROMETHEUS_RETENTION:-7d}" \
    --web.listen-address="${PROMETHEUS_LISTEN:-0.0.0.0:9090}"
