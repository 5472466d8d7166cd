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
# State lives in $ATM_INFRA_STATE (default .infra/): PID files, logs, the Prefect server's own
# SQLite database. `source .infra/env` then sets PREFECT_API_URL, ATM_DATABASE_URL,
# ATM_ARTIFACT_ROOT and the AWS_* variables for the components that are up; the worker gets the
# same environment.
#
# Each long-running process (server, worker, moto) is started detached — its own session and
# process group, stdin from /dev/null, output to its log, no other inherited descriptor — so
# `up | tee log` returns. Its PID file holds its PID and start time; `down` signals only a
# process that still matches both, then its process group, then SIGKILLs what is left of it
# (the server's uvicorn, the worker's flow runs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/infra/services.sh"
STATE=${ATM_INFRA_STATE:-$ROOT/.infra}
mkdir -p "$STATE/logs"
STATE=$(cd "$STATE" && pwd)
PORT=${ATM_PREFECT_PORT:-4200}
S3_PORT=${ATM_S3_PORT:-9000}
GRACE=${ATM_INFRA_STOP_SECONDS:-10}  # how long `down` waits after each signal
BIN=$ROOT/.venv/bin
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
export PREFECT_HOME=$STATE/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$PREFECT_HOME"
touch "$STATE/components"
cd "$ROOT"  # `prefect deploy` and the worker run from the checkout (prefect.yaml)

server_healthy() { curl -sf "$PREFECT_API_URL/health" >/dev/null 2>&1; }
s3_healthy() { curl -s -o /dev/null "http://127.0.0.1:$S3_PORT" 2>/dev/null; }
has() { grep -qx "$1" "$STATE/components"; }
mark() { has "$1" || echo "$1" >>"$STATE/components"; }
unmark() { grep -vx "$1" "$STATE/components" >"$STATE/components.tmp" || true; mv "$STATE/components.tmp" "$STATE/components"; }

# --- processes -------------------------------------------------------------------------------
# A process is its PID and its start time (field 22 of /proc/PID/stat, clock ticks since boot):
# once the kernel hands the PID to another process, the pair no longer matches.

signature() {  # name: what the command line of the process started as NAME contains
  case $1 in
    server) echo "$BIN/prefect server start";;
    worker) echo "$BIN/prefect worker start";;
    s3) echo "$BIN/moto_server";;
  esac
}

stat_of() {  # pid: fields 3... of /proc/PID/stat (state ppid pgrp session ...), if it is alive
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  case $stat in Z*|X*) return 1;; esac  # a zombie has finished
  echo "$stat"
}

started_at() {  # pid: its start time, if it is alive
  local fields
  fields=$(stat_of "$1") || return 1
  # shellcheck disable=SC2086
  set -- $fields
  echo "${20}"
}

cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null; }

is_ours() {  # name pid start: PID is still the process this script started as NAME
  local now
  now=$(started_at "$2") || return 1
  [ -z "$3" ] || [ "$3" = "$now" ] || return 1
  case "$(cmdline "$2")" in *"$(signature "$1")"*) return 0;; esac
  return 1
}

recorded() {  # name: "PID START" from its PID file
  local pid='' start=''
  [ -f "$STATE/$1.pid" ] || return 1
  read -r pid start <"$STATE/$1.pid" || true
  [ -n "$pid" ] || return 1
  echo "$pid ${start:-}"
}

pid_of() {  # name: the PID of the process started as NAME, if it still runs
  local pid start
  read -r pid start < <(recorded "$1") || return 1
  is_ours "$1" "$pid" "$start" && echo "$pid"
}

members() {  # leader: "pid:start:pgrp" of every live process in the session LEADER started, and
  # of their descendants (a worker starts each flow run in a session of its own); only commands
  # of this checkout's .venv, so a reused session id never reaches anything else
  local leader=$1 pid fields
  ps -e -o pid=,ppid=,sid= | awk -v leader="$leader" '
    { parent[$1] = $2; session[$1] = $3 }
    END {
      for (p in session) if (p == leader || session[p] == leader) keep[p] = 1
      do {
        more = 0
        for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; more = 1 }
      } while (more)
      for (p in keep) print p
    }' | while read -r pid; do
    fields=$(stat_of "$pid") || continue
    case "$(cmdline "$pid")" in *"/.venv/bin/"*) ;; *) continue;; esac
    # shellcheck disable=SC2086
    set -- $fields
    echo "$pid:${20}:$3"
  done
}

alive() {  # pid:start:pgrp...: those still running
  local entry pid start pgrp fields
  for entry in "$@"; do
    IFS=: read -r pid start pgrp <<<"$entry"
    fields=$(stat_of "$pid") || continue
    # shellcheck disable=SC2086
    set -- $fields
    [ "${20}" = "$start" ] && echo "$entry"
  done
}

in_group() {  # pgrp, pid:start:pgrp...: the entries of that process group
  local group=$1 entry; shift
  for entry in "$@"; do [ "${entry##*:}" = "$group" ] && echo "$entry"; done
  return 0
}

wait_gone() {  # seconds, pid:start:pgrp...: true once none of them runs
  local seconds=$1; shift
  for _ in $(seq $((seconds * 5))); do
    [ -z "$(alive "$@")" ] && return 0
    sleep 0.2
  done
  [ -z "$(alive "$@")" ]
}

launch() {  # name, log, command...: the command detached, its own PID in $STATE/NAME.pid
  local name=$1 log=$2 pid; shift 2
  (
    trap - INT QUIT  # a background job starts with SIGINT ignored; the component needs it
    for fd in /proc/"$BASHPID"/fd/*; do  # nothing inherited beyond stdin/stdout/stderr
      fd=${fd##*/}
      if [ "$fd" -gt 2 ] && [ -e "/proc/$BASHPID/fd/$fd" ]; then eval "exec $fd>&-"; fi
    done
    exec setsid "$@"  # not a group leader, so setsid does not fork: the PID stays the same
  ) </dev/null >"$log" 2>&1 &
  pid=$!
  echo "$pid $(started_at "$pid" || true)" >"$STATE/$name.pid"
  echo "$pid"
}

stop() {  # name, signals...: each signal to the process group, $GRACE s each; then SIGKILL to what
  # is left of it (its group and descendants). Prints what happened; fails if something survives.
  local name=$1 pid start entries group target left entry child how=''; shift
  if ! read -r pid start < <(recorded "$name"); then
    rm -f "$STATE/$name.pid"
    echo "$name: not running (not started by stack.sh)"
    return 0
  fi
  if [ -n "$(stat_of "$pid")" ] && ! is_ours "$name" "$pid" "$start"; then
    # an older stack.sh recorded the shell around the worker: the worker is its child
    for child in $(ps -o pid= --ppid "$pid"); do
      if [ -z "$start" ] && is_ours "$name" "$child" ""; then
        echo "$name: pid $pid is the shell around it (from an older stack.sh): stopping pid $child"
        echo "$child" >"$STATE/$name.pid"
        stop "$name" "$@"
        return
      fi
    done
    rm -f "$STATE/$name.pid"
    echo "$name: not running (stale PID file removed: pid $pid is another process now)"
    return 0
  fi
  mapfile -t entries < <(members "$pid")
  if [ ${#entries[@]} -eq 0 ]; then
    rm -f "$STATE/$name.pid"
    echo "$name: not running (stale PID file removed)"
    return 0
  fi
  # the signals go to its process group (from an older stack.sh: the process alone)
  mapfile -t group < <(in_group "$pid" "${entries[@]}")
  target=-$pid
  [ ${#group[@]} -gt 0 ] || { target=$pid; mapfile -t group < <(printf '%s\n' "${entries[@]}" | grep "^$pid:"); }
  for signal in "$@"; do
    kill -"$signal" -- "$target" 2>/dev/null || true
    if wait_gone "$GRACE" "${group[@]}"; then how=SIG$signal; break; fi
  done
  # shellcheck disable=SC2046
  mapfile -t left < <({ alive "${entries[@]}"; alive $(members "$pid"); } | sort -u)
  if [ ${#left[@]} -gt 0 ] || [ -z "$how" ]; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    for entry in "${left[@]}"; do kill -KILL "${entry%%:*}" 2>/dev/null || true; done
    if ! wait_gone 5 "${left[@]}"; then
      echo "$name: NOT stopped: still running: $(alive "${left[@]}" | cut -d: -f1 | tr '\n' ' ')"
      return 1
    fi
  fi
  rm -f "$STATE/$name.pid"
  if [ -z "$(printf '%s\n' "${entries[@]}" | grep "^$pid:")" ]; then
    echo "$name: pid $pid had exited; ${#left[@]} leftover process(es) of it killed"
  elif [ -z "$how" ]; then
    local signals="SIG$*"
    echo "$name: killed (pid $pid outlived ${signals// /, SIG}; SIGKILL to ${#left[@]} process(es))"
  elif [ ${#left[@]} -gt 0 ]; then
    echo "$name: stopped (pid $pid on $how; ${#left[@]} leftover process(es) killed)"
  else
    echo "$name: stopped (pid $pid on $how)"
  fi
}

# --- components ------------------------------------------------------------------------------

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

start() {  # name, description, healthy-command, seconds, command...: started unless it runs
  local name=$1 what=$2 healthy=$3 seconds=$4 pid started log=$STATE/logs/$1.log; shift 4
  if pid=$(pid_of "$name"); then
    $healthy && { echo "$what: already up (pid $pid)"; return 0; }
    echo "$what: pid $pid runs but does not answer on this port; see $log or run down first"
    exit 1
  fi
  if $healthy; then
    echo "$what: already up (not started by stack.sh, so down leaves it running)"
    return 0
  fi
  stop "$name" KILL >/dev/null  # leftovers of an earlier start that died
  echo "$what: starting (log: $log)"
  pid=$(launch "$name" "$log" "$@")
  read -r _ started <"$STATE/$name.pid"
  for _ in $(seq $((seconds * 2))); do
    $healthy && { echo "$what: up (pid $pid)"; return 0; }
    [ "$(started_at "$pid")" = "$started" ] || break  # it exited
    sleep 0.5
  done
  echo "$what did not come up; see $log:"
  tail -5 "$log" | sed 's/^/  /'
  stop "$name" TERM
  exit 1
}

up_mariadb() {
  ensure_mariadb
  mariadb_user atm atm atm
  mark mariadb
  echo "mariadb: database atm on 127.0.0.1:3306 (user atm)"
}

up_s3() {
  start s3 "s3 (moto on 127.0.0.1:$S3_PORT)" s3_healthy 60 \
    "$BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT"
  AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ACCESS_KEY_ID=atm AWS_SECRET_ACCESS_KEY=atm \
    AWS_DEFAULT_REGION=us-east-1 "$BIN/python" -c "
import boto3
s3 = boto3.client('s3')
if 'atm' not in [b['Name'] for b in s3.list_buckets()['Buckets']]:
    s3.create_bucket(Bucket='atm')"
  mark s3
  echo "s3: bucket atm at http://127.0.0.1:$S3_PORT"
}

worker_started() {  # only a worker this script started has a log to tell
  pid_of worker >/dev/null && grep -q "started" "$STATE/logs/worker.log" 2>/dev/null
}

up_prefect() {
  write_env
  # shellcheck disable=SC1091
  source "$STATE/env"   # the worker runs flows with the stack's ModelHub and artifact store
  # the server streams flow-run logs to websocket clients, so `prefect deployment run --watch`
  # shows them (both settings are off by default in Prefect 3.9: --watch then shows states only)
  PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED=true PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED=true \
    start server "prefect server (127.0.0.1:$PORT)" server_healthy 90 \
    "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT"
  "$BIN/prefect" work-pool inspect atm >/dev/null 2>&1 ||
    "$BIN/prefect" work-pool create atm --type process >/dev/null
  "$BIN/prefect" --no-prompt deploy --all >"$STATE/logs/deploy.log" 2>&1 ||
    { echo "prefect deploy failed; see $STATE/logs/deploy.log"; exit 1; }
  echo "deployments: atm/datarun, atm/nightly (work pool atm)"
  start worker "prefect worker (pool atm)" worker_started 60 \
    "$BIN/prefect" worker start --pool atm --type process
  mark prefect
  echo "UI: http://127.0.0.1:$PORT   (source $STATE/env to use the prefect and atm CLIs)"
}

# A Prefect worker exits on SIGTERM (or a first SIGINT) once it has stopped polling; a second
# signal makes it SIGKILL itself. The server's group holds uvicorn too.
down_prefect() {
  local rc=0
  stop worker TERM INT || rc=1
  stop server TERM INT || rc=1
  unmark prefect
  return $rc
}
down_s3() { local rc=0; stop s3 TERM || rc=1; unmark s3; return $rc; }

status() {  # each component: its process (if this script started it) and its health endpoint
  local pid
  if pid=$(pid_of server); then
    if server_healthy; then echo "prefect server: healthy at http://127.0.0.1:$PORT (pid $pid)"
    else echo "prefect server: pid $pid runs but http://127.0.0.1:$PORT does not answer"; fi
  elif server_healthy; then echo "prefect server: healthy at http://127.0.0.1:$PORT (not started by stack.sh)"
  else echo "prefect server: down"; fi
  if pid=$(pid_of worker); then echo "prefect worker: running (pid $pid)"; else echo "prefect worker: down"; fi
  if pid=$(pid_of s3); then
    if s3_healthy; then echo "s3: up at http://127.0.0.1:$S3_PORT (pid $pid)"
    else echo "s3: pid $pid runs but http://127.0.0.1:$S3_PORT does not answer"; fi
  elif s3_healthy; then echo "s3: up at http://127.0.0.1:$S3_PORT (not started by stack.sh)"
  else echo "s3: down"; fi
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
  down:all) rc=0; down_prefect || rc=1; down_s3 || rc=1; write_env; exit $rc;;
  status:*) status;;
  *) echo "usage: infra/stack.sh up|down [prefect|mariadb|s3|all] | status"; exit 2;;
esac
