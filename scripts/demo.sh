#!/usr/bin/env bash
# `make demo`: run the ten DVC stages on params.yaml under one MLflow parent run, then
# print the 16-column M-BEIR table, the 13-column zero-shot table and where the MLflow, Prefect and Data Docs views are.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$STATE/torch_extensions}"
[[ -d .git ]] || git init -q
[[ -d .dvc ]] || { dvc init -q; dvc config core.analytics false; }
start=$(date +%s)
parent="$(python -m trace_core.tracking start)"
export TRACE_PARENT_RUN_ID="$parent"
status=FAILED
finish() { python -m trace_core.tracking end "$parent" "$status" || true; }
trap finish EXIT
dvc repro "$@"
status=FINISHED
finish; trap - EXIT
elapsed=$(( $(date +%s) - start ))
echo
echo "================ M-BEIR (reports/mbeir.md) ================"
cat reports/mbeir.md
echo
echo "================ Zero-shot (reports/zeroshot.md) ================"
cat reports/zeroshot.md
echo
echo "dvc metrics show metrics/mbeir.json metrics/zeroshot.json   # the same numbers from DVC"
echo "wall time of dvc repro: ${elapsed}s"
echo
docs="$(find reports/validation -name index.html 2>/dev/null | head -1 || true)"
echo "Views:"
echo "  MLflow:     make mlflow-ui   -> http://$MLFLOW_HOST:$MLFLOW_PORT  (parent run ${parent:-none}, store sqlite:///mlruns.db)"
echo "  Prefect:    make prefect-up  -> http://$PREFECT_HOST:$PREFECT_PORT  then: source .trace/prefect.env && prefect deployment run 'trace-pipeline/mini' --watch"
echo "  Data Docs:  ${docs:-reports/validation/} (open in a browser)"
echo "  Reports:    reports/mbeir.md, reports/zeroshot.md, reports/cot_curate.md, reports/plots/, reports/ablation.md (make ablation)"
