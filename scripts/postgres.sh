#!/usr/bin/env bash
# Manages the PostgreSQL server the database tests and examples use:
# Debian's PostgreSQL, initialised into .postgres/ (git-ignored), listening
# on a free loopback port, with trust authentication for the local user
# `nanostream` (a test server: nothing else can reach it).
#
#   scripts/postgres.sh start    install if needed, start; prints the DSN
#   scripts/postgres.sh dsn      print the DSN of the running server
#   scripts/postgres.sh down     stop the server, keeping its port and data
#   scripts/postgres.sh up       start it again on the same port (with
#                                `down`: the tests' "database goes away")
#   scripts/postgres.sh stop     stop it
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.postgres"
DATA="$DIR/data"

bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [ -n "$dir" ] || { echo "PostgreSQL is not installed (scripts/deps.sh installs it)" >&2; exit 1; }
    echo "$dir"
}

# PostgreSQL refuses to run as root: as root, run it as the `postgres` user
# the Debian package creates.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

running() {
    [ -f "$DATA/postmaster.pid" ] && as_owner "$(bindir)/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

dsn() {
    echo "host=127.0.0.1 port=$(cat "$DIR/port") user=nanostream dbname=nanostream"
}

init() {
    [ -f "$DATA/PG_VERSION" ] && return
    mkdir -p "$DIR"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$DIR"
    fi
    as_owner "$(bindir)/initdb" -D "$DATA" --auth=trust --username=nanostream --encoding=UTF8 \
        --no-instructions >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
}

start_on() {
    local port=$1
    echo "$port" >"$DIR/port"
    as_owner "$(bindir)/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 30 \
        -o "-p $port -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
        start >/dev/null || { echo "PostgreSQL did not start; its log:" >&2; tail -n 30 "$DIR/server.log" >&2; exit 1; }
}

start() {
    scripts/deps.sh
    init
    if running; then
        dsn
        return
    fi
    start_on "$(free_port)"
    # The database the DSN names.
    "$(bindir)/psql" -h 127.0.0.1 -p "$(cat "$DIR/port")" -U nanostream -d postgres -qtA \
        -c "SELECT 1 FROM pg_database WHERE datname = 'nanostream'" | grep -q 1 ||
        "$(bindir)/createdb" -h 127.0.0.1 -p "$(cat "$DIR/port")" -U nanostream nanostream
    dsn
}

stop() {
    if running; then
        as_owner "$(bindir)/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    fi
}

case "${1:-}" in
    start) start ;;
    dsn) running && dsn || { echo "PostgreSQL is not running; run scripts/postgres.sh start" >&2; exit 1; } ;;
    down) stop ;;
    up) running || start_on "$(cat "$DIR/port")" ;;
    stop) stop ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
