#!/usr/bin/env bash
# Runs the whole test suite: unit, integration, UI (trybuild), doc tests, and
# the Kafka tests against a real broker (Tansu), which this script installs,
# starts on a free loopback port and stops afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
address=$(scripts/broker.sh start)
trap 'scripts/broker.sh stop' EXIT
export NANOSTREAM_TEST_BROKERS="$address"
echo "test broker: $address"
# The durability tests run the kafka_etl example as a real process.
cargo build -p nanostream-examples --example kafka_etl
cargo test --workspace "$@"
