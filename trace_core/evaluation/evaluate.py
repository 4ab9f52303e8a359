"""Stage ``evaluate``: search each test file in its own pool (and the union), score, report.

Writes one UniIR-format run file per pool scope (``reports/runs/mbeir_test_<scope>_run.txt``),
``metrics/mbeir.json`` (16-column table, average, per-task recalls, routing rates, QPS),
``reports/mbeir.md`` and plots, and logs them to MLflow on the model's run. Every number is
recorded with the index it came from (``<scope>.index.<task>``: backend, index type, whether
the search was exact, build and search parameters); ``<scope>.approximate`` lists the tasks
scored on an approximate index (the protocol is exhaustive search, UniIR's faiss Flat).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trace_core.config import Params
from trace_core.data.mbeir import TestTask, present_test_tasks, qrels_file, read_qrels
from trace_core.evaluation.mbeir import build_table, task_ks
from trace_core.evaluation.metrics import (
    RunEntry,
    chance_hit_at_k,
    format_run_line,
    ranked_entries,
    recall_at_ks,
)
from trace_core.indexing.backend import VectorIndex
from trace_core.indexing.build_index import open_index
from trace_core.indexing.commit import load_export
from trace_core.indexing.shards import iter_chunks, load_embeddings, load_manifest
from trace_core.io import DataError, atomic_open, read_json, write_json
from trace_core.paths import Paths

log = logging.getLogger(__name__)
UNION = "union"


@dataclass
class TaskResult:
    """Scores and run entries of one task in one scope."""

    metrics: dict[str, float]
    entries: list[RunEntry]
    index: dict[str, Any]  # the index the numbers came from (search_spec)


def rank_queries(
    index: VectorIndex, pool_ids: list[str], qids: list[str], vectors: np.ndarray, k: int, run_id: str, task_id: int
) -> tuple[dict[str, list[str]], list[RunEntry]]:
    """Search and turn positions into ``qid -> ranked dids`` and run entries."""
    scores, positions = index.search(vectors, k)
    rankings: dict[str, list[str]] = {}
    entries: list[RunEntry] = []
    for qid, s_row, p_row in zip(qids, scores, positions, strict=True):
        keep = p_row >= 0
        dids = [pool_ids[p] for p in p_row[keep]]
        rankings[qid] = dids
        entries.extend(ranked_entries(qid, dids, s_row[keep].tolist(), run_id, task_id))
    return rankings, entries


def score_task(
    task: TestTask, params: Params, paths: Paths, index: VectorIndex, pool_ids: list[str], query_manifest: Path
) -> TaskResult:
    """Search one task's queries in ``index`` and score them against its qrels."""
    qids, vectors = load_embeddings(query_manifest)
    if vectors.shape[1] != index.dim:
        raise DataError(
            query_manifest, "dim", f"query dimension {vectors.shape[1]} differs from the index's {index.dim}"
        )
    ks = task_ks(task, params.evaluate.ks, params.evaluate.fashion_ks)
    rankings, entries = rank_queries(index, pool_ids, qids, vectors, max(ks), params.evaluate.run_id, task.task_id)
    qrels = read_qrels(qrels_file(paths.data_root, "test", task.stem))
    positives = {q: e.positives for q, e in qrels.items()}
    metrics = recall_at_ks(rankings, positives, qids, ks)
    # expected reported recall of a random ranking of this pool (the plots' chance line)
    chances = [chance_hit_at_k(len(pool_ids), len(positives.get(q, ())), task.reported_k) for q in qids]
    metrics["chance"] = sum(chances) / len(chances) if chances else 0.0
    return TaskResult(metrics, entries, {})


def search_spec(params: Params, backend: str, entry: dict[str, Any], k: int) -> dict[str, Any]:
    """Index type and parameters behind a number: exact, or approximate with its build/search settings."""
    index_type = str(entry.get("index_type", "exact"))
    if backend != "milvus" or index_type in ("FLAT", "exact"):
        return {"backend": backend, "index_type": index_type, "exact": True}
    from trace_core.indexing.milvus import build_params, search_params

    pp = params.index.model_copy(update={"index_type": index_type})
    settings = {**build_params(pp), **search_params(pp, k)["params"]}
    return {"backend": backend, "index_type": index_type, "exact": False, **settings}


def pool_ids(manifest_path: Path) -> list[str]:
    """Ids of a pool in index position order."""
    return [i for ids, _ in iter_chunks(manifest_path) for i in ids.tolist()]


def routing_summary(query_manifest: dict[str, Any]) -> dict[str, float]:
    """Route rates and mean generated tokens of one task's query export (throughput lives in timings)."""
    n = max(int(query_manifest["count"]), 1)
    out = {f"{r}_rate": c / n for r, c in query_manifest["routes"].items()}
    out["mean_new_tokens"] = query_manifest["new_tokens"] / n
    out["n_queries"] = float(query_manifest["count"])
    return out


def throughput(export_timings: dict[str, Any] | None, search_seconds: float, n_searched: int) -> dict[str, Any]:
    """Query-encoding QPS per task and overall (from export's timings) and search QPS of this run."""
    queries = (export_timings or {}).get("queries") or {}
    return {
        "query_qps": (export_timings or {}).get("query_qps"),
        "query_qps_by_task": {stem: t["qps"] for stem, t in queries.items() if t},
        "search_qps": n_searched / search_seconds if search_seconds > 0 else None,
        "search_seconds": search_seconds,
    }


class Searcher:
    """Opens each pool's index once (Milvus client or in-memory exact search)."""

    def __init__(self, params: Params, paths: Paths, imanifest: dict[str, Any]) -> None:
        self.params, self.paths, self.imanifest = params, paths, imanifest
        self.client: Any = None
        self._cache: dict[str, tuple[VectorIndex, list[str]]] = {}
        if imanifest["backend"] == "milvus":
            from trace_core.indexing.milvus import connect, resolve_uri

            self.client = connect(resolve_uri(params.index, paths.milvus_db), params.index.timeout_s)

    def entry(self, pool: str) -> dict[str, Any]:
        """The index manifest's entry of ``pool``."""
        entry: dict[str, Any] | None = self.imanifest["pools"].get(pool)
        if entry is None:
            raise DataError(self.paths.index_manifest, f"pool '{pool}'", "pool not in the index (re-run `trace index`)")
        return entry

    def get(self, pool: str) -> tuple[VectorIndex, list[str]]:
        """Index and position-ordered ids of ``pool``."""
        if pool not in self._cache:
            entry = self.entry(pool)
            path = self.paths.embeddings_dir / entry["embeddings"]
            if load_manifest(path)["hash"] != entry["hash"]:
                raise DataError(
                    path, "hash", f"pool '{pool}' was re-exported after the index was built (run `trace index`)"
                )
            self._cache[pool] = (open_index(self.params, entry, path, self.client), pool_ids(path))
        return self._cache[pool]

    def close(self) -> None:
        """Close the Milvus client, if any."""
        if self.client is not None:
            self.client.close()


def evaluate_scope(
    scope: str, tasks: list[TestTask], queries: dict[str, Path], searcher: Searcher
) -> dict[str, TaskResult]:
    """Score every task in its local pool (``local``) or in the union pool."""
    out = {}
    params = searcher.params
    for task in tasks:
        pool = task.stem if scope == "local" else UNION
        index, ids = searcher.get(pool)
        out[task.stem] = score_task(task, params, searcher.paths, index, ids, queries[task.stem])
        k = max(task_ks(task, params.evaluate.ks, params.evaluate.fashion_ks))
        out[task.stem].index = search_spec(params, searcher.imanifest["backend"], searcher.entry(pool), k)
        log.debug("%s %s: %s", scope, task.stem, {k: round(v, 4) for k, v in out[task.stem].metrics.items()})
    return out


def write_run_file(path: Path, results: dict[str, TaskResult]) -> None:
    """One UniIR run file for a scope (tasks in table order)."""
    with atomic_open(path) as fh:
        for res in results.values():
            fh.writelines(format_run_line(e) for e in res.entries)


def collect_metrics(scoped: dict[str, dict[str, TaskResult]], routing: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The ``metrics/mbeir.json`` object."""
    out: dict[str, Any] = {}
    for scope, results in scoped.items():
        per_task = {stem: r.metrics for stem, r in results.items()}
        out[scope] = {
            "table": build_table(per_task).as_dict(),
            "tasks": per_task,
            "index": {stem: r.index for stem, r in results.items()},
            "approximate": [stem for stem, r in results.items() if not r.index.get("exact", True)],
        }
    out["routing"] = routing
    return out


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Search, write run files, score, and write metrics, report and plots."""
    from trace_core.evaluation.report import log_to_tracking, write_reports

    if not paths.index_manifest.exists():
        raise DataError(paths.index_manifest, "file", "no index manifest (run `trace index`)")
    imanifest = read_json(paths.index_manifest)
    top = load_export(paths.embeddings_dir)  # refuses a mix of models (an interrupted export)
    if top["model_id"] != imanifest.get("model_id"):
        raise DataError(
            paths.index_manifest,
            "model_id",
            f"index built for model {imanifest.get('model_id')}, embeddings are from {top['model_id']}",
        )
    tasks = [t for t in present_test_tasks(paths.data_root) if t.stem in top["queries"]]
    queries = {t.stem: paths.embeddings_dir / top["queries"][t.stem] for t in tasks}
    scopes = ["local"] + ([UNION] if params.evaluate.union_pool and UNION in imanifest["pools"] else [])
    if params.evaluate.union_pool and UNION not in imanifest["pools"]:
        log.warning("evaluate.union_pool is set but no union pool was exported/indexed: local pools only")
    searcher = Searcher(params, paths, imanifest)
    t0 = time.perf_counter()
    try:
        scoped = {scope: evaluate_scope(scope, tasks, queries, searcher) for scope in scopes}
    finally:
        searcher.close()
    search_seconds = time.perf_counter() - t0
    runs_dir = paths.reports_dir / "runs"
    for scope, results in scoped.items():
        write_run_file(runs_dir / f"mbeir_test_{scope}_run.txt", results)
    routing = {t.stem: routing_summary(load_manifest(queries[t.stem])) for t in tasks}
    metrics = collect_metrics(scoped, routing)
    metrics["model_id"] = imanifest.get("model_id")
    metrics["index"] = {
        "backend": imanifest["backend"],
        "index_type": imanifest["index_type"],
        "local_index_type": imanifest.get("local_index_type", imanifest["index_type"]),
    }
    write_json(paths.metrics_file("mbeir"), metrics)
    export_timings = read_json(paths.timings_file("export")) if paths.timings_file("export").is_file() else None
    n_searched = sum(int(r["n_queries"]) for r in routing.values()) * len(scopes)
    timings = throughput(export_timings, search_seconds, n_searched)
    write_json(paths.timings_file("evaluate"), timings)
    files = write_reports(metrics, paths.reports_dir)
    if params.evaluate.gallery_queries > 0:
        files.append(write_task_gallery(params, paths, tasks, scoped["local"]))
    log_to_tracking(params, metrics, [paths.metrics_file("mbeir"), *files, runs_dir], timings)
    log.info("evaluate: %s", summary_line(metrics, timings))
    return metrics


def write_task_gallery(params: Params, paths: Paths, tasks: list[TestTask], local: dict[str, TaskResult]) -> Path:
    """``reports/gallery/index.html``: a few queries per task with their local-pool top 5."""
    from trace_core.evaluation import gallery

    entries = {stem: r.entries for stem, r in local.items()}
    n = params.evaluate.gallery_queries
    sections = gallery.collect(
        paths.data_root, tasks, entries, paths.embeddings_dir / "routing.jsonl", params.base.seed, n
    )
    note = (
        f"{n} test queries per task (found and missed ones where both exist, spread over the file), searched in "
        "the task's local pool; top 5 shown, "
        "positives (qrels) outlined in green. Route: direct = embedded at once, reasoned = the model wrote a "
        "chain before <|emb|>, forced = a chain was forced."
    )
    return gallery.write_gallery(paths.reports_dir / "gallery" / "index.html", sections, note)


def summary_line(metrics: dict[str, Any], timings: dict[str, Any]) -> str:
    """One line: the local (and union) M-BEIR average in % over the scored tasks, and the QPS."""
    parts = []
    for scope in ("local", "union"):
        table = metrics.get(scope, {}).get("table", {})
        if table.get("average") is not None:
            parts.append(f"{scope} average {100 * table['average']:.1f}% over {table['n_tasks']} tasks")
    for key, what in (("query_qps", "queries/s encoded"), ("search_qps", "queries/s searched")):
        if timings.get(key):
            parts.append(f"{timings[key]:.1f} {what}")
    return "; ".join(parts)
