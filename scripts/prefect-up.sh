#!/usr/bin/env bash
# Start a Prefect server on 127.0.0.1 and serve the TRACE deployments in the background.
# PIDs go to .trace/pids/, logs to .trace/logs/; `make prefect-down` stops them by PID.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
API="http://$PREFECT_HOST:$PREFECT_PORT/api"
start_bg prefect-server prefect server start --host "$PREFECT_HOST" --port "$PREFECT_PORT" --analytics-off
wait_http "$API/health" 120
export PREFECT_API_URL="$API"
cat >"$STATE/prefect.env" <<ENV
# source this file to talk to the TRACE Prefect server (written by scripts/prefect-up.sh)
export PREFECT_HOME="$PREFECT_HOME"
export PREFECT_API_URL="$API"
export PATH="$VENV/bin:\$PATH"
ENV
start_bg prefect-serve python -m flows.deploy serve
for _ in $(seq 1 120); do
  if prefect deployment inspect 'trace-pipeline/mini' >/dev/null 2>&1; then
    echo "deployment trace-pipeline/mini is served"
    echo "Prefect UI: http://$PREFECT_HOST:$PREFECT_PORT"
    echo "run it:     source .trace/prefect.env && prefect deployment run 'trace-pipeline/mini' --watch"
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDS/prefect-serve.pid")" 2>/dev/null; then
    echo "the serving process exited; see $LOGS/prefect-serve.log" >&2; tail -20 "$LOGS/prefect-serve.log" >&2; exit 1
  fi
  sleep 1
done
echo "deployment did not appear; see $LOGS/prefect-serve.log" >&2
exit 1
