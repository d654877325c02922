#!/usr/bin/env bash
# Runs the whole system locally with demo data: services, migrations, the
# command API, the relay, the projectors and the query API. Prints where to
# reach them, the demo sign-ins and an access token for the demo owner.
# Stop everything with scripts/stop.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

source scripts/target-dir.sh
DATA_DIR=${PIVOTAL_DATA_DIR:-$HOME/.local/share/pivotal-flow}
RUN_DIR=$DATA_DIR/run
export PIVOTAL_DATABASE__URL=${PIVOTAL_DATABASE__URL:-postgres://postgres@127.0.0.1:5432/pivotal_flow?sslmode=disable}
export PIVOTAL_LOG__FORMAT=${PIVOTAL_LOG__FORMAT:-json}

bash scripts/services.sh
echo "==> building"
cargo build --locked -p pivotal-cli --bin pivotal
PIVOTAL=$CARGO_TARGET_DIR/debug/pivotal

psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'pivotal_flow'" | grep -q 1 ||
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE pivotal_flow"

bash scripts/stop.sh >/dev/null 2>&1 || true
mkdir -p "$RUN_DIR"
"$PIVOTAL" migrate
for process in command-api relay projector query-api; do
  # The query API verifies tokens with the key set the command API publishes.
  PIVOTAL_AUTH__JWKS_URL=$([ "$process" = query-api ] && echo http://127.0.0.1:8080/.well-known/jwks.json || true) \
    nohup "$PIVOTAL" "$process" >"$RUN_DIR/$process.log" 2>&1 &
  echo $! >"$RUN_DIR/$process.pid"
done

wait_http() {
  for _ in $(seq 1 100); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "$1 did not answer; see $RUN_DIR/*.log" >&2
  return 1
}
wait_http http://127.0.0.1:8080/healthz
wait_http http://127.0.0.1:8081/healthz
"$PIVOTAL" demo
TOKEN=$(curl -fsS http://127.0.0.1:8080/v1/auth/login -H 'Content-Type: application/json' \
  -d '{"email": "owner@demo.pivotal-flow.test", "password": "pivotal demo password"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["accessToken"])')

cat <<MSG

Pivotal Flow is running (logs and pids in $RUN_DIR; stop with scripts/stop.sh).

  REST command API   http://127.0.0.1:8080/v1/customers
  Sign-in            http://127.0.0.1:8080/v1/auth/login
  Token keys (JWKS)  http://127.0.0.1:8080/.well-known/jwks.json
  OpenAPI document   http://127.0.0.1:8080/openapi.json
  API reference      http://127.0.0.1:8080/docs/
  GraphQL / GraphiQL http://127.0.0.1:8081/graphql
  Kafka (analysts)   127.0.0.1:9092, topics pivotal.customer.events,
                     pivotal.quote.events, pivotal.rate_card.events,
                     pivotal.user.events, pivotal.organization.events

Demo organization 0192f3a0-0000-7000-8000-00000000d370. Sign in as any of
  owner@demo.pivotal-flow.test    manager@demo.pivotal-flow.test
  member@demo.pivotal-flow.test   auditor@demo.pivotal-flow.test
with the password "pivotal demo password". The owner's access token (1 hour):

export TOKEN=$TOKEN
MSG
