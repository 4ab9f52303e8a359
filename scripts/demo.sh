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
sed -n '/^| pool/,/^$/p' reports/mbeir.md
echo "================ Zero-shot (reports/zeroshot.md) ================"
sed -n '/^| | /,/^$/p' reports/zeroshot.md
echo "per task, routing and chance level: reports/mbeir.md, reports/zeroshot.md; same numbers: dvc metrics show"
echo "wall time of dvc repro: ${elapsed}s"
echo
exp_id="$(python - <<'PY' 2>/dev/null || true
from trace_core.config import load_params
from trace_core.tracking import experiment_id
print(experiment_id(load_params("params.yaml")))
PY
)"
echo "Views (TRACE_VERBOSE=1 make demo shows third-party logs too):"
echo "  MLflow:     make mlflow-ui  -> http://$MLFLOW_HOST:$MLFLOW_PORT/#/experiments/${exp_id:-0}/runs?workflowType=machine_learning"
echo "              (this pipeline's run: ${parent:-none}; select runs and Compare to set params against scores)"
echo "  Prefect:    make prefect-up -> http://$PREFECT_HOST:$PREFECT_PORT  then: make prefect-run"
echo "  Data Docs:  reports/validation/index.html (offline; GX pages in reports/validation/data_docs/)"
echo "  Gallery:    reports/gallery/index.html   Plots: reports/plots/, reports/train/curve.png"
echo "  Reports:    reports/mbeir.md, reports/zeroshot.md, reports/cot_curate.md, reports/ablation.md (make ablation)"
