#!/usr/bin/env bash
# Stops the processes started by scripts/run.sh (the services keep running).
set -uo pipefail
RUN_DIR=${PIVOTAL_DATA_DIR:-$HOME/.local/share/pivotal-flow}/run
for pidfile in "$RUN_DIR"/*.pid; do
  [ -e "$pidfile" ] || continue
  kill "$(cat "$pidfile")" 2>/dev/null && echo "stopped $(basename "$pidfile" .pid)"
  rm -f "$pidfile"
done
