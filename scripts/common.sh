# Shared settings of the TRACE helper scripts (sourced, not executed).
# Everything stays inside the project: state under .trace/, servers on 127.0.0.1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
STATE="$ROOT/.trace"
PIDS="$STATE/pids"
LOGS="$STATE/logs"
mkdir -p "$PIDS" "$LOGS"
# Telemetry of every tool off (same list as trace_core/env.py).
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false \
  GX_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
  TOKENIZERS_PARALLELISM=false
# Third-party INFO logs and progress bars off unless TRACE_VERBOSE=1 (same list as trace_core/env.py
# QUIET_OUTPUT; set here too because the helpers import mlflow before trace_core can set them).
if [[ -z "${TRACE_VERBOSE:-}" ]]; then
  export MLFLOW_LOGGING_LEVEL="${MLFLOW_LOGGING_LEVEL:-WARNING}" \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="${MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR:-false}" \
    HF_HUB_DISABLE_PROGRESS_BARS="${HF_HUB_DISABLE_PROGRESS_BARS:-1}" \
    TRANSFORMERS_VERBOSITY="${TRANSFORMERS_VERBOSITY:-warning}" GRPC_VERBOSITY="${GRPC_VERBOSITY:-ERROR}"
fi
export PREFECT_HOME="${PREFECT_HOME:-$STATE/prefect}"
PREFECT_HOST="${PREFECT_HOST:-127.0.0.1}"
PREFECT_PORT="${PREFECT_PORT:-4200}"
MLFLOW_HOST="${MLFLOW_HOST:-127.0.0.1}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"

# start_bg NAME CMD...: start CMD in its own session (pid == process group id), log and pid recorded.
start_bg() {
  local name="$1"; shift
  if [[ -f "$PIDS/$name.pid" ]] && kill -0 "$(cat "$PIDS/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$PIDS/$name.pid"))"
    return 0
  fi
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! >"$PIDS/$name.pid"
  echo "started $name (pid $!), log: $LOGS/$name.log"
}

# stop_bg NAME SIGNAL: signal the process group recorded for NAME, wait, then SIGKILL it.
# Silent (status 1) when NAME has no pid file, i.e. was never started by these scripts.
stop_bg() {
  local name="$1" sig="${2:-TERM}" pidfile="$PIDS/$1.pid"
  [[ -f "$pidfile" ]] || return 1
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -s "$sig" -- "-$pid" 2>/dev/null || kill -s "$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    echo "stopped $name (pid $pid)"
  else
    echo "$name: pid $pid not running"
  fi
  rm -f "$pidfile"
}

# wait_http URL SECONDS: poll until URL answers 200.
wait_http() {
  local url="$1" limit="${2:-90}"
  for _ in $(seq 1 "$limit"); do
    if python - "$url" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
    sleep 1
  done
  echo "timed out waiting for $url" >&2
  return 1
}
