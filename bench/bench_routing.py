"""Query-encoding QPS of adaptive vs never vs always routing, and export vs bare forward.

Runs the trained model on M-BEIR-mini test queries, modes interleaved in one process so the
ratios are measured side by side (median of ``--repeats``):

* "direct" tasks (datasets the router sends direct): target adaptive >= 0.9x never;
* edit tasks (CIRR, FashionIQ composed edits), where adaptive reasons;
* a mixed, shuffled stream of all 16 tasks: reasoning rows pooled across batches (what
  ``TraceEncoder`` does) vs decoded batch by batch.

Then export throughput (candidate shards written, collate and image loading included) vs
the bare model forward on pre-built batches of the same size. JSON to bench/results/.

    python bench/bench_routing.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

from trace_core.config import load_params
from trace_core.data.dataset import candidate_item, query_item
from trace_core.data.instructions import parse_instructions
from trace_core.data.mbeir import (
    TEST_TASKS_BY_STEM,
    instructions_file,
    load_pool,
    load_queries,
    local_pool_file,
    present_test_tasks,
    query_file,
)
from trace_core.indexing.export import candidate_encode_fn, export_shards
from trace_core.paths import Paths, served_model_dir

log = logging.getLogger("bench_routing")
EDIT_TASKS = ("cirr_task7", "fashioniq_task7")


def query_items(paths: Paths, stems: list[str], seed: int, limit: int, norm: str = "uniir") -> list:
    instructions = parse_instructions(instructions_file(paths.data_root))
    items = []
    for stem in stems:
        queries = load_queries(query_file(paths.data_root, "test", stem))[:limit]
        items += [query_item(q, instructions, seed, norm)[0] for q in queries]  # type: ignore[arg-type]
    return items


def bench_modes(encoder, items, paths: Paths, args, ex) -> dict:
    """Median QPS and route counts per mode, modes interleaved within each repeat."""
    times: dict[str, list[float]] = {m: [] for m in args.modes.split(",")}
    routes: dict[str, dict[str, int]] = {}
    encoder.encode_queries(
        items[: ex.batch_size], paths.data_root, "never", ex.max_new_tokens, ex.batch_size
    )  # warm-up
    for _ in range(args.repeats):
        for mode in times:
            t0 = time.perf_counter()
            enc = encoder.encode_queries(items, paths.data_root, mode, ex.max_new_tokens, ex.batch_size)
            times[mode].append(time.perf_counter() - t0)
            routes[mode] = {r: enc.routes.count(r) for r in ("direct", "reasoned", "forced")}
    out = {m: {"qps": len(items) / statistics.median(t), "seconds": t, "routes": routes[m]} for m, t in times.items()}
    if "never" in out:
        for m in out:
            out[m]["ratio_vs_never"] = out[m]["qps"] / out["never"]["qps"]
    return {"n_queries": len(items), "modes": out}


def bench_pooling(encoder, items, paths: Paths, args, ex) -> dict:
    """Adaptive QPS on a mixed stream: reasoning rows pooled across batches vs decoded per batch.

    ``items`` mixes every task (shuffled), as a serving endpoint sees them. The per-batch
    variant is :func:`routed_encode` on each batch (each batch decodes its own few reasoning
    rows); the pooled one is ``TraceEncoder.encode_queries``. Same routes in both.
    """
    cap, bs = ex.max_new_tokens, ex.batch_size

    def per_batch() -> list[str]:
        routes: list[str] = []
        for s in range(0, len(items), bs):
            routes += encoder._routed(items[s : s + bs], paths.data_root, "adaptive", cap).routes
        return routes

    def pooled() -> list[str]:
        return encoder.encode_queries(items, paths.data_root, "adaptive", cap, bs).routes

    times: dict[str, list[float]] = {"pooled": [], "per_batch": []}
    routes: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, fn in (("pooled", pooled), ("per_batch", per_batch)):
            t0 = time.perf_counter()
            routes[name] = fn()
            times[name].append(time.perf_counter() - t0)
    qps = {k: len(items) / statistics.median(v) for k, v in times.items()}
    return {
        "n_queries": len(items),
        "routes": {r: routes["pooled"].count(r) for r in ("direct", "reasoned", "forced")},
        "same_routes": routes["pooled"] == routes["per_batch"],
        "qps": qps,
        "seconds": times,
        "pooled_vs_per_batch": qps["pooled"] / qps["per_batch"],
    }


def bench_export(encoder, paths: Paths, stem: str, args, ex, norm: str = "uniir") -> dict:
    """Items/s of export_shards (collate, images, shard files) vs bare forwards on pre-built batches."""
    import torch

    from trace_core.model.collate import encode_items

    task = TEST_TASKS_BY_STEM[stem]
    pool = load_pool(local_pool_file(paths.data_root, stem))
    items = [candidate_item(c, task.task_id, norm) for c in pool][: args.limit]  # type: ignore[arg-type]
    bs = ex.batch_size
    proc = encoder.proc
    batches = [
        encoder._to_device(
            encode_items(
                proc,
                items[s : s + bs],
                ["candidate"] * len(items[s : s + bs]),
                [proc.emb_token] * len(items[s : s + bs]),
                [False] * len(items[s : s + bs]),
                paths.data_root,
            )
        )
        for s in range(0, len(items), bs)
    ]
    fwd, exp = [], []
    with torch.inference_mode():
        encoder.model.encode_candidates(batches[0])  # warm-up
    for r in range(args.repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                encoder.model.encode_candidates(b)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        fwd.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            export_shards(
                Path(tmp), items, candidate_encode_fn(encoder, paths.data_root, bs), {"r": r}, ex.shard_size, "bench"
            )
            exp.append(time.perf_counter() - t0)
    f, e = len(items) / statistics.median(fwd), len(items) / statistics.median(exp)
    return {
        "pool": stem,
        "n": len(items),
        "batch_size": bs,
        "bare_forward_items_s": f,
        "export_items_s": e,
        "export_vs_forward": e / f,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--modes", default="adaptive,never,always")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=256, help="queries per task / candidates for the export bench")
    ap.add_argument("--mixed-per-task", type=int, default=16, help="queries per task in the mixed pooling bench")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: params.export.device)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/bench_routing.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    from trace_core.model.inference import load_encoder

    params = load_params(args.params)
    paths, ex = Paths.from_params(params), params.export
    device = args.device or (
        "cuda" if ex.device == "auto" and torch.cuda.is_available() else "cpu" if ex.device == "auto" else ex.device
    )
    encoder = load_encoder(served_model_dir(params, paths), device)
    present = [t.stem for t in present_test_tasks(paths.data_root)]
    reason = set(params.cot_generate.routing.reason_datasets)
    direct = [s for s in present if TEST_TASKS_BY_STEM[s].dataset_id not in reason]
    edit = [s for s in present if s in EDIT_TASKS]
    result = {
        "device": device,
        "model_id": encoder.model_id,
        "batch_size": ex.batch_size,
        "max_new_tokens": ex.max_new_tokens,
    }
    with torch.inference_mode():
        result["direct_tasks"] = {
            "tasks": direct,
            **bench_modes(
                encoder,
                query_items(paths, direct, params.base.seed, args.limit, params.data.normalize_text),
                paths,
                args,
                ex,
            ),
        }
        result["edit_tasks"] = {
            "tasks": edit,
            **bench_modes(
                encoder,
                query_items(paths, edit, params.base.seed, args.limit, params.data.normalize_text),
                paths,
                args,
                ex,
            ),
        }
    with torch.inference_mode():
        # routing overhead alone: only the queries adaptive sends direct, adaptive vs never
        for group in ("direct_tasks", "edit_tasks"):
            items = query_items(paths, result[group]["tasks"], params.base.seed, args.limit, params.data.normalize_text)
            routes = encoder.encode_queries(items, paths.data_root, "adaptive", ex.max_new_tokens, ex.batch_size).routes
            direct_items = [it for it, r in zip(items, routes, strict=True) if r == "direct"]
            if direct_items:
                sub = argparse.Namespace(**{**vars(args), "modes": "adaptive,never"})
                result[group]["routed_direct_only"] = bench_modes(encoder, direct_items, paths, sub, ex)
    with torch.inference_mode():
        mixed = query_items(paths, present, params.base.seed, args.mixed_per_task, params.data.normalize_text)
        random.Random(params.base.seed).shuffle(mixed)
        result["mixed_pooling"] = {"tasks": present, **bench_pooling(encoder, mixed, paths, args, ex)}
    result["export"] = bench_export(encoder, paths, direct[0], args, ex, params.data.normalize_text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
