#!/bin/bash
# Starts tansu with sqlite storage.
#   BROKER_LISTEN      address to listen on (default 0.0.0.0:9092)
#   BROKER_ADVERTISED  host:port clients are told to connect to (default
#                      127.0.0.1 and the listen port); it must be reachable
#                      from the clients, e.g. the host port mapped to 9092
#   BROKER_DATA_DIR    where the sqlite database lives (default
#                      /var/lib/kafka/data; mount a volume there to keep data)
#   BROKER_STORAGE     tansu storage URL (default sqlite://db/tansu.db, relative
#                      to BROKER_DATA_DIR); this build has only the sqlite
#                      engine (memory:// would lose messages, FACTS.md)
set -euo pipefail
listen=${BROKER_LISTEN:-0.0.0.0:9092}
advertised=${BROKER_ADVERTISED:-127.0.0.1:${listen##*:}}
data=${BROKER_DATA_DIR:-/var/lib/kafka/data}
storage=${BROKER_STORAGE:-sqlite://db/tansu.db}
mkdir -p "$data/db"
# tansu resolves a sqlite URL's path relative to its working directory.
cd "$data"
exec tansu broker \
    --listener-url "tcp://$listen" \
    --advertised-listener-url "tcp://$advertised" \
    --storage-engine "$storage" \
    "$@"
