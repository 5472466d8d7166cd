#!/usr/bin/env bash
# The local stack for development, one component or all:
#
#   infra/stack.sh up [prefect|mariadb|s3|all]   (default: prefect)
#   infra/stack.sh down [prefect|s3|all]         (MariaDB is a system service: left running)
#   infra/stack.sh status
#
#   prefect  Prefect server on 127.0.0.1:$ATM_PREFECT_PORT (4200), process work pool `atm`,
#            the deployments of prefect.yaml, and one worker
#   mariadb  the machine's MariaDB (installed/started if needed) with database and user atm
#   s3       moto's S3-compatible server on 127.0.0.1:$ATM_S3_PORT (9000), bucket `atm`
#            (in memory: its objects are gone when it stops — for development only)
#
# State lives in .infra/ (PID files, logs, the Prefect server's own SQLite database).
# `source .infra/env` then sets PREFECT_API_URL, ATM_DATABASE_URL, ATM_ARTIFACT_ROOT and the
# AWS_* variables for the components that are up; the worker gets the same environment.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/infra/services.sh"
STATE=$ROOT/.infra
PORT=${ATM_PREFECT_PORT:-4200}
S3_PORT=${ATM_S3_PORT:-9000}
BIN=$ROOT/.venv/bin
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
export PREFECT_HOME=$STATE/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$STATE/logs" "$PREFECT_HOME"
touch "$STATE/components"

pid_of() { local f=$STATE/$1.pid; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"; }
server_healthy() { curl -sf "$PREFECT_API_URL/health" >/dev/null 2>&1; }
s3_healthy() { curl -s -o /dev/null "http://127.0.0.1:$S3_PORT" 2>/dev/null; }
has() { grep -qx "$1" "$STATE/components"; }
mark() { has "$1" || echo "$1" >>"$STATE/components"; }
unmark() { grep -vx "$1" "$STATE/components" >"$STATE/components.tmp" || true; mv "$STATE/components.tmp" "$STATE/components"; }

write_env() {
  {
    echo "export PREFECT_API_URL=$PREFECT_API_URL"
    echo "export PREFECT_HOME=$PREFECT_HOME"
    echo "export PREFECT_SERVER_ANALYTICS_ENABLED=false"
    if has mariadb; then
      echo "export ATM_DATABASE_URL=mysql://atm:atm@127.0.0.1:3306/atm"
    else
      echo "export ATM_DATABASE_URL=\${ATM_DATABASE_URL:-sqlite:///$ROOT/atm.db}"
    fi
    if has s3; then
      echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT"
      echo "export AWS_ACCESS_KEY_ID=atm AWS_SECRET_ACCESS_KEY=atm AWS_DEFAULT_REGION=us-east-1"
      echo "export ATM_ARTIFACT_ROOT=s3://atm/artifacts"
    else
      echo "export ATM_ARTIFACT_ROOT=\${ATM_ARTIFACT_ROOT:-$ROOT/artifacts}"
    fi
  } >"$STATE/env"
}

up_mariadb() {
  ensure_mariadb
  mariadb_user atm atm atm
  mark mariadb
  echo "mariadb: database atm on 127.0.0.1:3306 (user atm)"
}

up_s3() {
  if ! s3_healthy; then
    echo "s3: starting moto on 127.0.0.1:$S3_PORT (log: .infra/logs/s3.log)"
    nohup "$BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$STATE/logs/s3.log" 2>&1 &
    echo $! >"$STATE/s3.pid"
    wait_for "moto S3 server" s3_healthy
  fi
  AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ACCESS_KEY_ID=atm AWS_SECRET_ACCESS_KEY=atm \
    AWS_DEFAULT_REGION=us-east-1 "$BIN/python" -c "
import boto3
s3 = boto3.client('s3')
if 'atm' not in [b['Name'] for b in s3.list_buckets()['Buckets']]:
    s3.create_bucket(Bucket='atm')"
  mark s3
  echo "s3: bucket atm at http://127.0.0.1:$S3_PORT"
}

up_prefect() {
  write_env
  # shellcheck disable=SC1091
  source "$STATE/env"   # the worker runs flows with the stack's ModelHub and artifact store
  if server_healthy; then
    echo "prefect server: already up at http://127.0.0.1:$PORT"
  else
    echo "prefect server: starting on 127.0.0.1:$PORT (log: .infra/logs/server.log)"
    nohup "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$STATE/logs/server.log" 2>&1 &
    echo $! >"$STATE/server.pid"
    for _ in $(seq 90); do server_healthy && break; sleep 1; done
    server_healthy || { echo "prefect server did not become healthy; see .infra/logs/server.log"; exit 1; }
    echo "prefect server: healthy"
  fi
  "$BIN/prefect" work-pool inspect atm >/dev/null 2>&1 ||
    "$BIN/prefect" work-pool create atm --type process >/dev/null
  (cd "$ROOT" && "$BIN/prefect" --no-prompt deploy --all >"$STATE/logs/deploy.log" 2>&1) ||
    { echo "prefect deploy failed; see .infra/logs/deploy.log"; exit 1; }
  echo "deployments: atm/datarun, atm/nightly (work pool atm)"
  if pid=$(pid_of worker); then
    echo "prefect worker: already running (pid $pid)"
  else
    echo "prefect worker: starting on pool atm (log: .infra/logs/worker.log)"
    (cd "$ROOT" && nohup "$BIN/prefect" worker start --pool atm --type process \
      >"$STATE/logs/worker.log" 2>&1 & echo $! >"$STATE/worker.pid")
    for _ in $(seq 60); do grep -q "started" "$STATE/logs/worker.log" 2>/dev/null && break; sleep 1; done
    pid_of worker >/dev/null || { echo "prefect worker died; see .infra/logs/worker.log"; exit 1; }
    echo "prefect worker: polling pool atm"
  fi
  mark prefect
  echo "UI: http://127.0.0.1:$PORT   (source .infra/env to use the prefect and atm CLIs)"
}

stop() {  # name, signals...: each signal gets 10 s to work, then SIGKILL
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

down_prefect() { stop worker INT INT TERM; stop server TERM INT; unmark prefect; }
down_s3() { stop s3 TERM; unmark s3; }

status() {
  if server_healthy; then echo "prefect server: healthy at http://127.0.0.1:$PORT"; else echo "prefect server: down"; fi
  if pid=$(pid_of worker); then echo "prefect worker: running (pid $pid)"; else echo "prefect worker: down"; fi
  if s3_healthy; then echo "s3: up at http://127.0.0.1:$S3_PORT"; else echo "s3: down"; fi
  if $SUDO mariadb-admin --protocol=socket ping >/dev/null 2>&1; then echo "mariadb: up"; else echo "mariadb: down"; fi
}

action=${1:-}; component=${2:-prefect}
case "$action:$component" in
  up:prefect) up_prefect;;
  up:mariadb) up_mariadb; write_env;;
  up:s3) up_s3; write_env;;
  up:all) up_mariadb; up_s3; up_prefect;;
  down:prefect) down_prefect;;
  down:s3) down_s3; write_env;;
  down:all) down_prefect; down_s3; write_env;;
  status:*) status;;
  *) echo "usage: infra/stack.sh up|down [prefect|mariadb|s3|all] | status"; exit 2;;
esac
