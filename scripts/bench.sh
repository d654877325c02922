#!/usr/bin/env bash
# The benchmark: starts every process against the local services, drives
# load over HTTP, measures the PostgreSQL and Kafka baselines on the same
# services, and prints a table (plus target/bench/report.json).
# Arguments go to `pivotal bench` (e.g. --seconds 30).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/target-dir.sh
# A broker emptied for this run (tansu slows down as its storage grows).
PIVOTAL_TEST_KAFKA_PORT=19093 bash scripts/services.sh --fresh-test-broker
export PIVOTAL_KAFKA__BROKERS=127.0.0.1:19093
cargo build --release -p pivotal-cli --bin pivotal
# The benchmark opens over a thousand sockets at once.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec "$CARGO_TARGET_DIR/release/pivotal" bench "$@"
