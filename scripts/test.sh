#!/usr/bin/env bash
# Runs the whole test suite: unit, integration, UI (trybuild) and doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace "$@"
