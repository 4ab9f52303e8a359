"""Stage ``export``: embed test queries (routed) and local pools into resumable shards.

Each local pool is embedded once; the union pool is the concatenation of the local pools
(first occurrence of each did, membership from the union pool file when present) plus any
union-only candidate, never re-embedded. Query shards carry the routing of every query and
the time spent in ``encode_queries``, from which evaluate reports query-encoding QPS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from trace_core.config import Params
from trace_core.data.dataset import candidate_item, query_item
from trace_core.data.instructions import parse_instructions
from trace_core.data.mbeir import (
    TEST_TASKS,
    TestTask,
    global_pool_file,
    instructions_file,
    load_pool,
    load_queries,
    local_pool_file,
    present_test_tasks,
    query_file,
)
from trace_core.indexing.shards import combined_hash, shard_done, shard_name, write_manifest, write_shard
from trace_core.indexing.union import write_union
from trace_core.io import DataError, iter_jsonl, write_json, write_jsonl
from trace_core.paths import Paths
from trace_core.types import EncodeItem, RoutingMode, routing_mode

log = logging.getLogger(__name__)
ROUTES = ("direct", "reasoned", "forced")
EncodeFn = Callable[[Sequence[EncodeItem]], tuple[np.ndarray, dict[str, Any], list[dict[str, Any]]]]


class Encoder(Protocol):
    """What export needs from :func:`trace_core.model.inference.load_encoder` (TraceEncoder)."""

    model_id: str
    dim: int

    def encode_candidates(self, items: Sequence[EncodeItem], image_root: Path, batch_size: int) -> np.ndarray:
        """(n, dim) L2-normalised candidate embeddings."""
        ...

    def encode_queries(
        self, items: Sequence[EncodeItem], image_root: Path, mode: RoutingMode, max_new_tokens: int, batch_size: int
    ) -> Any:
        """A QueryEncoding: vectors, routes, new_tokens, chains."""
        ...


def export_shards(
    directory: Path, items: Sequence[EncodeItem], encode: EncodeFn, stamp: dict[str, Any], shard_size: int, desc: str
) -> list[dict[str, Any]]:
    """Encode ``items`` shard by shard into ``directory``, skipping shards already done.

    ``encode`` returns ``(vectors, shard meta, routing rows)``; routing rows (queries only)
    go to ``shard-N.routing.jsonl`` before the shard is written, so a shard json implies them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    infos = []
    starts = range(0, len(items), shard_size)
    for index, start in enumerate(tqdm(starts, desc=desc, unit="shard", disable=None)):
        chunk = items[start : start + shard_size]
        ids = [it.id for it in chunk]
        done = shard_done(directory, index, ids, stamp)
        if done is not None:
            infos.append(done)
            continue
        vectors, meta, routing = encode(chunk)
        if routing:
            write_jsonl(directory / f"{shard_name(index)}.routing.jsonl", routing)
        infos.append(write_shard(directory, index, ids, vectors, {"stamp": stamp, **meta}))
    return infos


def candidate_encode_fn(encoder: Encoder, image_root: Path, batch_size: int) -> EncodeFn:
    """Encode function of candidate shards (timed; no routing)."""

    def encode(chunk: Sequence[EncodeItem]) -> tuple[np.ndarray, dict[str, Any], list[dict[str, Any]]]:
        t0 = time.perf_counter()
        vectors = encoder.encode_candidates(chunk, image_root, batch_size)
        return vectors, {"encode_seconds": time.perf_counter() - t0}, []

    return encode


def query_encode_fn(
    encoder: Encoder, image_root: Path, mode: RoutingMode, max_new_tokens: int, batch_size: int, stem: str
) -> EncodeFn:
    """Encode function of query shards: routed encoding, timed, with one routing row per query."""

    def encode(chunk: Sequence[EncodeItem]) -> tuple[np.ndarray, dict[str, Any], list[dict[str, Any]]]:
        t0 = time.perf_counter()
        enc = encoder.encode_queries(chunk, image_root, mode, max_new_tokens, batch_size)
        seconds = time.perf_counter() - t0
        if not (len(enc.routes) == len(enc.new_tokens) == len(enc.chains) == len(chunk)):
            raise ValueError("encode_queries returned routing lists of the wrong length")
        rows = [
            {"qid": it.id, "task": stem, "route": r, "new_tokens": int(n), "chain": c}
            for it, r, n, c in zip(chunk, enc.routes, enc.new_tokens, enc.chains, strict=True)
        ]
        counts = {r: sum(1 for x in enc.routes if x == r) for r in ROUTES}
        meta = {"encode_seconds": seconds, "routes": counts, "new_tokens": int(sum(enc.new_tokens))}
        return enc.vectors, meta, rows

    return encode


def pool_manifest(base: dict[str, Any], infos: list[dict[str, Any]], dim: int) -> dict[str, Any]:
    """Manifest of a sharded pool or query set from its shard jsons."""
    return {
        **base,
        "dim": dim,
        "count": sum(i["count"] for i in infos),
        "hash": combined_hash([i["sha256"] for i in infos]),
        "shards": [{k: i[k] for k in ("name", "count", "dim", "sha256")} for i in infos],
        "encode_seconds": sum(i["meta"].get("encode_seconds", 0.0) for i in infos),
    }


def query_summary(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Route counts, generated tokens and QPS of a query set from its shard jsons."""
    n = sum(i["count"] for i in infos)
    seconds = sum(i["meta"]["encode_seconds"] for i in infos)
    routes = {r: sum(i["meta"]["routes"][r] for i in infos) for r in ROUTES}
    return {
        "routes": routes,
        "new_tokens": sum(i["meta"]["new_tokens"] for i in infos),
        "qps": n / seconds if seconds > 0 else 0.0,
    }


def export_task_queries(
    encoder: Encoder, task: TestTask, params: Params, paths: Paths, mode: RoutingMode, out: Path
) -> dict[str, Any]:
    """Export the test queries of one task; returns its manifest."""
    root, ex = paths.data_root, params.export
    instructions = parse_instructions(instructions_file(root))
    norm = params.data.normalize_text
    queries = load_queries(query_file(root, "test", task.stem))
    items = [query_item(q, instructions, params.base.seed, norm)[0] for q in queries]
    stamp = {
        "model_id": encoder.model_id,
        "routing": mode,
        "max_new_tokens": ex.max_new_tokens,
        "seed": params.base.seed,
        "normalize_text": norm,
    }
    encode = query_encode_fn(encoder, root, mode, ex.max_new_tokens, ex.batch_size, task.stem)
    infos = export_shards(out, items, encode, stamp, ex.shard_size, f"queries {task.stem}")
    base = {"side": "query", "pool": task.stem, "task_id": task.task_id, "model_id": encoder.model_id, **stamp}
    manifest = {**pool_manifest(base, infos, encoder.dim), **query_summary(infos)}
    write_manifest(out, manifest)
    return manifest


def export_local_pool(
    encoder: Encoder, task: TestTask, params: Params, paths: Paths, out: Path
) -> tuple[dict[str, Any], list[str]]:
    """Export one task's local pool; returns its manifest and its dids in order."""
    pool = load_pool(local_pool_file(paths.data_root, task.stem))
    norm = params.data.normalize_text
    items = [candidate_item(c, task.task_id, norm) for c in pool]
    stamp = {"model_id": encoder.model_id, "task_id": task.task_id, "normalize_text": norm}
    encode = candidate_encode_fn(encoder, paths.data_root, params.export.batch_size)
    infos = export_shards(out, items, encode, stamp, params.export.shard_size, f"pool {task.stem}")
    base = {"side": "candidate", "pool": task.stem, "task_id": task.task_id, "model_id": encoder.model_id}
    manifest = pool_manifest(base, infos, encoder.dim)
    write_manifest(out, manifest)
    return manifest, [it.id for it in items]


def export_union(
    encoder: Encoder, local_dids: dict[str, list[str]], params: Params, paths: Paths, cand_dir: Path
) -> Path:
    """Export union-only candidates (if any) and write the union manifest; returns its path."""
    union_file = global_pool_file(paths.data_root, "test")
    union_pool = load_pool(union_file) if union_file.exists() else None
    if union_pool is None:
        log.warning("%s not found: the union pool is the de-duplicated concatenation of the local pools", union_file)
    members = None if union_pool is None else [c.did for c in union_pool]
    known = {d for dids in local_dids.values() for d in dids}
    extra = [c for c in union_pool or [] if c.did not in known]
    extra_manifest = None
    if extra:
        log.info("%d union-pool candidates are in no local pool: embedding them once", len(extra))
        norm = params.data.normalize_text
        items = [candidate_item(c, _task_for_dataset(c.dataset_id), norm) for c in extra]
        out = cand_dir / "union_extra"
        stamp = {"model_id": encoder.model_id, "task_id": -1, "normalize_text": norm}
        infos = export_shards(
            out,
            items,
            candidate_encode_fn(encoder, paths.data_root, params.export.batch_size),
            stamp,
            params.export.shard_size,
            "pool union_extra",
        )
        write_manifest(
            out,
            pool_manifest(
                {"side": "candidate", "pool": "union_extra", "model_id": encoder.model_id}, infos, encoder.dim
            ),
        )
        extra_manifest = out / "manifest.json"
    return write_union(cand_dir, local_dids, members, extra_manifest, str(union_file) if members is not None else None)


def _task_for_dataset(dataset_id: int) -> int:
    """Task id used to encode a union-only candidate: the first test task of its dataset."""
    return next((t.task_id for t in TEST_TASKS if t.dataset_id == dataset_id), TEST_TASKS[0].task_id)


def write_routing_log(query_dirs: list[Path], out: Path) -> int:
    """Concatenate the per-shard routing rows of every task into ``routing.jsonl``."""
    rows: list[dict[str, Any]] = []
    for d in query_dirs:
        for path in sorted(d.glob("shard-*.routing.jsonl")):
            rows.extend(obj for _, obj in iter_jsonl(path))
    return write_jsonl(out, rows)


def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(params: Params, paths: Paths, routing: str | None = None, encoder: Encoder | None = None) -> dict[str, Any]:
    """Export every present test task's queries and local pool, then the union pool."""
    try:
        mode = routing_mode(routing or params.export.routing)
    except ValueError as err:
        raise DataError("--routing", "option", str(err)) from None
    tasks = present_test_tasks(paths.data_root)
    if not tasks:
        raise DataError(paths.data_root, "query/test", "no test query file found (run `trace download`)")
    if encoder is None:
        from trace_core.model.inference import load_encoder

        encoder = load_encoder(paths.model_dir, _device(params.export.device))
    split_dir = paths.embeddings_dir / "test"
    queries, pools, local_dids = {}, {}, {}
    for task in tasks:
        qdir, pdir = split_dir / "queries" / task.stem, split_dir / "candidates" / task.stem
        m = export_task_queries(encoder, task, params, paths, mode, qdir)
        log.info("%s: %d queries, %.1f q/s, routes %s", task.stem, m["count"], m["qps"], m["routes"])
        queries[task.stem] = str((qdir / "manifest.json").relative_to(paths.embeddings_dir))
        _, local_dids[task.stem] = export_local_pool(encoder, task, params, paths, pdir)
        pools[task.stem] = str((pdir / "manifest.json").relative_to(paths.embeddings_dir))
    union = None
    if params.export.union_pool:
        union = str(
            export_union(encoder, local_dids, params, paths, split_dir / "candidates").relative_to(paths.embeddings_dir)
        )
    n_routed = write_routing_log(
        [split_dir / "queries" / t.stem for t in tasks], paths.embeddings_dir / "routing.jsonl"
    )
    top = {
        "model_id": encoder.model_id,
        "dim": encoder.dim,
        "routing": mode,
        "queries": queries,
        "pools": pools,
        "union": union,
    }
    write_json(paths.embeddings_manifest, top)
    log.info("export done: %d tasks, %d routed queries -> %s", len(tasks), n_routed, paths.embeddings_dir)
    return top
