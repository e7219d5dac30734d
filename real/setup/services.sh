# shellcheck shell=bash
# Make sure Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672) answer, for real mode
# and its tests: install them from Debian if missing, start them if stopped, and wait
# (bounded) until they accept connections; install curl too (a client the object store
# tests drive). Idempotent and quiet when both already run.
# Returns non-zero, naming the service, when one cannot be brought up.

novalab_port_open() {
    python3 - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

novalab_wait_port() {  # name port seconds
    local i
    for ((i = 0; i < $3 * 2; i++)); do
        novalab_port_open "$2" && return 0
        sleep 0.5
    done
    echo "services setup: $1 did not start listening on 127.0.0.1:$2 within $3 s" >&2
    return 1
}

novalab_setup_services() (
    set -eu
    apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -qq)
    missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
    command -v curl >/dev/null || missing+=(curl)  # the object store tests fetch pre-signed URLs with it
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "services setup: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get "${apt_opts[@]}" update >/dev/null
        apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! novalab_port_open 6379; then
        echo "services setup: starting redis-server" >&2
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
        novalab_wait_port Redis 6379 30
    fi
    if ! novalab_port_open 5672; then
        echo "services setup: starting rabbitmq-server" >&2
        rabbitmq-server -detached >/dev/null 2>&1 || true
        novalab_wait_port RabbitMQ 5672 90
    fi
)

novalab_setup_services
