#!/usr/bin/env bash
# Runs every check and test against real PostgreSQL, Redis and a Kafka-protocol
# broker, installing and starting them first when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/target-dir.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

bash scripts/services.sh --fresh-test-broker
# Tests use the broker started empty for this run.
export PIVOTAL_TEST_KAFKA=127.0.0.1:${PIVOTAL_TEST_KAFKA_PORT:-19092}

# Each test works in a database of its own (pf_test_*). A passing run drops
# them at its end; a failing one leaves them for inspection until the next run.
drop_test_databases() {
  psql -h 127.0.0.1 -U postgres -d postgres -Atqc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'pf_test_%'" |
    while read -r db; do psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
}
# Their keys in Redis too (each test's prefix is `t` and 12 hex digits).
drop_test_keys() {
  local hex='[0-9a-f]'
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "t$hex$hex$hex$hex$hex$hex$hex$hex$hex$hex$hex$hex:*" |
    xargs -r -n 1000 redis-cli -h 127.0.0.1 -p 6379 unlink >/dev/null
}
# And their embedded search indexes (`pivotal-search-` and the same 32 hex
# digits as the database, in the temporary directory).
drop_test_search_dirs() {
  find "${TMPDIR:-/tmp}" -maxdepth 1 -type d -regextype posix-extended \
    -regex '.*/pivotal-search-[0-9a-f]{32}' -exec rm -rf {} +
}
drop_test_databases
drop_test_keys
drop_test_search_dirs

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${PIVOTAL_TEST_THREADS:-4}" --skip faults::
# The fault scenarios last, alone and one at a time: each keeps its own
# broker, a relay, a projector and writers busy, and its time limits are set
# for the two cores to itself. `--workspace` resolves features as the run
# above did, so the test binary it built is reused, not rebuilt.
echo "==> fault scenarios"
cargo test --workspace --test system --locked -- --test-threads=1 faults::

echo "==> dropping the test databases, their keys and their search indexes"
drop_test_databases
drop_test_keys
drop_test_search_dirs
