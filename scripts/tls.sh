#!/usr/bin/env bash
# Runs the test brokers behind TLS, for the security tests. The test broker's
# own TLS flags do not work (../shared/kafka/BROKER.md), so a TLS-terminating
# proxy from Debian's packages (stunnel4) sits in front of two Tansu brokers
# that advertise the proxy's ports:
#
#   tls    TLS with a server certificate signed by a test CA
#   mtls   the same, and the client must show a certificate signed by it
#
# Certificates are made here with openssl, into .broker/tls/ (git-ignored):
# ca.pem, server.pem/.key, client.pem, client.key (encrypted; its password is
# in client.key.password) and other-ca.pem, a CA that signed nothing here.
#
#   scripts/tls.sh start   install stunnel4 if needed, make the certificates,
#                          start everything on free loopback ports; prints
#                          the environment the tests read (NANOSTREAM_TEST_TLS_*)
#   scripts/tls.sh env     print that environment again
#   scripts/tls.sh stop    stop the proxy and its brokers
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.broker/tls"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
    local port=$1 pid=$2 log=$3
    for _ in $(seq 1 100); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=0.2).close()" 2>/dev/null; then
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "a process of the TLS setup exited at start; its log ($log):" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "nothing listened on port $port within 10 s; log ($log):" >&2
    cat "$log" >&2
    exit 1
}

certificates() {
    [ -f "$DIR/client.key" ] && [ -f "$DIR/other-ca.pem" ] && return
    mkdir -p "$DIR"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    (
        cd "$DIR"
        openssl req -x509 "${ec[@]}" -days 3650 -subj "/CN=nanostream test CA" -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -x509 "${ec[@]}" -days 3650 -subj "/CN=some other CA" -keyout other-ca.key -out other-ca.pem 2>/dev/null
        # The server: valid for the loopback address the clients dial.
        openssl req "${ec[@]}" -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile server.ext -out server.pem 2>/dev/null
        # The client, with its private key encrypted by a password.
        openssl req "${ec[@]}" -subj "/CN=nanostream test client" -keyout client.plain.key -out client.csr 2>/dev/null
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile client.ext -out client.pem 2>/dev/null
        python3 -c 'import secrets; print("key-" + secrets.token_hex(8))' >client.key.password
        openssl pkcs8 -topk8 -v2 aes-256-cbc -in client.plain.key -passout "file:client.key.password" -out client.key
        rm -f client.plain.key ./*.csr ./*.ext ./*.srl
    )
}

running() {
    [ -f "$DIR/pids" ] && kill -0 "$(head -n1 "$DIR/pids")" 2>/dev/null
}

print_env() {
    cat "$DIR/env"
}

start() {
    scripts/deps.sh
    scripts/broker.sh install >/dev/null
    if running; then
        print_env
        return
    fi
    certificates
    rm -f "$DIR"/broker-*.log "$DIR/stunnel.log"
    local tansu tls_port mtls_port tls_origin mtls_origin
    tansu=$(scripts/broker.sh path)
    tls_port=$(free_port)
    mtls_port=$(free_port)
    tls_origin=$(free_port)
    mtls_origin=$(free_port)
    : >"$DIR/pids"
    for pair in "$tls_origin:$tls_port" "$mtls_origin:$mtls_port"; do
        local origin=${pair%%:*} advertised=${pair##*:}
        "$tansu" broker \
            --listener-url "tcp://127.0.0.1:$origin" \
            --advertised-listener-url "tcp://127.0.0.1:$advertised" \
            --storage-engine memory://tansu/ \
            >"$DIR/broker-$advertised.log" 2>&1 &
        echo $! >>"$DIR/pids"
        wait_port "$origin" $! "$DIR/broker-$advertised.log"
    done
    cat >"$DIR/stunnel.conf" <<EOF
foreground = yes
pid =
output = $DIR/stunnel.log
debug = notice

[tls]
accept = 127.0.0.1:$tls_port
connect = 127.0.0.1:$tls_origin
cert = $DIR/server.pem
key = $DIR/server.key

[mtls]
accept = 127.0.0.1:$mtls_port
connect = 127.0.0.1:$mtls_origin
cert = $DIR/server.pem
key = $DIR/server.key
CAfile = $DIR/ca.pem
verifyChain = yes
requireCert = yes
EOF
    stunnel4 "$DIR/stunnel.conf" >"$DIR/stunnel.out" 2>&1 &
    local proxy=$!
    # The proxy first, so that `running` and `stop` see it.
    { echo "$proxy"; cat "$DIR/pids"; } >"$DIR/pids.new" && mv "$DIR/pids.new" "$DIR/pids"
    wait_port "$tls_port" "$proxy" "$DIR/stunnel.out"
    wait_port "$mtls_port" "$proxy" "$DIR/stunnel.out"
    cat >"$DIR/env" <<EOF
NANOSTREAM_TEST_TLS_BROKERS=127.0.0.1:$tls_port
NANOSTREAM_TEST_MTLS_BROKERS=127.0.0.1:$mtls_port
NANOSTREAM_TEST_TLS_DIR=$DIR
EOF
    print_env
}

stop() {
    if [ -f "$DIR/pids" ]; then
        while read -r pid; do
            kill "$pid" 2>/dev/null || true
        done <"$DIR/pids"
        sleep 0.2
        while read -r pid; do
            kill -9 "$pid" 2>/dev/null || true
        done <"$DIR/pids"
    fi
    rm -f "$DIR/pids" "$DIR/env"
}

case "${1:-}" in
    start) start ;;
    env) running && print_env || { echo "the TLS setup is not running; run scripts/tls.sh start" >&2; exit 1; } ;;
    stop) stop ;;
    *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
