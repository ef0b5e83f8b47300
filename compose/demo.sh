#!/usr/bin/env bash
# `make demo`: against the platform `make up` started, seeds a catalogue and
# customers, places a steady stream of orders (most confirmed, some rejected
# for stock, payment or shipping, some cancelled), and makes one saga end
# `failed` by a real fault: while a cancellation's compensations run, the
# command-service is frozen (`docker compose pause`), so every undo call
# times out until the saga's compensation attempts are used up. Then it
# prints the console's URL and an operator's token, so the failed saga can
# be found, explained and retried there.
#   compose/demo.sh [ORDERS]          (default 40 orders)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
orders=${1:-${DEMO_ORDERS:-40}}
started=$SECONDS
say() { printf '[demo %4ss] %s\n' "$((SECONDS - started))" "$*" >&2; }
# shellcheck source=compose/compose.sh
. "$here/compose.sh"

command_url=http://127.0.0.1:${COMMAND_SERVICE_PORT:-8081}
query_url=http://127.0.0.1:${QUERY_SERVICE_PORT:-8082}
orchestrator_url=http://127.0.0.1:${SAGA_ORCHESTRATOR_PORT:-8083}
gateway_url=http://localhost:${GATEWAY_PORT:-8080}
for url in "$command_url" "$query_url" "$orchestrator_url"; do
    if ! curl -fsS -o /dev/null "$url/health/ready"; then
        echo "$url is not ready: run \`make up\` first" >&2
        exit 1
    fi
done
admin=$("$here/token.sh" admin "" 7200 | tail -n1)
operator=$("$here/token.sh" operator "" 28800 | tail -n1)

# call METHOD URL [BODY]: the body of the answer; fails on an error status.
call() {
    local method=$1 url=$2 body=${3:-}
    local args=(-fsS -X "$method" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json')
    if [ -n "$body" ]; then args+=(--data "$body"); fi
    curl "${args[@]}" "$url"
}
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

run=$(date +%s)
say "seeding the catalogue and the customers"
skus=(lamp mug desk chair rug)
prices=(2500 900 18000 7500 12000)
for i in "${!skus[@]}"; do
    sku=demo-${skus[$i]}-$run
    stock=$([ "$i" = 2 ] && echo 3 || echo 500)
    call POST "$command_url/v1/products" \
        "{\"sku\":\"$sku\",\"name\":\"${skus[$i]}\",\"price_cents\":${prices[$i]},\"initial_stock\":$stock}" >/dev/null
done
customers=()
for name in Ada Grace Edsger Barbara Ken; do
    id=$(call POST "$command_url/v1/customers" \
        "{\"name\":\"$name\",\"email\":\"$(echo "$name" | tr 'A-Z' 'a-z')@example.com\"}" | field customer_id)
    # Ken deposits nothing: his orders are declined.
    if [ "$name" != Ken ]; then
        call POST "$command_url/v1/customers/$id/deposits" '{"amount_cents":5000000}' >/dev/null
    fi
    customers+=("$id")
done

place() { # customer sku quantity country -> order id
    call POST "$command_url/v1/orders" \
        "{\"customer_id\":\"$1\",\"lines\":[{\"sku\":\"$2\",\"quantity\":$3}],
          \"shipping_address\":{\"name\":\"Demo\",\"line1\":\"1 Main St\",\"city\":\"Springfield\",\"postal_code\":\"12345\",\"country\":\"$4\"}}" |
        field order_id
}
saga_status() {
    curl -fsS -H "Authorization: Bearer $admin" "$query_url/v1/sagas/$1" 2>/dev/null | field status 2>/dev/null || echo none
}

say "placing $orders orders, about five a second"
for n in $(seq 1 "$orders"); do
    customer=${customers[$((n % 5))]}
    sku=demo-${skus[$((n % 5))]}-$run
    country=GB
    quantity=1
    case $((n % 10)) in
        3) country=BR ;;   # not served: rejected for shipping
        7) quantity=5 ;;   # more desks than in stock, now and then
    esac
    order=$(place "$customer" "$sku" "$quantity" "$country")
    if [ $((n % 8)) = 0 ]; then
        call POST "$command_url/v1/orders/$order/cancel" '{"reason":"changed my mind"}' >/dev/null 2>&1 || true  # a rejected order cannot be cancelled: 409
    fi
    sleep 0.2
done

say "making one saga fail for real: its compensations meet a frozen command-service"
victim=$(place "${customers[1]}" "demo-mug-$run" 1 GB)
for _ in $(seq 150); do
    [ "$(saga_status "$victim")" = completed ] && break
    sleep 0.2
done
failed_before=$(curl -fsS "$orchestrator_url/metrics" | sed -n 's/^orders_sagas_failed_total //p')
# The orchestrator is paused while the cancellation is recorded and relayed,
# so that it cannot compensate before the command-service is frozen.
compose pause saga-orchestrator >/dev/null
call POST "$command_url/v1/orders/$victim/cancel" '{"reason":"demo: undo while the command-service hangs"}' >/dev/null
# The relay publishes within milliseconds of the commit; a second is ample
# for the cancellation to reach the broker before the freeze.
sleep 1
compose pause command-service >/dev/null
compose unpause saga-orchestrator >/dev/null
unfreeze() { compose unpause command-service >/dev/null 2>&1 || true; }
trap unfreeze EXIT
for _ in $(seq 300); do
    failed_now=$(curl -fsS "$orchestrator_url/metrics" | sed -n 's/^orders_sagas_failed_total //p')
    [ "${failed_now:-0}" != "${failed_before:-0}" ] && break
    sleep 0.5
done
unfreeze
trap - EXIT
for _ in $(seq 100); do
    [ "$(saga_status "$victim")" = failed ] && break
    sleep 0.3
done
say "the saga of order $victim is $(saga_status "$victim")"

cat <<EOF

The console:   $gateway_url/console/
Sign in with this operator token (valid 8 hours):

$operator

Find the failed saga (filter: status failed), see why on its timeline,
then retry it, alone or with the bulk retry.
EOF
