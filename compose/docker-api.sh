# Sourced by the scripts that run testcontainers (test.sh, bench.sh).
#
# testcontainers 0.28 talks to Docker through bollard 0.21, which always asks
# for API 1.53 and does not negotiate down. Older engines (Debian's Docker
# 20.10 speaks 1.41) get a loopback shim that lowers the version in each
# request path; DOCKER_HOST then points at it. The shim stops when the
# sourcing script exits.
_required_api=1.53
_engine_api=$(docker version --format '{{.Server.APIVersion}}')
if [ "$(printf '%s\n%s\n' "$_engine_api" "$_required_api" | sort -V | head -n1)" != "$_required_api" ]; then
    echo "Docker engine API $_engine_api is older than $_required_api: starting docker-api-shim" >&2
    cargo build --locked --quiet -p tests --bin docker-api-shim
    _socket=/var/run/docker.sock
    case "${DOCKER_HOST:-}" in unix://*) _socket=${DOCKER_HOST#unix://} ;; esac
    _port_file=$(mktemp)
    rm -f "$_port_file"
    target/debug/docker-api-shim "$_socket" "$_port_file" >/dev/null &
    docker_api_shim_pid=$!
    for _ in $(seq 100); do
        [ -s "$_port_file" ] && break
        sleep 0.1
    done
    if [ ! -s "$_port_file" ]; then
        echo "docker-api-shim did not start" >&2
        exit 1
    fi
    export DOCKER_HOST=tcp://127.0.0.1:$(cat "$_port_file")
    rm -f "$_port_file"
fi

stop_docker_api_shim() {
    if [ -n "${docker_api_shim_pid:-}" ]; then
        kill "$docker_api_shim_pid" 2>/dev/null || true
    fi
}
