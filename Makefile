# The two commands a newcomer needs, and their opposites.
#   make up     build what is missing, start the platform, wait until ready
#   make token ROLE=<role> [SUBJECT=<customer id>] [TTL=<seconds>]
#               print a token signed with the platform's key (last line)
#   make test   build what is missing, run the whole test suite
#   make demo   seed orders against `make up`, one saga failed by a real fault; prints the console's URL and a token
#   make down   stop and remove the platform's containers
#   make clean  also remove its volumes and the images built here
#   make bench-event-store  the event store benchmarks (BENCHMARKS.md)
#   make bench-orders       POST /v1/orders under load (BENCHMARKS.md)
#   make bench-projector    rebuild throughput and projection lag (BENCHMARKS.md)
#   make bench-sagas        sagas per second end to end (BENCHMARKS.md)
#   make bench-saga-list    GET /v1/sagas with its filters over 100,000 sagas (BENCHMARKS.md)
#   make chaos              crash safety: containers killed under load, then checked (on `make up`'s platform)
#   make soak               10 minutes of steady load on `make up`'s platform (BENCHMARKS.md)

.PHONY: up token demo test down clean images bench-event-store bench-orders bench-projector bench-sagas bench-saga-list soak chaos

up:
	@compose/up.sh

token:
	@compose/token.sh "$(ROLE)" "$(SUBJECT)" "$(TTL)"

demo:
	@compose/demo.sh

test:
	@compose/test.sh

bench-event-store:
	@compose/bench.sh bench-event-store

bench-orders:
	@compose/bench.sh bench-orders

bench-projector:
	@compose/bench.sh bench-projector

bench-sagas:
	@compose/bench.sh bench-sagas

bench-saga-list:
	@compose/bench.sh bench-saga-list

chaos:
	@compose/chaos.sh

soak:
	@compose/soak.sh

images:
	@compose/images.sh all

down:
	@bash -c '. compose/compose.sh && compose down --remove-orphans'

clean:
	@bash -c '. compose/compose.sh && compose down --remove-orphans --volumes'
	@docker ps -aq --filter label=orders-platform.test | xargs -r docker rm -f -v >/dev/null
	@docker images --format '{{.Repository}}:{{.Tag}}' | grep '^orders-platform/' | xargs -r docker rmi >/dev/null || true
	@rm -f compose/.images.env
