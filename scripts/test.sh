#!/usr/bin/env bash
# Runs the whole test suite: unit, integration, UI (trybuild), doc tests, and
# the Kafka tests against a real broker (Tansu), which this script installs,
# starts on a free loopback port and stops afterwards; the security tests
# against two more brokers behind a TLS-terminating proxy (scripts/tls.sh);
# the database tests against PostgreSQL (scripts/postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# System packages: librdkafka's TLS (libssl-dev) and the TLS proxy (stunnel4).
scripts/deps.sh
address=$(scripts/broker.sh start)
trap 'scripts/postgres.sh stop; scripts/tls.sh stop; scripts/broker.sh stop' EXIT
export NANOSTREAM_TEST_BROKERS="$address"
echo "test broker: $address"
# The security tests' brokers behind a TLS-terminating proxy.
tls_env=$(scripts/tls.sh start)
while read -r setting; do
    export "${setting?}"
done <<<"$tls_env"
echo "TLS test brokers: $NANOSTREAM_TEST_TLS_BROKERS (mutual TLS: $NANOSTREAM_TEST_MTLS_BROKERS)"
# The database tests' PostgreSQL server.
NANOSTREAM_TEST_POSTGRES=$(scripts/postgres.sh start)
export NANOSTREAM_TEST_POSTGRES
echo "test PostgreSQL: $NANOSTREAM_TEST_POSTGRES"
# The durability and database tests run examples as real processes.
cargo build -p nanostream-examples --example kafka_etl --example kafka_to_postgres --example kafka_to_sqlite
cargo test --workspace "$@"
