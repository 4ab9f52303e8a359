#!/usr/bin/env bash
# Serve the local MLflow store (runs, metrics, artifacts, registry) on 127.0.0.1.
# Foreground by default; `scripts/mlflow-ui.sh --background` records the PID (.trace/pids/mlflow-ui.pid).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
URI="${MLFLOW_TRACKING_URI:-sqlite:///mlruns.db}"
CMD=(mlflow server --backend-store-uri "$URI" --default-artifact-root "$ROOT/mlartifacts"
     --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers 1)
if [[ "${1:-}" == "--stop" ]]; then
  stop_bg mlflow-ui TERM || echo "MLflow UI: nothing to stop (not started with --background)"
  exit 0
fi
echo "MLflow UI: http://$MLFLOW_HOST:$MLFLOW_PORT  (store: $URI)"
if [[ "${1:-}" == "--background" ]]; then
  start_bg mlflow-ui "${CMD[@]}"
  wait_http "http://$MLFLOW_HOST:$MLFLOW_PORT/health" 120
else
  exec "${CMD[@]}"
fi
