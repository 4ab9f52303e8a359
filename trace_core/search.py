"""``trace search``: one query (text and/or image) against the built index.

The same code path as export + evaluate, nothing copied: the query becomes an
:class:`~trace_core.types.EncodeItem` through :func:`~trace_core.data.dataset.query_item`
(with the task's M-BEIR instruction), is encoded by
:class:`~trace_core.model.inference.TraceEncoder` (routed: the model may write a chain
before ``<|emb|>``), and is searched by :class:`~trace_core.evaluation.evaluate.Searcher`
(Milvus Lite, a Milvus server or exact NumPy, as ``trace index`` built it). The model is the
registry's champion (MLflow alias ``champion`` of ``tracking.registered_model``) or a model
folder; either way its id must be the one the index was built with.

:func:`render_hits` and :func:`render_result` are pure: they turn hits into text.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trace_core.config import Params
from trace_core.data.mbeir import (
    TASKS,
    TEST_TASKS_BY_STEM,
    TestTask,
    global_pool_file,
    instructions_file,
    iter_candidates,
    local_pool_file,
    present_test_tasks,
)
from trace_core.io import DataError, read_json, write_json
from trace_core.paths import Paths, served_model_dir
from trace_core.types import CandidateRecord, EncodeItem, QueryRecord, RoutingMode, routing_mode

if TYPE_CHECKING:
    from trace_core.model.inference import TraceEncoder

log = logging.getLogger(__name__)
UNION = "union"
#: task type (the model's system prompt) of a query without --task, by query modality:
#: text -> image (task 0), image -> text (task 3), image+text -> image (task 7)
DEFAULT_TASK_TYPE: dict[str, int] = {"text": 0, "image": 3, "image,text": 7}


@dataclass(frozen=True)
class Hit:
    """One retrieved candidate."""

    rank: int
    score: float
    did: str
    modality: str | None = None
    text: str | None = None
    img_path: str | None = None


@dataclass(frozen=True)
class SearchResult:
    """What ``trace search`` prints: the encoded query, its route and chain, and the hits."""

    query: dict[str, Any]
    pool: str
    model_id: str
    model_source: str
    route: str
    chain: str
    new_tokens: int
    hits: list[Hit]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``hits`` as a list of dicts)."""
        return asdict(self)


# --- the query -----------------------------------------------------------------------
def query_modality(text: str | None, image: str | None) -> str:
    """``text``, ``image`` or ``image,text`` (M-BEIR's spelling) of what the user gave.

    Raises:
        ValueError: neither a text nor an image.
    """
    if not text and not image:
        raise ValueError("give a query text, an --image, or both")
    return "image,text" if text and image else ("text" if text else "image")


def resolve_task(stem: str | None, modality: str) -> TestTask | None:
    """The test task named ``stem`` (its instruction is used); None for no instruction.

    Raises:
        ValueError: unknown stem, or a task whose queries have another modality.
    """
    if stem is None:
        return None
    task = TEST_TASKS_BY_STEM.get(stem)
    if task is None:
        raise ValueError(f"unknown task '{stem}' (one of: {', '.join(TEST_TASKS_BY_STEM)})")
    wanted = TASKS[task.task_id][0]
    if wanted != modality:
        raise ValueError(f"task '{stem}' takes {wanted} queries, this query is {modality}")
    return task


def query_record(text: str | None, image: str | None, task: TestTask | None) -> QueryRecord:
    """The query as an M-BEIR record (qid ``<dataset>:search``), so export's conversion applies.

    Without a task the dataset is -1 (no M-BEIR instruction) and the task type, which picks
    the model's system prompt, is :data:`DEFAULT_TASK_TYPE` of the query's modality.
    """
    modality = query_modality(text, image)
    dataset_id, task_id = (task.dataset_id, task.task_id) if task else (-1, DEFAULT_TASK_TYPE[modality])
    return QueryRecord(f"{dataset_id}:search", text or None, image, modality, None, (), (), task_id)


def query_encode_item(q: QueryRecord, params: Params, paths: Paths) -> tuple[EncodeItem, str]:
    """The model input and the instruction chosen, exactly as export builds test queries.

    Without a task (dataset -1) no instruction matches: the text is encoded as given.
    """
    from trace_core.data.dataset import query_item
    from trace_core.data.instructions import Instructions, parse_instructions

    path = instructions_file(paths.data_root)
    instructions = parse_instructions(path) if path.exists() else Instructions({})
    return query_item(q, instructions, params.base.seed, params.data.normalize_text)


def image_arg(image: Path | None) -> Path | None:
    """An image path given on the command line, absolute and checked to exist.

    The encoder reads images relative to a root and refuses paths outside it (dataset records
    must not reach arbitrary files); a query image the user names is read from its own folder.
    """
    if image is None:
        return None
    path = image.expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"query image {image} does not exist")
    return path


# --- the model -----------------------------------------------------------------------
def device_of(choice: str) -> str:
    """``export.device``: ``auto`` is CUDA when available."""
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def champion(params: Params) -> tuple[str, str, str]:
    """``(version, model_id, source)`` of the registry's champion (asks MLflow).

    Raises:
        ValueError: tracking is off or no version carries the alias.
    """
    if not params.tracking.enabled:
        raise ValueError("tracking.enabled is false: there is no registry champion (pass --model-dir)")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from trace_core.tracking import CHAMPION, TAG_MODEL_ID, tracking_uri

    uri = tracking_uri(params)
    name = params.tracking.registered_model
    try:
        mv = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise ValueError(
            f"no '{CHAMPION}' alias on model '{name}' in {uri} (run the pipeline, or --model-dir)"
        ) from None
    return str(mv.version), str(mv.tags.get(TAG_MODEL_ID, "")), f"models:/{name}@{CHAMPION} (version {mv.version})"


def store_stamp(params: Params) -> dict[str, Any] | None:
    """Identity of a SQLite tracking store's current state (URI, file size and mtime), else None.

    Any write to the store (a new alias included) changes it; server stores have none.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.tracking_uri
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    db = Path(uri[len(prefix) :]).resolve()
    if not db.is_file():
        return None
    st = db.stat()
    return {"db": str(db), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "model": params.tracking.registered_model}


def cached_champion(params: Params, cache: Path) -> tuple[str, str, str]:
    """:func:`champion`, remembered in ``cache`` while a SQLite store is unchanged.

    Importing MLflow and opening its store costs 2-4 s of a cold ``trace search``; an
    unchanged store file cannot hold another alias.
    """
    stamp = store_stamp(params)
    if stamp is not None and cache.exists():
        saved = read_json(cache)
        if saved.get("stamp") == stamp:
            return str(saved["version"]), str(saved["model_id"]), str(saved["source"])
    version, model_id, source = champion(params)
    if stamp is not None:
        write_json(cache, {"stamp": stamp, "version": version, "model_id": model_id, "source": source})
    return version, model_id, source


def download_champion(params: Params, version: str, cache: Path) -> Path:
    """The champion's saved model folder, downloaded once into ``cache/v<version>``."""
    import mlflow

    from trace_core.tracking import tracking_uri

    target = cache / f"v{version}"
    found = sorted(target.rglob("trace_meta.json")) if target.exists() else []
    if not found:
        store = tracking_uri(params)
        mlflow.set_tracking_uri(store)
        mlflow.set_registry_uri(store)  # models:/ resolves in the registry: never another project's
        uri = f"models:/{params.tracking.registered_model}/{version}"
        log.info("downloading %s to %s", uri, target)
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target))
        found = sorted(target.rglob("trace_meta.json"))
    if not found:
        raise FileNotFoundError(f"{target}: the champion's artifacts hold no saved model (trace_meta.json)")
    return found[0].parent


def load_model(params: Params, paths: Paths, model_dir: Path | None) -> tuple[TraceEncoder, str]:
    """The encoder of ``model_dir`` or of the champion (local copy when its weights match), and its source."""
    from trace_core.model.inference import load_encoder

    device = device_of(params.export.device)
    if model_dir is not None:
        if not (model_dir / "trace_meta.json").exists():
            raise FileNotFoundError(f"{model_dir}: not a saved TRACE model (no trace_meta.json)")
        return load_encoder(model_dir, device), str(model_dir)
    version, model_id, source = cached_champion(params, paths.state_dir / "champion" / "alias.json")
    local = served_model_dir(params, paths)
    if (local / "trace_meta.json").exists():
        encoder = load_encoder(local, device)
        if encoder.model_id == model_id:
            return encoder, f"{source}, weights in {local}"
        log.info("%s holds model %s, the champion is %s", local, encoder.model_id, model_id)
    folder = download_champion(params, version, paths.state_dir / "champion")
    return load_encoder(folder, device), f"{source}, weights in {folder}"


# --- the pool ------------------------------------------------------------------------
def default_pool(task: TestTask | None) -> str:
    """The task's local pool, or the union pool without a task."""
    return task.stem if task is not None else UNION


def pool_files(paths: Paths, pool: str) -> list[Path]:
    """Candidate files that describe ``pool`` (the union file, else every local pool)."""
    if pool != UNION:
        return [local_pool_file(paths.data_root, pool)]
    union = global_pool_file(paths.data_root, "test")
    if union.exists():
        return [union]
    return [local_pool_file(paths.data_root, t.stem) for t in present_test_tasks(paths.data_root)]


def find_candidates(files: Iterable[Path], dids: set[str]) -> dict[str, CandidateRecord]:
    """Records of ``dids``, streaming the files and stopping when all are found."""
    out: dict[str, CandidateRecord] = {}
    for path in files:
        if not path.exists():
            continue
        for c in iter_candidates(path):
            if c.did in dids and c.did not in out:
                out[c.did] = c
                if len(out) == len(dids):
                    return out
    return out


def to_hits(dids: Sequence[str], scores: Sequence[float], records: dict[str, CandidateRecord]) -> list[Hit]:
    """Ranked hits with the candidates' text and image path (None when not in the pool files)."""
    out = []
    for rank, (did, score) in enumerate(zip(dids, scores, strict=True), start=1):
        c = records.get(did)
        out.append(
            Hit(rank, float(score), did, c.modality if c else None, c.txt if c else None, c.img_path if c else None)
        )
    return out


# --- rendering (pure) ------------------------------------------------------------------
def _clip(text: str | None, width: int) -> str:
    if not text:
        return ""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def render_hits(hits: Sequence[Hit], image_root: str | None = None, text_width: int = 70) -> str:
    """A ranked hit list as aligned text lines: rank, score, did, text and image path."""
    if not hits:
        return "  (no hits)"
    did_w = max(len(h.did) for h in hits)
    lines = []
    for h in hits:
        parts = [f"{h.rank:>3}. {h.score:8.4f}  {h.did:<{did_w}}"]
        if h.text:
            parts.append(_clip(h.text, text_width))
        if h.img_path:
            parts.append(f"[{image_root.rstrip('/') + '/' if image_root else ''}{h.img_path}]")
        lines.append("  ".join(parts))
    return "\n".join(lines)


def render_result(result: SearchResult, image_root: str | None = None) -> str:
    """The human-readable answer of ``trace search``."""
    q = result.query
    head = [
        f"query    {q.get('text') or ''}{'  [' + q['image'] + ']' if q.get('image') else ''}",
        f"task     {q.get('task') or '-'} (type {q.get('task_type')})  instruction: {q.get('instruction') or '-'}",
        f"model    {result.model_id}  ({result.model_source})",
        f"route    {result.route}" + (f"  ({result.new_tokens} tokens)" if result.new_tokens else ""),
    ]
    if result.chain:
        head.append(f"chain    {_clip(result.chain, 400)}")
    head.append(f"pool     {result.pool}: top {len(result.hits)}")
    return "\n".join(head) + "\n" + render_hits(result.hits, image_root)


# --- the command -----------------------------------------------------------------------
def check_index(paths: Paths, pool: str, model_id: str) -> dict[str, Any]:
    """The index manifest, checked to hold ``pool`` and to come from model ``model_id``."""
    if not paths.index_manifest.exists():
        raise DataError(paths.index_manifest, "file", "no index manifest (run `trace export` and `trace index`)")
    manifest = read_json(paths.index_manifest)
    if pool not in manifest["pools"]:
        raise DataError(
            paths.index_manifest, f"pool '{pool}'", f"not indexed (indexed: {', '.join(manifest['pools'])})"
        )
    if manifest.get("model_id") != model_id:
        raise DataError(
            paths.index_manifest,
            "model_id",
            f"the index holds embeddings of model {manifest.get('model_id')}, the query model is {model_id} "
            "(re-run `trace export` and `trace index`, or pass that model's --model-dir)",
        )
    return dict(manifest)


def run(
    params: Params,
    paths: Paths,
    text: str | None,
    image: Path | None = None,
    task: str | None = None,
    pool: str | None = None,
    k: int = 10,
    model_dir: Path | None = None,
    routing: str | None = None,
) -> SearchResult:
    """Encode one query with the model and return the top-``k`` hits of ``pool``."""
    from trace_core.evaluation.evaluate import Searcher

    if k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    t0 = time.perf_counter()
    chosen = resolve_task(task, query_modality(text, str(image) if image else None))
    image_path = image_arg(image)
    q = query_record(text, image_path.name if image_path else None, chosen)
    pool = pool or default_pool(chosen)
    item, instruction = query_encode_item(q, params, paths)
    encoder, source = load_model(params, paths, model_dir)
    manifest = check_index(paths, pool, encoder.model_id)
    t1 = time.perf_counter()
    mode: RoutingMode = routing_mode(routing or params.export.routing)
    image_root = image_path.parent if image_path else paths.data_root
    enc = encoder.encode_queries([item], image_root, mode, params.export.max_new_tokens, batch_size=1)
    t2 = time.perf_counter()
    searcher = Searcher(params, paths, manifest)
    try:
        index, ids = searcher.get(pool)
        scores, positions = index.search(enc.vectors, k)
    finally:
        searcher.close()
    keep = positions[0] >= 0
    dids = [ids[p] for p in positions[0][keep]]
    hits = to_hits(dids, scores[0][keep].tolist(), find_candidates(pool_files(paths, pool), set(dids)))
    t3 = time.perf_counter()
    query = {
        "text": text,
        "image": str(image_path) if image_path else None,
        "task": task,
        "task_type": q.task_id,
        "instruction": instruction,
        "encoded": item.text,
    }
    seconds = {"load": t1 - t0, "encode": t2 - t1, "search": t3 - t2}
    return SearchResult(
        query, pool, encoder.model_id, source, enc.routes[0], enc.chains[0], int(enc.new_tokens[0]), hits, seconds
    )
