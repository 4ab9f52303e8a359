"""Vector index benchmark: exact and ANN engines side by side on the same vectors and queries.

Engines (one process, same rows, same queries, same exact ground truth):

* ``numpy`` FLAT: the project's exact :class:`NumpyIndex` (batched matrix product, blocks of 1024 queries);
* ``faiss`` FLAT (``IndexFlatIP``), HNSW (``IndexHNSWFlat``) and IVF_FLAT (``IndexIVFFlat``);
* ``milvus-lite`` FLAT / HNSW / IVF_FLAT through :class:`MilvusIndex` (the index stage's adapter);
* ``milvus-server`` FLAT / HNSW / IVF_FLAT: a Milvus 2.3.5 standalone server started for the run
  (:class:`LocalMilvus`), same adapter.

Vector sets (unit rows, inner product == cosine):

* ``uniform``: i.i.d. Gaussian rows, normalised (uniform on the sphere: the hardest case for ANN);
* ``clustered``: low intrinsic dimension, see :func:`clustered`;
* ``real``: the trained model's exported candidate embeddings (``embeddings/``), tiled with
  noise to the size asked, queries = its exported query embeddings tiled the same way (skipped
  with a note when no export exists; the dimension is the model's).

Each measurement is one row of ``bench/results/bench_index.json``:
``n, dim, vectors, engine, index, params, qps_batched, qps_single, recall_at_10, build_s, memory_mb``.
``qps_batched``: all queries in one call (Milvus: ``--search-batch`` per request);
``qps_single``: ``--single`` queries one call each. ``recall_at_10``: overlap with the exact top 10.
``build_s``: insert + train/build + load until searchable. ``memory_mb``: bytes of the index
structure for numpy/faiss (vectors + graph/lists), the growth of the server's (or, for Milvus
Lite, this process's) resident memory for Milvus (approximate). HNSW rows sweep ``ef``, IVF rows
sweep ``nprobe``; build parameters are in ``params``. ``run`` names the run that measured the row
(its ``started`` in ``runs``): every run adds its rows, earlier runs' rows are kept, so sizes and
engines can be run separately. The markdown table shows, per case, engine and index, the latest
run's rows, and ``x exact`` divides by the exact baseline (NumPy or FAISS FLAT) of the same run.

    python bench/bench_index.py --sizes 10000 --dims 128
    python bench/bench_index.py --sizes 100000 --dims 3584 --vectors uniform,clustered
    python bench/bench_index.py --markdown          # README table from the JSON

Where ``unshare`` allows it the run re-executes itself in a private network namespace (only
loopback), so the Milvus server is reached directly, not through a forwarder.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench_index")
OUT = Path("bench/results/bench_index.json")
K = 10
ENGINES = {
    "numpy": ("numpy", "FLAT"),
    "faiss-flat": ("faiss", "FLAT"),
    "faiss-hnsw": ("faiss", "HNSW"),
    "faiss-ivf": ("faiss", "IVF_FLAT"),
    "lite-flat": ("milvus-lite", "FLAT"),
    "lite-hnsw": ("milvus-lite", "HNSW"),
    "lite-ivf": ("milvus-lite", "IVF_FLAT"),
    "server-flat": ("milvus-server", "FLAT"),
    "server-hnsw": ("milvus-server", "HNSW"),
    "server-ivf": ("milvus-server", "IVF_FLAT"),
}
NETNS_ENV = "TRACE_BENCH_IN_NETNS"


@dataclass
class Row:
    """One measurement (the JSON row)."""

    n: int
    dim: int
    vectors: str
    engine: str
    index: str
    params: dict[str, Any]
    qps_batched: float
    qps_single: float
    recall_at_10: float
    build_s: float
    memory_mb: float
    run: str = ""  # the ``started`` id of the run that measured it (``runs`` in the JSON)


# --- vector sets ---------------------------------------------------------------------------------
def normalise(x: np.ndarray) -> np.ndarray:
    """Unit rows, float32, in place where possible."""
    x = np.asarray(x, dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def uniform(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` Gaussian rows, normalised (uniform directions), built in blocks of 100k."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        out[s : s + 100_000] = normalise(rng.standard_normal((min(100_000, n - s), dim), dtype=np.float32))
    return out


@dataclass(frozen=True)
class ClusterSpec:
    """Parameters of :func:`clustered` (the defaults are the benchmark's)."""

    clusters: int = 1000
    intrinsic_dim: int = 16
    spread: float = 0.35
    noise: float = 0.05
    zipf: float = 1.1


def clustered(n: int, dim: int, seed: int, spec: ClusterSpec, basis_seed: int = 7) -> np.ndarray:
    """Rows of low intrinsic dimension around skewed clusters, like embeddings of real corpora.

    Generator: ``spec.clusters`` centres ``c_j ~ N(0, I_m)`` in ``m = spec.intrinsic_dim``
    dimensions; cluster ``j`` is drawn with probability ``∝ (j + 1) ** -spec.zipf`` (a few large
    clusters, a long tail); a row is ``x = A (c_j + spread · z) + noise · e / sqrt(dim)`` with
    ``z ~ N(0, I_m)``, ``e ~ N(0, I_dim)`` and ``A`` a fixed random orthonormal ``dim × m`` map
    (QR of a Gaussian matrix, seeded by ``basis_seed`` so rows and queries share it), then
    L2-normalised. Queries come from the same generator with another ``seed``.
    """
    m = min(spec.intrinsic_dim, dim)
    basis, _ = np.linalg.qr(np.random.default_rng(basis_seed).standard_normal((dim, m)))  # (dim, m)
    centres = np.random.default_rng(basis_seed + 1).standard_normal((spec.clusters, m))
    weights = (np.arange(spec.clusters) + 1.0) ** -spec.zipf
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 50_000):
        b = min(50_000, n - s)
        which = rng.choice(spec.clusters, size=b, p=weights / weights.sum())
        low = centres[which] + spec.spread * rng.standard_normal((b, m))  # (b, m)
        noise = spec.noise * rng.standard_normal((b, dim), dtype=np.float32) / math.sqrt(dim)
        out[s : s + b] = normalise((low @ basis.T).astype(np.float32) + noise)
    return out


def tiled(base: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    """``n`` rows: ``base`` repeated, each copy moved by Gaussian noise of norm ~``noise``, normalised."""
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        idx = np.arange(s, min(n, s + 100_000)) % len(base)
        jitter = noise * rng.standard_normal((len(idx), dim), dtype=np.float32) / math.sqrt(dim)
        out[s : s + len(idx)] = normalise(base[idx] + jitter)
    return out


def real_base(embeddings_dir: Path) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(candidate rows, query rows, model id) of an export: every local pool and every test query set."""
    from trace_core.indexing.shards import load_embeddings

    top = embeddings_dir / "manifest.json"
    if not top.exists():
        return None
    manifest = json.loads(top.read_text())
    cands = [load_embeddings(embeddings_dir / rel)[1] for rel in manifest["pools"].values()]
    queries = [load_embeddings(embeddings_dir / rel)[1] for rel in manifest["queries"].values()]
    return np.concatenate(cands), np.concatenate(queries), str(manifest.get("model_id", ""))


def vector_set(name: str, n: int, dim: int, n_queries: int, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Rows and queries of one set (``real`` ignores ``dim``: the model's width)."""
    if name == "uniform":
        return uniform(n, dim, 0), uniform(n_queries, dim, 1)
    if name == "clustered":
        spec = ClusterSpec(clusters=args.clusters, intrinsic_dim=args.intrinsic_dim)
        return clustered(n, dim, 0, spec), clustered(n_queries, dim, 1, spec)
    base, queries, _ = args.real_base
    return tiled(base, n, args.real_noise, 0), tiled(queries, n_queries, args.real_noise, 1)


# --- measuring -----------------------------------------------------------------------------------
def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean overlap of the top-k position sets, over queries."""
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), exact.tolist(), strict=True)]))


SearchFn = Callable[[np.ndarray, int], np.ndarray]


def qps_batched(search: SearchFn, queries: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    """Best-of-``repeats`` queries/s of one call over all queries, and its positions."""
    search(queries[:8], K)  # warm-up
    best, positions = math.inf, np.empty(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        positions = search(queries, K)
        best = min(best, time.perf_counter() - t0)
    return len(queries) / best, positions


def qps_single(search: SearchFn, queries: np.ndarray) -> float:
    """Queries/s answering one query per call."""
    search(queries[:1], K)
    t0 = time.perf_counter()
    for i in range(len(queries)):
        search(queries[i : i + 1], K)
    return len(queries) / (time.perf_counter() - t0)


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (Linux /proc), in MiB."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
        todo.extend(children.get(p, []))
    return total


@dataclass
class Case:
    """One vector set at one size, with its exact ground truth."""

    n: int
    dim: int
    vectors: str
    rows: np.ndarray
    queries: np.ndarray
    exact: np.ndarray


def measure(
    case: Case,
    engine: str,
    index: str,
    params: dict[str, Any],
    search: SearchFn,
    args: argparse.Namespace,
    build_s: float,
    memory_mb: float,
) -> Row:
    """Time ``search`` (batched and single) and score it against the exact top 10."""
    qb, pos = qps_batched(search, case.queries, args.repeats)
    qs = qps_single(search, case.queries[: args.single])
    row = Row(
        case.n, case.dim, case.vectors, engine, index, params, qb, qs, recall(pos, case.exact), build_s, memory_mb
    )
    log.info("%s", row)
    return row


# --- engines -----------------------------------------------------------------------------------
def bench_numpy(case: Case, args: argparse.Namespace) -> Iterator[Row]:
    from trace_core.indexing.backend import NumpyIndex

    t0 = time.perf_counter()
    index = NumpyIndex(case.dim)
    index.add(case.rows)
    index.search(case.queries[:1], K)  # concatenates the blocks
    build = time.perf_counter() - t0
    yield measure(case, "numpy", "FLAT", {}, lambda q, k: index.search(q, k)[1], args, build, case.rows.nbytes / 2**20)


def _faiss_search(index: Any) -> SearchFn:
    return lambda q, k: index.search(q, k)[1]


def ivf_nlist(n: int, override: int | None) -> int:
    """IVF lists: ``override``, else ~4·sqrt(n) (the usual rule), at most n/39 for training."""
    return override or max(1, min(int(4 * math.sqrt(n)), n // 39))


def bench_faiss(case: Case, index_type: str, args: argparse.Namespace) -> Iterator[Row]:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    n, d = case.rows.shape
    t0 = time.perf_counter()
    if index_type == "FLAT":
        index = faiss.IndexFlatIP(d)
        index.add(case.rows)
        yield measure(
            case, "faiss", "FLAT", {}, _faiss_search(index), args, time.perf_counter() - t0, n * d * 4 / 2**20
        )
        return
    if index_type == "HNSW":
        index = faiss.IndexHNSWFlat(d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.hnsw_ef_construction
        index.add(case.rows)
        build = time.perf_counter() - t0
        h = index.hnsw
        mem = (n * d * 4 + h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8) / 2**20
        for ef in args.hnsw_ef:
            index.hnsw.efSearch = ef
            params = {"M": args.hnsw_m, "efConstruction": args.hnsw_ef_construction, "ef": ef}
            yield measure(case, "faiss", "HNSW", params, _faiss_search(index), args, build, mem)
        return
    nlist = ivf_nlist(n, args.ivf_nlist)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    train = case.rows[np.random.default_rng(2).choice(n, size=min(n, 256 * nlist), replace=False)]
    index.train(train)
    index.add(case.rows)
    build = time.perf_counter() - t0
    mem = (index.invlists.compute_ntotal() * (d * 4 + 8) + nlist * d * 4) / 2**20
    for nprobe in args.ivf_nprobe:
        if nprobe > nlist:
            continue
        index.nprobe = nprobe
        yield measure(
            case, "faiss", "IVF_FLAT", {"nlist": nlist, "nprobe": nprobe}, _faiss_search(index), args, build, mem
        )


def bench_milvus(
    case: Case, engine: str, index_type: str, client: Any, rss: Callable[[], float], args: argparse.Namespace
) -> Iterator[Row]:
    from trace_core.config import IndexParams
    from trace_core.indexing.milvus import MilvusIndex

    n, d = case.rows.shape
    nlist = min(ivf_nlist(n, args.ivf_nlist), 65536)
    p = IndexParams(
        index_type=index_type,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.hnsw_ef_construction,
        ivf_nlist=nlist,
        insert_batch=args.insert_batch,
        search_batch=args.search_batch,
        timeout_s=120.0,
    )
    name = f"bench_{index_type.lower()}_{case.vectors}_{n}_{d}"
    before = rss()
    t0 = time.perf_counter()
    index = MilvusIndex.create(client, name, d, p)
    index.add(case.rows)
    index.load()
    build = time.perf_counter() - t0
    index.search(case.queries[: args.search_batch], K)  # first searches allocate too
    mem = max(0.0, rss() - before)
    if index_type == "FLAT":
        sweep: list[tuple[dict[str, Any], IndexParams]] = [({}, p)]
    elif index_type == "HNSW":
        sweep = [
            ({"M": p.hnsw_m, "efConstruction": p.hnsw_ef_construction, "ef": ef}, p.model_copy(update={"hnsw_ef": ef}))
            for ef in args.hnsw_ef
            if ef >= K
        ]
    else:
        sweep = [
            ({"nlist": nlist, "nprobe": pr}, p.model_copy(update={"ivf_nprobe": pr}))
            for pr in args.ivf_nprobe
            if pr <= nlist
        ]
    try:
        for params, sp in sweep:
            searcher = MilvusIndex(client, name, d, sp)
            yield measure(
                case, engine, index_type, params, lambda q, k, s=searcher: s.search(q, k)[1], args, build, mem
            )
    finally:
        client.drop_collection(name)


# --- Milvus clients ----------------------------------------------------------------------------
@contextmanager
def milvus_lite() -> Iterator[tuple[Any, Callable[[], float]]]:
    """A Milvus Lite client on a temporary file; memory = this process (Lite serves in-process)."""
    from trace_core.indexing.milvus import connect

    with tempfile.TemporaryDirectory() as tmp:
        client = connect(str(Path(tmp) / "bench.db"), 120.0)
        try:
            yield client, lambda: rss_mb(os.getpid())
        finally:
            client.close()


@contextmanager
def milvus_server(in_netns: bool) -> Iterator[tuple[Any, Callable[[], float]]]:
    """A Milvus server started for the run (no authentication inside a private namespace)."""
    from trace_core.indexing.milvus import connect
    from trace_core.indexing.milvus_server import LocalMilvus, free_port

    with tempfile.TemporaryDirectory() as tmp:
        server = LocalMilvus(
            Path(tmp) / "server",
            free_port(),
            None if in_netns else Path(tmp) / "token",
            "none" if in_netns else "auto",
            Path(".trace/milvus-bin").resolve(),
            session_ttl_s=10,
        )
        server.start()
        try:
            client = connect(server.uri, 120.0, server.token)
            try:
                yield client, lambda: rss_mb(server.proc.pid if server.proc else 0)
            finally:
                client.close()
        finally:
            server.stop(graceful=False)


# --- the run -----------------------------------------------------------------------------------
def case_of(r: dict[str, Any]) -> tuple[Any, ...]:
    """The vectors a row was measured on: (n, dim, vectors)."""
    return r["n"], r["dim"], r["vectors"]


def row_key(r: dict[str, Any]) -> str:
    """Identity of a row in the results file (a run saves after each case: its own rows are replaced)."""
    return json.dumps([r["n"], r["dim"], r["vectors"], r["engine"], r["index"], r["params"], r["run"]], sort_keys=True)


def save(out: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    """Add ``rows`` to ``out`` (this run's earlier save of them replaced, other runs' rows kept), atomically."""
    old = json.loads(out.read_text()) if out.exists() else {}
    kept = [{**r, "run": r.get("run", "")} for r in old.get("rows", []) if "engine" in r]
    new = [{**asdict(r), "run": meta["started"]} for r in rows]
    keys = {row_key(r) for r in new}
    merged = [r for r in kept if row_key(r) not in keys] + new
    merged.sort(key=lambda r: (*case_of(r), r["engine"], r["index"], r["run"], json.dumps(r["params"])))
    runs = [m for m in old.get("runs", []) if isinstance(m, dict) and m.get("started") != meta["started"]] + [meta]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"rows": merged, "runs": runs}, indent=1) + "\n")
    os.replace(tmp, out)


def run_case(case: Case, engines: list[str], clients: dict[str, Any], args: argparse.Namespace) -> Iterator[Row]:
    """Every selected engine on one case."""
    for name in engines:
        family, index_type = ENGINES[name]
        if family == "numpy":
            yield from bench_numpy(case, args)
        elif family == "faiss":
            yield from bench_faiss(case, index_type, args)
        else:
            client, rss = clients[family]
            yield from bench_milvus(case, family, index_type, client, rss, args)


def make_case(name: str, n: int, dim: int, args: argparse.Namespace) -> Case:
    from trace_core.indexing.backend import NumpyIndex

    rows, queries = vector_set(name, n, dim, args.queries, args)
    exact = NumpyIndex(rows.shape[1])
    exact.add(rows)
    return Case(n, rows.shape[1], name, rows, queries, exact.search(queries, K)[1])


def bench(args: argparse.Namespace, in_netns: bool) -> None:
    """Every size x dim x vector set x engine; rows saved after each case (partial runs survive)."""
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S") + f".{time.time_ns() % 10**9:09d}",  # one id per run
        "argv": sys.argv[1:],
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "queries": args.queries,
        "single": args.single,
        "netns": in_netns,
        "notes": [],
    }
    if "real" in args.vectors:
        args.real_base = real_base(args.embeddings)
        if args.real_base is None:
            meta["notes"].append(f"real: skipped, no export at {args.embeddings} (run `trace export`)")
            log.warning("%s", meta["notes"][-1])
            args.vectors = [v for v in args.vectors if v != "real"]
        else:
            base, queries, model_id = args.real_base
            meta["real"] = {
                "model_id": model_id,
                "base_rows": len(base),
                "query_rows": len(queries),
                "noise": args.real_noise,
            }
    families = {ENGINES[e][0] for e in args.engines}
    with ExitStack() as stack:
        clients: dict[str, Any] = {}
        if "milvus-lite" in families:
            clients["milvus-lite"] = stack.enter_context(milvus_lite())
        if "milvus-server" in families:
            clients["milvus-server"] = stack.enter_context(milvus_server(in_netns))
        for n in args.sizes:
            for dim in args.dims:
                for name in args.vectors:
                    if name == "real" and dim != args.dims[0]:
                        continue  # the model's width, once
                    case = make_case(name, n, dim, args)
                    save(args.out, list(run_case(case, args.engines, clients, args)), meta)


# --- markdown ----------------------------------------------------------------------------------
def best_rows(rows: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """Per (n, dim, vectors, engine, index), among its latest run's rows: the fastest batched setting with
    recall >= target, else the most accurate."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((*case_of(r), r["engine"], r["index"]), []).append(r)
    out = []
    for group in groups.values():
        latest = max(r["run"] for r in group)
        group = [r for r in group if r["run"] == latest]
        ok = [r for r in group if r["recall_at_10"] >= target]
        out.append(max(ok, key=lambda r: r["qps_batched"]) if ok else max(group, key=lambda r: r["recall_at_10"]))
    return sorted(out, key=lambda r: (r["n"], r["dim"], r["vectors"], r["engine"], r["index"]))


def exact_rates(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], float]:
    """Batched q/s of the faster exact in-process baseline (NumPy or FAISS FLAT) per (case, run)."""
    exact: dict[tuple[Any, ...], float] = {}
    for r in rows:
        if r["engine"] in ("numpy", "faiss") and r["index"] == "FLAT":
            key = (*case_of(r), r["run"])
            exact[key] = max(exact.get(key, 0.0), r["qps_batched"])
    return exact


def speedup(r: dict[str, Any], exact: dict[tuple[Any, ...], float]) -> str:
    """``x exact`` of a row: over its own run's exact baseline, else the latest run's, marked ``*``."""
    same = exact.get((*case_of(r), r["run"]))
    if same:
        return f"{r['qps_batched'] / same:.1f}"
    other = sorted((run, q) for (n, d, v, run), q in exact.items() if (n, d, v) == case_of(r))
    return f"{r['qps_batched'] / other[-1][1]:.1f}*" if other else "-"


def markdown(rows: list[dict[str, Any]], target: float = 0.95) -> str:
    """The README table: best setting per engine and index; ``x exact`` = batched q/s over the faster exact
    in-process baseline (numpy or faiss FLAT) on the same vectors, in the same run (``*``: another run's)."""
    exact = exact_rates(rows)
    head = (
        "| n | dim | vectors | engine | index | params | q/s batched | q/s single | x exact | recall@10 "
        "| build s | memory MB |\n|" + "---|" * 12
    )
    lines = [head]
    for r in best_rows(rows, target):
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        lines.append(
            f"| {r['n']:,} | {r['dim']} | {r['vectors']} | {r['engine']} | {r['index']} | {params} "
            f"| {r['qps_batched']:,.0f} | {r['qps_single']:,.0f} | {speedup(r, exact)} | {r['recall_at_10']:.3f} "
            f"| {r['build_s']:.1f} | {r['memory_mb']:,.0f} |"
        )
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------
def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=ints, default=[10_000], help="comma-separated pool sizes")
    ap.add_argument("--dims", type=ints, default=[128], help="comma-separated dimensions (real: the model's)")
    ap.add_argument("--vectors", type=lambda s: s.split(","), default=["uniform", "clustered", "real"])
    ap.add_argument("--engines", type=lambda s: s.split(","), default=list(ENGINES), help=", ".join(ENGINES))
    ap.add_argument("--queries", type=int, default=1000, help="queries (batched QPS and recall)")
    ap.add_argument("--single", type=int, default=100, help="queries sent one by one (single QPS)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N for batched QPS")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="faiss OpenMP threads")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-ef-construction", type=int, default=200)
    ap.add_argument("--hnsw-ef", type=ints, default=[16, 32, 64, 128, 256, 512], help="HNSW ef sweep")
    ap.add_argument("--ivf-nlist", type=int, default=None, help="IVF lists (default ~4*sqrt(n))")
    ap.add_argument("--ivf-nprobe", type=ints, default=[1, 4, 8, 16, 32, 64, 128], help="IVF nprobe sweep")
    ap.add_argument("--insert-batch", type=int, default=8192, help="Milvus insert rows (capped at 32 MiB)")
    ap.add_argument("--search-batch", type=int, default=256, help="Milvus queries per search request")
    ap.add_argument("--clusters", type=int, default=1000, help="clustered set: number of clusters")
    ap.add_argument("--intrinsic-dim", type=int, default=16, help="clustered set: intrinsic dimension")
    ap.add_argument("--real-noise", type=float, default=0.1, help="real set: norm of the noise added to copies")
    ap.add_argument("--embeddings", type=Path, default=Path("embeddings"), help="export folder of the real set")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-netns", action="store_true", help="do not re-execute in a private network namespace")
    ap.add_argument("--markdown", action="store_true", help="print the README table of --out and exit")
    ap.add_argument("--target-recall", type=float, default=0.95)
    args = ap.parse_args(argv)
    unknown = [e for e in args.engines if e not in ENGINES]
    if unknown:
        ap.error(f"unknown engines {unknown}; known: {', '.join(ENGINES)}")
    return args


def enter_netns(args: argparse.Namespace) -> bool:
    """Re-execute in a private network namespace (only loopback) when possible; True when inside one."""
    from trace_core.indexing.milvus_server import loopback_up, netns_command

    if os.environ.get(NETNS_ENV) == "1":
        loopback_up()
        return True
    if args.no_netns or not any(ENGINES[e][0] == "milvus-server" for e in args.engines):
        return False
    prefix = netns_command()
    if prefix is None:
        return False
    os.environ[NETNS_ENV] = "1"
    os.execvp(prefix[0], [*prefix, sys.executable, *sys.argv])
    return True  # not reached


def main() -> None:
    args = parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())["rows"], args.target_recall))
        return
    in_netns = enter_netns(args)
    # SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the Milvus server started here is stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    bench(args, in_netns)
    print(markdown(json.loads(args.out.read_text())["rows"], args.target_recall))


if __name__ == "__main__":
    main()
