# Sourced by the scripts that run testcontainers (test.sh, bench.sh).
#
# testcontainers 0.28 talks to Docker through bollard 0.21, which always asks
# for API 1.53 and does not negotiate down. Older engines (Debian's Docker
# 20.10 speaks 1.41) get a shim that lowers the version in each request path;
# DOCKER_HOST then points at it. The Docker API is root on the host, so the
# shim listens on a Unix socket of mode 0600 in a directory of mode 0700, both
# this user's, never on TCP. The shim stops (and the directory goes) when the
# sourcing script calls stop_docker_api_shim.
_required_api=1.53
_engine_api=$(docker version --format '{{.Server.APIVersion}}')
if [ "$(printf '%s\n%s\n' "$_engine_api" "$_required_api" | sort -V | head -n1)" != "$_required_api" ]; then
    echo "Docker engine API $_engine_api is older than $_required_api: starting docker-api-shim" >&2
    cargo build --locked --quiet -p tests --bin docker-api-shim
    _socket=/var/run/docker.sock
    case "${DOCKER_HOST:-}" in unix://*) _socket=${DOCKER_HOST#unix://} ;; esac
    # mktemp -d makes the directory with mode 0700.
    docker_api_shim_dir=$(mktemp -d "${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}/docker-api-shim.XXXXXX")
    "${CARGO_TARGET_DIR:-target}/debug/docker-api-shim" "$_socket" "$docker_api_shim_dir/docker.sock" >/dev/null &
    docker_api_shim_pid=$!
    for _ in $(seq 100); do
        [ -S "$docker_api_shim_dir/docker.sock" ] && break
        sleep 0.1
    done
    if [ ! -S "$docker_api_shim_dir/docker.sock" ]; then
        echo "docker-api-shim did not start" >&2
        exit 1
    fi
    export DOCKER_HOST=unix://$docker_api_shim_dir/docker.sock
fi

stop_docker_api_shim() {
    if [ -n "${docker_api_shim_pid:-}" ]; then
        kill "$docker_api_shim_pid" 2>/dev/null || true
    fi
    if [ -n "${docker_api_shim_dir:-}" ]; then
        rm -rf "$docker_api_shim_dir"
    fi
}
