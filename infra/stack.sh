#!/usr/bin/env bash
# The local Prefect stack: server on 127.0.0.1, work pool `atm`, deployments, one worker.
#
#   infra/stack.sh up        start what is not running; deploy prefect.yaml
#   infra/stack.sh down      stop the worker (two SIGINTs) and the server
#   infra/stack.sh status    what runs, with health checks
#
# State lives in .infra/ (PID files, logs, the server's own SQLite database). Afterwards,
# `source .infra/env` points the prefect CLI at this server. Settings (environment):
#   ATM_PREFECT_PORT (4200), ATM_DATABASE_URL / ATM_ARTIFACT_ROOT for the flow runs
#   (default: atm.db and artifacts/ in this repository).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=$ROOT/.infra
PORT=${ATM_PREFECT_PORT:-4200}
BIN=$ROOT/.venv/bin
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
export PREFECT_HOME=$STATE/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export ATM_DATABASE_URL=${ATM_DATABASE_URL:-sqlite:///$ROOT/atm.db}
export ATM_ARTIFACT_ROOT=${ATM_ARTIFACT_ROOT:-$ROOT/artifacts}
mkdir -p "$STATE/logs" "$PREFECT_HOME"

pid_of() { local f=$STATE/$1.pid; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }
server_healthy() { curl -sf "$PREFECT_API_URL/health" >/dev/null 2>&1; }

start_server() {
  if server_healthy; then echo "prefect server: already up at http://127.0.0.1:$PORT"; return; fi
  echo "prefect server: starting on 127.0.0.1:$PORT (log: .infra/logs/server.log)"
  nohup "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$STATE/logs/server.log" 2>&1 &
  echo $! >"$STATE/server.pid"
  for _ in $(seq 90); do server_healthy && break; sleep 1; done
  server_healthy || { echo "prefect server did not become healthy; see .infra/logs/server.log"; exit 1; }
  echo "prefect server: healthy"
}

deploy() {
  "$BIN/prefect" work-pool inspect atm >/dev/null 2>&1 ||
    "$BIN/prefect" work-pool create atm --type process >/dev/null
  (cd "$ROOT" && "$BIN/prefect" --no-prompt deploy --all >"$STATE/logs/deploy.log" 2>&1) ||
    { echo "prefect deploy failed; see .infra/logs/deploy.log"; exit 1; }
  echo "deployments: atm/datarun, atm/nightly (work pool atm)"
}

start_worker() {
  if pid=$(pid_of worker); then echo "prefect worker: already running (pid $pid)"; return; fi
  echo "prefect worker: starting on pool atm (log: .infra/logs/worker.log)"
  (cd "$ROOT" && nohup "$BIN/prefect" worker start --pool atm --type process \
    >"$STATE/logs/worker.log" 2>&1 & echo $! >"$STATE/worker.pid")
  for _ in $(seq 60); do grep -q "started" "$STATE/logs/worker.log" 2>/dev/null && break; sleep 1; done
  pid_of worker >/dev/null || { echo "prefect worker died; see .infra/logs/worker.log"; exit 1; }
  echo "prefect worker: polling pool atm"
}

stop() {  # name, signal...
  local name=$1 pid; shift
  pid=$(pid_of "$name") || { rm -f "$STATE/$name.pid"; return 0; }
  for signal in "$@"; do
    kill -"$signal" "$pid" 2>/dev/null || break
    for _ in $(seq 10); do kill -0 "$pid" 2>/dev/null || break 2; sleep 1; done
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$STATE/$name.pid"
  echo "$name: stopped"
}

write_env() {
  cat >"$STATE/env" <<ENV
export PREFECT_API_URL=$PREFECT_API_URL
export PREFECT_HOME=$PREFECT_HOME
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export ATM_DATABASE_URL=$ATM_DATABASE_URL
export ATM_ARTIFACT_ROOT=$ATM_ARTIFACT_ROOT
ENV
}

case "${1:-}" in
  up)
    start_server; deploy; start_worker; write_env
    echo "UI: http://127.0.0.1:$PORT   (source .infra/env to use the prefect CLI)";;
  down)
    stop worker INT INT TERM   # a Prefect worker exits on the second SIGINT
    stop server TERM INT;;
  status)
    if server_healthy; then echo "prefect server: healthy at http://127.0.0.1:$PORT"; else echo "prefect server: down"; fi
    if pid=$(pid_of worker); then echo "prefect worker: running (pid $pid)"; else echo "prefect worker: down"; fi;;
  *) echo "usage: infra/stack.sh up|down|status"; exit 2;;
esac
