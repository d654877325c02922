#!/usr/bin/env bash
# Installs (when missing) and starts the services Pivotal Flow needs on a
# Debian machine: PostgreSQL, Redis and a Kafka-protocol broker (tansu, with
# its durable SQLite storage). Safe to run any number of times.
set -euo pipefail

DATA_DIR=${PIVOTAL_DATA_DIR:-$HOME/.local/share/pivotal-flow}
TOOLS_DIR=${PIVOTAL_TOOLS_DIR:-$HOME/.cache/pivotal-flow}
TANSU_VERSION=0.6.0
TANSU=$TOOLS_DIR/tansu-$TANSU_VERSION/bin/tansu
KAFKA_PORT=${PIVOTAL_KAFKA_PORT:-9092}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '==> %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do
    port_open "$port" && return 0
    sleep 0.2
  done
  log "$name did not open port $port"; return 1
}

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Starts a long-running service detached from this script: its own session,
# no inherited descriptors (a caller waiting for our output must not wait
# for the service too), output to a log file.
detach() {
  local log=$1; shift
  (
    for fd in /proc/self/fd/*; do
      n=${fd##*/}
      if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-" 2>/dev/null || true; fi
    done
    exec setsid "$@" </dev/null >>"$log" 2>&1
  ) &
}

# --- packages --------------------------------------------------------------
packages=()
command -v pg_ctlcluster >/dev/null 2>&1 || packages+=(postgresql postgresql-contrib)
command -v psql >/dev/null 2>&1 || packages+=(postgresql-client)
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || packages+=(redis-tools)
command -v cc >/dev/null 2>&1 || packages+=(build-essential)
command -v make >/dev/null 2>&1 || packages+=(make)
command -v pkg-config >/dev/null 2>&1 || packages+=(pkg-config)
command -v curl >/dev/null 2>&1 || packages+=(curl)
command -v perl >/dev/null 2>&1 || packages+=(perl)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
# The deployment validator runs in a virtual environment.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv)
[ -e /usr/include/zlib.h ] || packages+=(zlib1g-dev)
# pdftotext: the quote PDF tests read the text back out of the rendered PDFs.
command -v pdftotext >/dev/null 2>&1 || packages+=(poppler-utils)
if [ ${#packages[@]} -gt 0 ]; then
  log "installing ${packages[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  log "cargo is required (a Rust toolchain); install it with rustup"; exit 1
fi

# --- PostgreSQL -------------------------------------------------------------
if ! port_open 5432; then
  cluster=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$cluster/main/pg_hba.conf
  # Local development and CI connect over TCP without a password.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    log "allowing trusted local TCP connections to PostgreSQL"
    sudo_if_needed sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $cluster"
  sudo_if_needed pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
  wait_port 5432 PostgreSQL
fi

# --- Redis -----------------------------------------------------------------
if ! port_open 6379; then
  log "starting Redis"
  mkdir -p "$DATA_DIR/redis"
  detach "$DATA_DIR/redis/redis.log" redis-server --bind 127.0.0.1 --port 6379 --save "" \
    --appendonly no --dir "$DATA_DIR/redis"
  wait_port 6379 Redis
fi

# --- Kafka-protocol broker --------------------------------------------------
if [ ! -x "$TANSU" ]; then
  log "building tansu $TANSU_VERSION with SQLite storage (about 10 minutes, once)"
  CARGO_TARGET_DIR=$TOOLS_DIR/tansu-build cargo install tansu --version "$TANSU_VERSION" --locked \
    --features libsql --root "$TOOLS_DIR/tansu-$TANSU_VERSION" >&2
  rm -rf "$TOOLS_DIR/tansu-build"
fi
if ! port_open "$KAFKA_PORT"; then
  log "starting tansu on 127.0.0.1:$KAFKA_PORT"
  mkdir -p "$DATA_DIR/tansu"
  cd "$DATA_DIR/tansu"
  detach "$DATA_DIR/tansu/broker.log" "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine "sqlite://tansu.db"
  cd - >/dev/null
  wait_port "$KAFKA_PORT" tansu
fi
# tansu's storage lacks an index its fetch needs (see the script); a broker
# started before this script learned that gets it too.
python3 "$SCRIPT_DIR/tansu-index.py" "$DATA_DIR/tansu/tansu.db"
# --- A fresh broker for a test or benchmark run (--fresh-test-broker) -------
# Tests create topics of their own on every run; a broker of their own,
# emptied each time, keeps them from filling the development broker's
# storage (tansu slows down as its SQLite file grows).
if [ "${1:-}" = "--fresh-test-broker" ]; then
  TEST_KAFKA_PORT=${PIVOTAL_TEST_KAFKA_PORT:-19092}
  pkill -f "listener-url tcp://127.0.0.1:$TEST_KAFKA_PORT" 2>/dev/null || true
  for _ in $(seq 1 50); do port_open "$TEST_KAFKA_PORT" || break; sleep 0.1; done
  rm -rf "$DATA_DIR/tansu-test-$TEST_KAFKA_PORT"
  mkdir -p "$DATA_DIR/tansu-test-$TEST_KAFKA_PORT"
  log "starting a fresh broker on 127.0.0.1:$TEST_KAFKA_PORT"
  cd "$DATA_DIR/tansu-test-$TEST_KAFKA_PORT"
  detach "$DATA_DIR/tansu-test-$TEST_KAFKA_PORT/broker.log" "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$TEST_KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$TEST_KAFKA_PORT" \
    --storage-engine "sqlite://tansu.db"
  cd - >/dev/null
  wait_port "$TEST_KAFKA_PORT" "test broker"
  python3 "$SCRIPT_DIR/tansu-index.py" "$DATA_DIR/tansu-test-$TEST_KAFKA_PORT/tansu.db"
fi

# --- Python tools: the deployment validator (tests validate compose and k8s
# offline) and Schemathesis (the command API's contract test) --------------
VENV=$TOOLS_DIR/venv
VALIDATOR_PACKAGES="kubernetes-validate==1.37.0 check-jsonschema==0.39.0 jsonpatch==1.48 PyYAML==6.0.4 schemathesis==4.32.5"
if [ "$(cat "$VENV/.packages" 2>/dev/null)" != "$VALIDATOR_PACKAGES" ]; then
  log "installing the Python tools ($VALIDATOR_PACKAGES)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $VALIDATOR_PACKAGES >&2
  echo "$VALIDATOR_PACKAGES" > "$VENV/.packages"
fi

# --- promtool and Prometheus (tests check the monitoring files) -------------
# Debian's prometheus package, unpacked into the tools directory rather
# than installed, so no Prometheus server is set up as a service: promtool
# checks the rules and configurations, and a system test runs the server
# against the processes it starts.
PROMTOOL=$TOOLS_DIR/prometheus/usr/bin/promtool
if [ ! -x "$PROMTOOL" ] || [ ! -x "$TOOLS_DIR/prometheus/usr/bin/prometheus" ]; then
  log "fetching promtool (Debian's prometheus package, unpacked into $TOOLS_DIR/prometheus)"
  scratch=$(mktemp -d)
  if ! (cd "$scratch" && apt-get download prometheus) >&2 2>/dev/null; then
    sudo_if_needed apt-get update -qq
    (cd "$scratch" && apt-get download prometheus) >&2
  fi
  rm -rf "$TOOLS_DIR/prometheus"
  dpkg-deb -x "$scratch"/prometheus_*.deb "$TOOLS_DIR/prometheus"
  rm -rf "$scratch"
fi

log "services ready: PostgreSQL 127.0.0.1:5432, Redis 127.0.0.1:6379, Kafka 127.0.0.1:$KAFKA_PORT"
