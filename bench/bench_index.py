"""Search QPS and recall@k of Milvus Lite (FLAT, HNSW) vs the exact NumpyIndex, side by side.

Random unit vectors of the model's dimension; recall is measured against NumpyIndex's exact
top-k on the same vectors. Writes JSON to bench/results/bench_index.json.

    python bench/bench_index.py --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from trace_core.config import IndexParams, load_params
from trace_core.indexing.backend import NumpyIndex
from trace_core.indexing.milvus import MilvusIndex, connect
from trace_core.paths import Paths

log = logging.getLogger("bench_index")


def model_dim(params_path: Path) -> int | None:
    """Hidden size of the trained model (its embedding dimension), if one is saved."""
    paths = Paths.from_params(load_params(params_path))
    cfg = paths.model_dir / "config.json"
    if not cfg.exists():
        return None
    c = json.loads(cfg.read_text())
    return int(c.get("text_config", c).get("hidden_size", c.get("hidden_size")))


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):  # bounded temporaries
        block = rng.standard_normal((min(100_000, n - s), dim)).astype(np.float32)
        out[s : s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed_search(index, queries: np.ndarray, k: int, repeats: int) -> tuple[float, np.ndarray]:
    index.search(queries[:8], k)  # warm-up
    best, pos = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, pos = index.search(queries, k)
        best = min(best, time.perf_counter() - t0)
    return len(queries) / best, pos


def recall(pos: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(pos.tolist(), exact.tolist(), strict=True)]))


def bench_size(client, n: int, dim: int, args) -> dict:
    rows, queries = unit(n, dim, 0), unit(args.queries, dim, 1)
    out: dict = {"n": n, "dim": dim, "queries": args.queries, "k": args.k}
    t0 = time.perf_counter()
    exact_index = NumpyIndex(dim)
    exact_index.add(rows)
    out["numpy"] = {"build_s": time.perf_counter() - t0}
    qps, exact = timed_search(exact_index, queries, args.k, args.repeats)
    out["numpy"].update(qps=qps, recall=1.0)
    for index_type in args.index_types.split(","):
        p = IndexParams(index_type=index_type, insert_batch=args.insert_batch, search_batch=args.search_batch)
        t0 = time.perf_counter()
        index = MilvusIndex.create(client, f"bench_{index_type.lower()}_{n}", dim, p)
        index.add(rows)
        index.load()
        build = time.perf_counter() - t0
        efs = [int(e) for e in args.hnsw_ef.split(",")] if index_type == "HNSW" else [None]
        for ef in efs:
            key = f"milvus_{index_type}" + (f"_ef{ef}" if ef else "")
            searcher = MilvusIndex.open(client, index.name, dim, p.model_copy(update={"hnsw_ef": ef} if ef else {}))
            qps, pos = timed_search(searcher, queries, args.k, args.repeats)
            out[key] = {
                "build_s": build,
                "qps": qps,
                "recall": recall(pos, exact),
                "qps_vs_numpy": qps / out["numpy"]["qps"],
            }
            log.info("n=%d %s: %s", n, key, out[key])
        client.drop_collection(index.name)
    log.info("n=%d numpy: %s", n, out["numpy"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated pool sizes")
    ap.add_argument("--dim", type=int, default=None, help="vector dimension (default: the trained model's)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--index-types", default="FLAT,HNSW")
    ap.add_argument("--hnsw-ef", default="64,256", help="HNSW search ef values to try")
    ap.add_argument("--insert-batch", type=int, default=IndexParams().insert_batch)
    ap.add_argument("--search-batch", type=int, default=IndexParams().search_batch)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/bench_index.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    dim = args.dim or model_dim(args.params)
    if dim is None:
        ap.error("no trained model found: pass --dim")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        client = connect(str(Path(tmp) / "bench.db"), 60.0)
        try:
            for n in (int(s) for s in args.sizes.split(",")):
                results.append(bench_size(client, n, dim, args))
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"results": results}, indent=2) + "\n")  # partial results survive
        finally:
            client.close()
    print(json.dumps({"results": results}, indent=2))


if __name__ == "__main__":
    main()
