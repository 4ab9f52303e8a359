"""Stage ``evaluate_zeroshot``: the paper's zero-shot suite with the trained model.

Reads the served model (:func:`~trace_core.paths.served_model_dir`) and the zero-shot root; encodes every task's
queries (routed, with ``export``'s routing settings, through the same prompt/collate path as
M-BEIR queries) and candidates, ranks exactly in memory, scores, and writes
``metrics/zeroshot.json`` (13 columns, per-task metrics, routing), ``reports/zeroshot.md``
and ``reports/zeroshot/{runs,qrels}/<task>_{run,qrels}.txt`` (scorable with ``trace score``),
all reproducible; query-encoding throughput goes to ``metrics/timings/evaluate_zeroshot.json``
and MLflow only. A dataset whose folder is missing is skipped with a warning (its columns read n/a).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from trace_core.config import ExportParams, Params
from trace_core.data.mbeir import format_qrels
from trace_core.evaluation.metrics import format_run_line
from trace_core.evaluation.zeroshot.base import LoadContext, ZsTask
from trace_core.evaluation.zeroshot.report import collect_metrics, markdown
from trace_core.evaluation.zeroshot.score import rank_task, run_entries, task_metrics
from trace_core.evaluation.zeroshot.suite import load_suite
from trace_core.io import atomic_open, read_json, write_json, write_text
from trace_core.paths import Paths, served_model_dir
from trace_core.types import EncodeItem, RoutingMode, routing_mode

log = logging.getLogger(__name__)
ROUTES = ("direct", "reasoned", "forced")


class Encoder(Protocol):
    """What the stage needs from :class:`trace_core.model.inference.TraceEncoder`."""

    model_id: str
    dim: int

    def encode_candidates(self, items: Sequence[EncodeItem], image_root: Path, batch_size: int) -> np.ndarray:
        """(n, dim) unit candidate embeddings."""
        ...

    def encode_queries(
        self, items: Sequence[EncodeItem], image_root: Path, mode: RoutingMode, max_new_tokens: int, batch_size: int
    ) -> Any:
        """Routed query embeddings: ``vectors``, ``routes``, ``new_tokens``, ``chains``."""
        ...


@dataclass
class QueryBatch:
    """Query embeddings of one task with their routing."""

    vectors: np.ndarray
    routes: list[str]
    new_tokens: list[int]
    seconds: float


class EmbeddingCache:
    """Encodes each distinct item once per side (galleries and queries recur across tasks)."""

    def __init__(self, encoder: Encoder, image_root: Path, ex: ExportParams, mode: RoutingMode) -> None:
        self.encoder, self.image_root, self.ex, self.mode = encoder, image_root, ex, mode
        self._cands: dict[tuple[Path, EncodeItem], np.ndarray] = {}
        self._queries: dict[tuple[Path, EncodeItem], tuple[np.ndarray, str, int]] = {}

    def candidates(self, items: Sequence[EncodeItem], root: Path | None = None) -> np.ndarray:
        """(n, dim) embeddings of candidate items whose images lie under ``root`` (default: the zero-shot root)."""
        root = root or self.image_root
        todo = list(dict.fromkeys(i for i in items if (root, i) not in self._cands))
        if todo:
            vectors = self.encoder.encode_candidates(todo, root, self.ex.batch_size)
            self._cands.update({(root, i): v for i, v in zip(todo, vectors, strict=True)})
        return np.stack([self._cands[(root, i)] for i in items]).astype(np.float32)

    def queries(self, items: Sequence[EncodeItem], root: Path | None = None) -> QueryBatch:
        """Routed embeddings of query items (time spent encoding the new ones)."""
        root = root or self.image_root
        todo = list(dict.fromkeys(i for i in items if (root, i) not in self._queries))
        t0 = time.perf_counter()
        if todo:
            enc = self.encoder.encode_queries(todo, root, self.mode, self.ex.max_new_tokens, self.ex.batch_size)
            rows = zip(todo, enc.vectors, enc.routes, enc.new_tokens, strict=True)
            self._queries.update({(root, i): (v, str(r), int(n)) for i, v, r, n in rows})
        seconds = time.perf_counter() - t0
        got = [self._queries[(root, i)] for i in items]
        return QueryBatch(
            np.stack([g[0] for g in got]).astype(np.float32), [g[1] for g in got], [g[2] for g in got], seconds
        )


@dataclass
class TaskResult:
    """Scores and routing, run and qrels lines, and query-encoding time of one task."""

    metrics: dict[str, float]
    run: str
    qrels: str
    encode_seconds: float


def evaluate_task(
    task: ZsTask, cache: EmbeddingCache, keep_k: int, run_id: str, crop_dir: Path | None = None
) -> TaskResult:
    """Encode, rank and score one task (a ``crops`` task's images lie under ``crop_dir``)."""
    root = crop_dir if task.crops else None
    cands = cache.candidates(task.candidates, root)
    queries = cache.queries([q.item for q in task.queries], root)
    rankings = rank_task(task, queries.vectors, cands, max(keep_k, *task.ks))
    n = len(task.queries)
    metrics = task_metrics(task, rankings)
    metrics["n_candidates"] = float(len(task.candidates))
    metrics.update({f"{r}_rate": sum(x == r for x in queries.routes) / n for r in ROUTES})
    metrics["mean_new_tokens"] = sum(queries.new_tokens) / n
    run = "".join(format_run_line(e) for e in run_entries(task, rankings, run_id, keep_k))
    qrels = format_qrels([(q.qid, d, q.item.task_id) for q in task.queries for d in sorted(q.positives)])
    return TaskResult(metrics, run, qrels, queries.seconds)


def throughput(results: dict[str, TaskResult]) -> dict[str, Any]:
    """Query-encoding QPS per task and overall (a run-specific measurement, never a DVC output)."""
    by_task = {k: r.metrics["n_queries"] / r.encode_seconds for k, r in results.items() if r.encode_seconds > 0}
    n = sum(r.metrics["n_queries"] for r in results.values())
    seconds = sum(r.encode_seconds for r in results.values())
    return {"query_qps": n / seconds if seconds > 0 else None, "query_qps_by_task": by_task, "encode_seconds": seconds}


def data_source(root: Path) -> dict[str, Any]:
    """The ``source`` the download stage recorded in the zero-shot root's manifest ({} without one)."""
    manifest = root / "MANIFEST.json"
    return dict(read_json(manifest).get("source", {})) if manifest.is_file() else {}


def write_runs(out: Path, results: dict[str, TaskResult]) -> None:
    """``runs/<task>_run.txt`` and ``qrels/<task>_qrels.txt`` (the folder is replaced)."""
    shutil.rmtree(out, ignore_errors=True)
    for name, res in results.items():
        with atomic_open(out / "runs" / f"{name}_run.txt") as fh:
            fh.write(res.run)
        write_text(out / "qrels" / f"{name}_qrels.txt", res.qrels)


def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(params: Params, paths: Paths, encoder: Encoder | None = None) -> dict[str, Any]:
    """Load the suite, evaluate every task, write metrics, report and run files."""
    zp, ex = params.evaluate_zeroshot, params.export
    mode = routing_mode(ex.routing)
    tasks, missing = load_suite(LoadContext(paths.zeroshot_root, paths.zeroshot_crops), zp.datasets)
    if encoder is None and tasks:
        from trace_core.model.inference import load_encoder

        loaded = load_encoder(served_model_dir(params, paths), _device(ex.device))
        if zp.max_length is not None:  # interleaved queries may need a longer prompt than training's
            loaded.proc = dataclasses.replace(loaded.proc, max_length=zp.max_length)
        encoder = loaded
    results: dict[str, TaskResult] = {}
    if encoder is not None:
        cache = EmbeddingCache(encoder, paths.zeroshot_root, ex, mode)
        for task in tqdm(tasks, desc="zero-shot tasks", unit="task", disable=None):
            results[task.name] = evaluate_task(task, cache, zp.keep_k, zp.run_id, paths.zeroshot_crops)
            log.debug("%s: %s", task.name, {k: round(v, 4) for k, v in results[task.name].metrics.items()})
    model_id = encoder.model_id if encoder is not None else None
    metrics = collect_metrics(tasks, {k: r.metrics for k, r in results.items()}, missing, model_id)
    write_runs(paths.reports_dir / "zeroshot", results)
    write_json(paths.metrics_file("zeroshot"), metrics)
    write_text(paths.reports_dir / "zeroshot.md", markdown(metrics, data_source(paths.zeroshot_root), mode))
    timings = throughput(results)
    write_json(paths.timings_file("evaluate_zeroshot"), timings)
    columns = f"{metrics['n_columns']} of {len(metrics['columns'])} table columns"
    log.info("evaluate_zeroshot: %d tasks scored, %s; missing: %s", len(results), columns, ", ".join(missing) or "none")
    if params.tracking.enabled:
        from trace_core import tracking  # metrics file and reports are logged by the CLI's stage run
        from trace_core.flatten import numeric_leaves

        tracking.set_tags({"trace.model_id": model_id or ""})
        tracking.log_metrics(numeric_leaves({"timings": timings}))
    return metrics
