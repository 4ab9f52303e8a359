"""MLflow model registry: the TRACE pyfunc, champion/challenger promotion.

Part of the one MLflow adapter (:mod:`trace_core.tracking`); runs are opened only by
:mod:`trace_core.tracking.runs`.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from trace_core.config import Params
from trace_core.io import sha256_file
from trace_core.paths import Paths
from trace_core.tracking.runs import (
    TAG_COMMIT,
    TAG_MODEL_ID,
    TAG_PARAMS_HASH,
    active_run_id,
    git_commit,
    params_hash,
    set_tags,
    store_client,
)

log = logging.getLogger(__name__)

TAG_SCORE = "trace.mbeir_average"
TAG_SCORE_PCT = "trace.mbeir_average_pct"
TAG_DECISION = "trace.promotion"
TAG_DATA_MANIFEST = "trace.data_manifest_sha256"
TAG_TRAIN_RUN = "trace.train_run_id"
TAG_EVALUATE_RUN = "trace.evaluate_run_id"
CHAMPION = "champion"
#: data manifest hash of the test set a version's score was measured on (set when it is promoted)
TAG_SCORED_DATA = "trace.scored_data_manifest"
CHALLENGER = "challenger"


def decide_alias(score: float, version: str, champion: tuple[str, float] | None) -> str:
    """Promotion rule: champion iff no champion yet, same version, or strictly higher score."""
    if champion is None or champion[0] == version:
        return CHAMPION
    return CHAMPION if score > champion[1] else CHALLENGER


def register_model(params: Params, model_dir: Path) -> str:
    """Log a pyfunc model that loads the saved HF files and register it; return the version.

    The pyfunc is defined as code (:mod:`trace_core.tracking.pyfunc`), so nothing is pickled; the
    saved weights, tokenizer and image processor travel as the ``model_dir`` artifact.
    Must be called inside :func:`stage_run`.
    """
    if not params.tracking.enabled or not active_run_id():
        return ""
    model_id = _model_id(Path(model_dir))
    existing = version_of_model(params, model_id)
    if existing is not None:  # identical weights (e.g. a resumed or repeated run): no new version
        log.info("weights %s already registered as version %s", model_id, existing)
        set_tags({"trace.registered_version": existing, TAG_MODEL_ID: model_id})
        return existing
    store_client(params)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # predict is unannotated on purpose and the signature is explicit (an input example would cost a
        # full encoder load): MLflow's two advisory warnings about that are known and silenced. The
        # first fires when the PythonModel subclass is defined, i.e. at this import.
        warnings.filterwarnings("ignore", r".*(An input example was not provided|Add type hints)", UserWarning)
        from trace_core.tracking.pyfunc import model_code, signature

        code = Path(tmp) / "trace_pyfunc.py"
        code.write_text(model_code())
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts={"model_dir": str(Path(model_dir).resolve())},
            signature=signature(),
            registered_model_name=params.tracking.registered_model,
        )
    version = str(info.registered_model_version)
    client = store_client(params)
    for key, value in version_tags(params, model_id).items():
        client.set_model_version_tag(params.tracking.registered_model, version, key, value)
    set_tags({"trace.registered_version": version, TAG_MODEL_ID: model_id})
    log.info("registered %s version %s", params.tracking.registered_model, version)
    return version


def version_tags(params: Params, model_id: str) -> dict[str, str]:
    """Provenance of a registered version: weights hash, git commit, params hash, data manifest, train run."""
    tags = {
        TAG_COMMIT: git_commit(),
        TAG_PARAMS_HASH: params_hash(params),
        TAG_DATA_MANIFEST: _data_hash(params),
        TAG_TRAIN_RUN: active_run_id(),
    }
    if model_id:
        tags[TAG_MODEL_ID] = model_id
    return tags


def _model_id(model_dir: Path) -> str:
    """The encoder's stable weights hash (what export/index/evaluate record as model_id)."""
    try:
        from trace_core.model.checkpoint import model_hash
    except ImportError:  # pragma: no cover - the model package is part of trace_core
        return ""
    return str(model_hash(model_dir))


def version_of_model(params: Params, model_id: str | None) -> str | None:
    """Registered version whose ``trace.model_id`` tag is ``model_id`` (latest if several)."""
    if not params.tracking.enabled or not model_id:
        return None
    client = store_client(params)
    name = params.tracking.registered_model
    found = client.search_model_versions(f"name = '{name}' and tags.`{TAG_MODEL_ID}` = '{model_id}'")
    return str(max(int(mv.version) for mv in found)) if found else None


def promote_model(params: Params, model_id: str | None, score: float | None) -> str:
    """After evaluation: promote the version registered for ``model_id`` with its average.

    Returns the alias given, or "" when tracking or ``tracking.promote`` is off, the score is
    missing, or no registered version carries that model id (nothing to promote; logged).
    """
    if not params.tracking.promote:
        log.info("tracking.promote is false: aliases left as they are")
        return ""
    version = version_of_model(params, model_id)
    if version is None or score is None:
        log.warning("no registered version for model %s (or no score): nothing promoted", model_id)
        return ""
    return promote(params, version, float(score))


def comparable_champion(champion: tuple[str, float, str] | None, data_hash: str) -> tuple[str, float] | None:
    """The champion's (version, score) when it was scored on the same data (manifest hash), else None.

    Averages over different test sets (another M-BEIR-mini size, the full M-BEIR) do not compare:
    the first model scored on new data becomes champion there.
    """
    if champion is None or champion[2] != data_hash:
        return None
    return champion[0], champion[1]


def _data_hash(params: Params) -> str:
    manifest = Paths.from_params(params).data_root / "MANIFEST.json"
    return sha256_file(manifest) if manifest.is_file() else "missing"


def _champion_score(client: MlflowClient, name: str) -> tuple[str, float, str] | None:
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
    score = mv.tags.get(TAG_SCORE)
    return str(mv.version), float(score) if score is not None else float("-inf"), mv.tags.get(TAG_SCORED_DATA, "")


def promote(params: Params, version: str, score: float) -> str:
    """Alias ``version`` champion iff ``score`` beats the current champion's, else challenger.

    The score is stored as version tags (``trace.mbeir_average``, a fraction, and
    ``trace.mbeir_average_pct``, in %) with the evaluate run that measured it; the decision is
    tagged on the version, logged to the active run (tags + ``promotion.json``) and returned.
    """
    if not params.tracking.enabled or not version:
        return ""
    client = store_client(params)
    name = params.tracking.registered_model
    current, data = _champion_score(client, name), _data_hash(params)
    champion = comparable_champion(current, data)
    if current is not None and champion is None:
        log.info("champion version %s was scored on other data: not compared", current[0])
    alias = decide_alias(score, version, champion)
    client.set_model_version_tag(name, version, TAG_SCORE, str(score))
    client.set_model_version_tag(name, version, TAG_SCORE_PCT, f"{100 * score:.2f}")
    client.set_model_version_tag(name, version, TAG_DECISION, alias)
    client.set_model_version_tag(name, version, TAG_SCORED_DATA, data)
    if active_run_id():
        client.set_model_version_tag(name, version, TAG_EVALUATE_RUN, active_run_id())
    client.set_registered_model_alias(name, alias, version)
    decision = {
        "model": name,
        "version": version,
        "score": score,
        "alias": alias,
        "previous_champion": champion[0] if champion else None,
        "previous_champion_score": champion[1] if champion else None,
    }
    before = f"version {champion[0]} at {100 * champion[1]:.2f}%" if champion else "none"
    log.info("%s version %s (average %.2f%%) -> %s (champion before: %s)", name, version, 100 * score, alias, before)
    if active_run_id():
        set_tags({TAG_DECISION: alias, "trace.promoted_version": version})
        mlflow.log_dict(decision, "promotion.json")
    return alias


def find_model_run(params: Params) -> str | None:
    """Run id of the latest registered version of the model (None if none registered)."""
    if not params.tracking.enabled:
        return None
    client = store_client(params)
    versions = client.search_model_versions(f"name = '{params.tracking.registered_model}'")
    if not versions:
        return None
    latest = max(versions, key=lambda mv: int(mv.version))
    return str(latest.run_id) if latest.run_id else None
