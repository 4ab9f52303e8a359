"""Stage ``export``: embed test queries (routed) and local pools into resumable shards.

Each local pool is embedded once; the union pool is the concatenation of the local pools
(first occurrence of each did, membership from the union pool file when present) plus any
union-only candidate, never re-embedded. Query shards carry the routing of every query and
the time spent in ``encode_queries``, from which evaluate reports query-encoding QPS.

The export is planned as a list of sets (query sets, pools, union-only candidates), each cut
into shards of ``export.shard_size`` rows. Under a launcher that sets ``RANK``/``WORLD_SIZE``
(see :mod:`trace_core.indexing.distribute`) every rank encodes its share of the shards into the
same folders; after a barrier rank 0 writes each set's manifest, the union, the routing log
and, last, the top manifest (:mod:`trace_core.indexing.commit`). Shard boundaries and
batches do not depend on the number of ranks, so N ranks write the same files as one.
A killed export resumes: finished shards (shard json present, same ids and stamp) are kept.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from trace_core.indexing.commit import begin, top_manifest, write_top
from trace_core.indexing.distribute import Ranks, assign_units, current_ranks, device_for, process_group
from trace_core.indexing.shards import (
    MANIFEST,
    combined_hash,
    shard_done,
    shard_name,
    write_manifest,
    write_shard,
)
from trace_core.indexing.union import UNION, write_union
from trace_core.io import DataError, iter_jsonl, read_json, write_json, write_jsonl
from trace_core.paths import Paths, served_model_dir
from trace_core.types import EncodeItem, RoutingMode, routing_mode

log = logging.getLogger(__name__)
ROUTES = ("direct", "reasoned", "forced")
#: key of the wall-clock encode time an encode function reports; written apart from the outputs.
TIMING_KEY = "encode_seconds"
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


@dataclass(frozen=True)
class ExportSet:
    """One query set or pool to export: its folder, items, stamp, encode function and manifest keys."""

    name: str
    directory: Path
    items: Sequence[EncodeItem]
    stamp: dict[str, Any]
    encode: EncodeFn
    shard_size: int
    base: dict[str, Any] = field(default_factory=dict)
    queries: bool = False

    @property
    def n_shards(self) -> int:
        """Number of shards (the last may be short)."""
        return -(-len(self.items) // self.shard_size)

    def chunk(self, index: int) -> Sequence[EncodeItem]:
        """Items of shard ``index``."""
        return self.items[index * self.shard_size : (index + 1) * self.shard_size]

    def done(self, index: int) -> dict[str, Any] | None:
        """Shard json of shard ``index`` when it is finished for this export, else None."""
        return shard_done(self.directory, index, [it.id for it in self.chunk(index)], self.stamp)


@dataclass(frozen=True)
class UnionPlan:
    """Union membership (None: every local candidate once) and its union-only candidates."""

    members: list[str] | None
    source: str | None
    extra: ExportSet | None


@dataclass(frozen=True)
class ExportPlan:
    """Everything one export writes, in export order; the same on every rank."""

    queries: dict[str, ExportSet]
    pools: dict[str, ExportSet]
    union: UnionPlan | None

    def sets(self) -> list[ExportSet]:
        """Query set and pool of each task in turn, then the union-only candidates."""
        out = [s for stem in self.queries for s in (self.queries[stem], self.pools[stem])]
        return out + ([self.union.extra] if self.union and self.union.extra else [])


def encode_shard(s: ExportSet, index: int) -> dict[str, Any]:
    """Encode and write shard ``index`` of ``s`` unless it is already done; returns its shard json.

    A stale shard json is removed before the arrays are rewritten, so a json always describes
    the arrays beside it; routing rows (queries only) are written before the new json.
    """
    done = s.done(index)
    if done is not None:
        return done
    chunk = s.chunk(index)
    s.directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (s.directory / f"{shard_name(index)}.json").unlink()
    vectors, meta, routing = s.encode(chunk)
    timing = {"rows": len(chunk), "encode_seconds": meta.pop(TIMING_KEY)} if TIMING_KEY in meta else None
    if timing is not None:  # beside the shard but ignored by DVC (.dvcignore): outputs stay reproducible
        write_json(timing_path(s.directory, index), timing)
    if routing:
        write_jsonl(s.directory / f"{shard_name(index)}.routing.jsonl", routing)
    return write_shard(s.directory, index, [it.id for it in chunk], vectors, {"stamp": s.stamp, **meta})


def timing_path(directory: Path, index: int) -> Path:
    """Wall-clock timing of shard ``index`` (``*.timing.json`` is listed in ``.dvcignore``)."""
    return directory / f"{shard_name(index)}.timing.json"


def set_timing(s: ExportSet) -> dict[str, float] | None:
    """Rows, encode seconds and rows/s of a set from its shards' timing files (None if any is missing)."""
    found = [read_json(timing_path(s.directory, i)) for i in range(s.n_shards) if timing_path(s.directory, i).is_file()]
    if len(found) != s.n_shards or not found:
        return None
    rows, seconds = sum(int(t["rows"]) for t in found), sum(float(t["encode_seconds"]) for t in found)
    return {"rows": rows, "encode_seconds": seconds, "qps": rows / seconds if seconds > 0 else 0.0}


def export_shards(
    directory: Path, items: Sequence[EncodeItem], encode: EncodeFn, stamp: dict[str, Any], shard_size: int, desc: str
) -> list[dict[str, Any]]:
    """Encode ``items`` shard by shard into ``directory`` in this process, skipping shards already done.

    ``encode`` returns ``(vectors, shard meta, routing rows)``; routing rows (queries only)
    go to ``shard-N.routing.jsonl`` before the shard is written, so a shard json implies them.
    """
    s = ExportSet(desc, directory, items, stamp, encode, shard_size)
    return [encode_shard(s, i) for i in tqdm(range(s.n_shards), desc=desc, unit="shard", disable=None)]


def candidate_encode_fn(encoder: Encoder, image_root: Path, batch_size: int) -> EncodeFn:
    """Encode function of candidate shards (timed; no routing)."""

    def encode(chunk: Sequence[EncodeItem]) -> tuple[np.ndarray, dict[str, Any], list[dict[str, Any]]]:
        t0 = time.perf_counter()
        vectors = encoder.encode_candidates(chunk, image_root, batch_size)
        return vectors, {TIMING_KEY: time.perf_counter() - t0}, []

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
        meta = {TIMING_KEY: seconds, "routes": counts, "new_tokens": int(sum(enc.new_tokens))}
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
    }


def query_summary(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Route counts and generated tokens of a query set from its shard jsons (timings live apart)."""
    routes = {r: sum(i["meta"]["routes"][r] for i in infos) for r in ROUTES}
    return {"routes": routes, "new_tokens": sum(i["meta"]["new_tokens"] for i in infos)}


# --- the plan: every set of the export, built identically on every rank -----------------------
def query_set(
    encoder: Encoder, task: TestTask, params: Params, paths: Paths, mode: RoutingMode, out: Path
) -> ExportSet:
    """The test queries of one task (instruction per query from the seed)."""
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
    base = {"side": "query", "pool": task.stem, "task_id": task.task_id, "model_id": encoder.model_id, **stamp}
    return ExportSet(f"queries {task.stem}", out, items, stamp, encode, ex.shard_size, base, queries=True)


def pool_set(encoder: Encoder, task: TestTask, params: Params, paths: Paths, out: Path) -> ExportSet:
    """One task's local pool."""
    norm = params.data.normalize_text
    items = [candidate_item(c, task.task_id, norm) for c in load_pool(local_pool_file(paths.data_root, task.stem))]
    stamp = {"model_id": encoder.model_id, "task_id": task.task_id, "normalize_text": norm}
    encode = candidate_encode_fn(encoder, paths.data_root, params.export.batch_size)
    base = {"side": "candidate", "pool": task.stem, "task_id": task.task_id, "model_id": encoder.model_id}
    return ExportSet(f"pool {task.stem}", out, items, stamp, encode, params.export.shard_size, base)


def union_plan(
    encoder: Encoder, local_dids: dict[str, list[str]], params: Params, paths: Paths, cand_dir: Path
) -> UnionPlan:
    """Union membership from the union pool file (when present) and its candidates in no local pool."""
    union_file = global_pool_file(paths.data_root, "test")
    union_pool = load_pool(union_file) if union_file.exists() else None
    if union_pool is None:
        log.warning("%s not found: the union pool is the de-duplicated concatenation of the local pools", union_file)
        return UnionPlan(None, None, None)
    known = {d for dids in local_dids.values() for d in dids}
    extra = [c for c in union_pool if c.did not in known]
    extra_set = None
    if extra:
        norm = params.data.normalize_text
        items = [candidate_item(c, _task_for_dataset(c.dataset_id), norm) for c in extra]
        stamp = {"model_id": encoder.model_id, "task_id": -1, "normalize_text": norm}
        encode = candidate_encode_fn(encoder, paths.data_root, params.export.batch_size)
        base = {"side": "candidate", "pool": "union_extra", "model_id": encoder.model_id}
        out = cand_dir / "union_extra"
        extra_set = ExportSet("pool union_extra", out, items, stamp, encode, params.export.shard_size, base)
    source = union_file.relative_to(paths.data_root).as_posix()  # no machine path in the DVC output
    return UnionPlan([c.did for c in union_pool], source, extra_set)


def _task_for_dataset(dataset_id: int) -> int:
    """Task id used to encode a union-only candidate: the first test task of its dataset."""
    return next((t.task_id for t in TEST_TASKS if t.dataset_id == dataset_id), TEST_TASKS[0].task_id)


def export_plan(
    encoder: Encoder, tasks: Sequence[TestTask], params: Params, paths: Paths, mode: RoutingMode
) -> ExportPlan:
    """Every set of the export, from the data alone (no encoding), in export order."""
    split_dir = paths.embeddings_dir / "test"
    queries = {t.stem: query_set(encoder, t, params, paths, mode, split_dir / "queries" / t.stem) for t in tasks}
    pools = {t.stem: pool_set(encoder, t, params, paths, split_dir / "candidates" / t.stem) for t in tasks}
    union = None
    if params.export.union_pool:
        local_dids = {stem: [it.id for it in s.items] for stem, s in pools.items()}
        union = union_plan(encoder, local_dids, params, paths, split_dir / "candidates")
    return ExportPlan(queries, pools, union)


# --- the three phases: invalidate (rank 0), encode (every rank), merge (rank 0) -------------------
def invalidate_stale(plan: ExportPlan, cand_dir: Path) -> list[Path]:
    """Remove the manifest of every set that this export will (re)write, before any shard changes.

    A manifest then always describes finished shards of one model; the union manifest goes
    when any set changes. The top manifest stays: it is the last commit, which readers check.
    """
    removed = []
    for s in plan.sets():
        path = s.directory / MANIFEST
        if path.exists() and any(s.done(i) is None for i in range(s.n_shards)):
            path.unlink()
            removed.append(path)
    union = cand_dir / UNION / MANIFEST
    if removed and union.exists():
        union.unlink()
        removed.append(union)
    if removed:
        log.info("export changes %d set(s): their manifests were removed until it completes", len(removed))
    return removed


def encode_rank(sets: Sequence[ExportSet], ranks: Ranks) -> int:
    """Encode this rank's share of every set's shards (balanced by rows); returns how many it owns."""
    units = [(k, i) for k, s in enumerate(sets) for i in range(s.n_shards)]
    owners = assign_units([len(sets[k].chunk(i)) for k, i in units], ranks.world_size)
    mine = [u for u, owner in zip(units, owners, strict=True) if owner == ranks.rank]
    rows = sum(len(sets[k].chunk(i)) for k, i in mine)
    level = logging.INFO if ranks.world_size > 1 else logging.DEBUG
    log.log(
        level, "rank %d of %d: %d of %d shards (%d rows)", ranks.rank, ranks.world_size, len(mine), len(units), rows
    )
    desc = "export" if ranks.world_size == 1 else f"export rank {ranks.rank}/{ranks.world_size}"
    for k, i in tqdm(mine, desc=desc, unit="shard", disable=None):
        encode_shard(sets[k], i)
    return len(mine)


def finish_set(s: ExportSet, dim: int) -> Path:
    """Write the manifest of a set whose shards every rank has written.

    Raises:
        DataError: a shard that no rank finished (naming its shard json).
    """
    infos = []
    for i in range(s.n_shards):
        info = s.done(i)
        if info is None:
            path = s.directory / f"{shard_name(i)}.json"
            raise DataError(path, s.name, "shard missing or stale after every rank finished (re-run `trace export`)")
        infos.append(info)
    manifest = pool_manifest(s.base, infos, dim)
    if s.queries:
        manifest.update(query_summary(infos))
        log.debug("%s: %d rows, routes %s", s.name, manifest["count"], manifest["routes"])
    return write_manifest(s.directory, manifest)


def write_routing_log(query_dirs: list[Path], out: Path) -> int:
    """Concatenate the per-shard routing rows of every task into ``routing.jsonl``."""
    rows: list[dict[str, Any]] = []
    for d in query_dirs:
        for path in sorted(d.glob("shard-*.routing.jsonl")):
            rows.extend(obj for _, obj in iter_jsonl(path))
    return write_jsonl(out, rows)


def export_timings(plan: ExportPlan) -> dict[str, Any]:
    """Per-task query and pool encoding throughput of this workspace's export (``metrics/timings/export.json``)."""
    queries = {stem: set_timing(s) for stem, s in plan.queries.items()}
    pools = {stem: set_timing(s) for stem, s in plan.pools.items()}
    known = [t for t in queries.values() if t]
    rows, secs = sum(t["rows"] for t in known), sum(t["encode_seconds"] for t in known)
    return {"queries": queries, "pools": pools, "query_qps": rows / secs if secs > 0 else None}


def merge(plan: ExportPlan, encoder: Encoder, mode: RoutingMode, paths: Paths) -> dict[str, Any]:
    """Rank 0 after every rank's shards: set manifests, union, routing log, then the top manifest."""
    queries, pools = {}, {}
    for stem in plan.queries:
        queries[stem] = finish_set(plan.queries[stem], encoder.dim)
        pools[stem] = finish_set(plan.pools[stem], encoder.dim)
    union, extra = None, []
    if plan.union is not None:
        extra = [finish_set(plan.union.extra, encoder.dim)] if plan.union.extra else []
        local_dids = {stem: [it.id for it in s.items] for stem, s in plan.pools.items()}
        cand_dir = paths.embeddings_dir / "test" / "candidates"
        union = write_union(cand_dir, local_dids, plan.union.members, extra[0] if extra else None, plan.union.source)
    n_routed = write_routing_log([s.directory for s in plan.queries.values()], paths.embeddings_dir / "routing.jsonl")
    listing = {"queries": queries, "pools": pools}
    top = top_manifest(paths.embeddings_dir, encoder.model_id, encoder.dim, mode, listing, union, extra)
    write_top(paths.embeddings_dir, top)
    write_json(paths.timings_file("export"), export_timings(plan))
    log.info("export done: %d tasks, %d routed queries -> %s", len(queries), n_routed, paths.embeddings_dir)
    return top


def _load_encoder(params: Params, paths: Paths, ranks: Ranks) -> Encoder:
    import torch

    from trace_core.model.inference import load_encoder

    device = device_for(params.export.device, ranks, torch.cuda.is_available())
    return load_encoder(served_model_dir(params, paths), device, params.export.num_workers)


def run(params: Params, paths: Paths, routing: str | None = None, encoder: Encoder | None = None) -> dict[str, Any]:
    """Export every present test task's queries and local pool, then the union pool (any number of ranks)."""
    try:
        mode = routing_mode(routing or params.export.routing)
    except ValueError as err:
        raise DataError("--routing", "option", str(err)) from None
    tasks = present_test_tasks(paths.data_root)
    if not tasks:
        raise DataError(paths.data_root, "query/test", "no test query file found (run `trace download`)")
    ranks = current_ranks()
    if encoder is None:
        encoder = _load_encoder(params, paths, ranks)
    plan = export_plan(encoder, tasks, params, paths, mode)
    with process_group(ranks, params.export.barrier_timeout_s) as barrier:
        if ranks.is_main:
            begin(paths.embeddings_dir, encoder.model_id)
            invalidate_stale(plan, paths.embeddings_dir / "test" / "candidates")
        barrier()
        encode_rank(plan.sets(), ranks)
        barrier()
        if ranks.is_main:
            merge(plan, encoder, mode, paths)
        barrier()
    return dict(read_json(paths.embeddings_manifest))
