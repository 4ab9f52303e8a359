"""One rank vs N ranks: ``trace export`` of the same model into two folders, then compared.

    python scripts/export_equivalence.py --params params.yaml --nproc 2 --out reports/export_equivalence.json

Runs ``python -m trace_core.cli export`` (one process) and ``python -m torch.distributed.run
--standalone --nproc_per_node N -m trace_core.cli export`` (the launcher the README gives GPU
users; gloo on CPUs), each with ``paths.embeddings_dir`` pointed at its own empty folder and
tracking off; every other path (data, model) comes from ``--params``. The exports are equal
when every manifest matches apart from timings (``encode_seconds``, ``qps``) and hashes, ids
and their order match exactly, vectors differ by at most ``--atol`` and the routing logs
match. Hashes are compared too and reported (``hashes_equal``): they are equal when the
vectors are bit-identical, which is expected with the same thread count on CPUs.

Writes ``{"export_world_size", "export_equal_single_rank", "max_abs_diff", "n_vectors", ...}``
to ``--out``; exit 0 when the exports are equal, 1 when not, 2 when an export failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from trace_core.config import dump_params, load_params
from trace_core.indexing.shards import load_embeddings, load_manifest
from trace_core.io import read_json, write_json

log = logging.getLogger("export_equivalence")
RUN_SPECIFIC = frozenset({"encode_seconds", "qps"})
HASHES = frozenset({"hash", "sha256"})
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def strip(obj: Any, keys: frozenset[str]) -> Any:
    """``obj`` without the given keys at any depth."""
    if isinstance(obj, dict):
        return {k: strip(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [strip(v, keys) for v in obj]
    return obj


def write_variant(params_file: Path, embeddings_dir: Path, out: Path) -> Path:
    """A copy of the params with its own embeddings folder and tracking off."""
    raw = dump_params(load_params(params_file))
    raw["paths"]["embeddings_dir"] = str(embeddings_dir.resolve())
    raw["tracking"]["enabled"] = False
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out


def export_command(params_file: Path, nproc: int) -> list[str]:
    """The export command line: one process, or the distributed launcher with ``nproc`` ranks."""
    stage = ["-m", "trace_core.cli", "export", "-p", str(params_file)]
    if nproc == 1:
        return [sys.executable, *stage]
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return [sys.executable, *launch, *stage]


def run_export(params_file: Path, nproc: int, log_file: Path) -> float:
    """Run one export (output to ``log_file``); returns its wall seconds.

    Raises:
        RuntimeError: the export exited non-zero (the log's tail is in the message).
    """
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.setdefault("OMP_NUM_THREADS", "1")  # the launcher's default per rank; the same for both runs
    t0 = time.perf_counter()
    with log_file.open("w", encoding="utf-8") as fh:
        proc = subprocess.run(export_command(params_file, nproc), env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-20:])
        raise RuntimeError(f"{nproc}-rank export exited {proc.returncode} (log {log_file}):\n{tail}")
    log.info("%d-rank export: %.1f s", nproc, seconds)
    return seconds


def compare_exports(a: Path, b: Path, atol: float) -> dict[str, Any]:
    """Compare two exports' manifests, ids, vectors and routing logs.

    Returns:
        ``equal``, ``max_abs_diff``, ``n_vectors`` (rows of the query sets and pools; the union
        reuses their rows), ``hashes_equal`` and ``mismatches`` (what differed).
    """
    ta, tb = read_json(a / "manifest.json"), read_json(b / "manifest.json")
    mismatches: list[str] = []
    if strip(ta, HASHES) != strip(tb, HASHES):
        mismatches.append("manifest.json")
    max_diff, n_vectors = 0.0, 0
    for rel in sorted(set(ta.get("manifests", {})) & set(tb.get("manifests", {}))):
        ma, mb = load_manifest(a / rel), load_manifest(b / rel)
        if strip(ma, RUN_SPECIFIC | HASHES) != strip(mb, RUN_SPECIFIC | HASHES):
            mismatches.append(f"{rel} (manifest)")
        ids_a, va = load_embeddings(a / rel)
        ids_b, vb = load_embeddings(b / rel)
        if ids_a != ids_b:
            mismatches.append(f"{rel} (ids or their order)")
            continue
        if len(ids_a):
            max_diff = max(max_diff, float(np.abs(va - vb).max()))
        n_vectors += 0 if "parts" in ma else len(ids_a)
    if max_diff > atol:
        mismatches.append(f"vectors (max |diff| {max_diff:.3g} > {atol})")
    if (a / "routing.jsonl").read_bytes() != (b / "routing.jsonl").read_bytes():
        mismatches.append("routing.jsonl")
    return {
        "equal": not mismatches,
        "max_abs_diff": max_diff,
        "n_vectors": n_vectors,
        "hashes_equal": ta.get("manifests") == tb.get("manifests"),
        "mismatches": mismatches,
    }


def main() -> int:
    """Run both exports, compare, write the JSON; the exit code says whether they are equal."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (data and model paths)")
    ap.add_argument("--nproc", type=int, default=2, help="ranks of the distributed export (>= 2)")
    ap.add_argument("--out", type=Path, required=True, help="result JSON")
    ap.add_argument("--atol", type=float, default=1e-3, help="largest allowed |difference| of a vector entry")
    ap.add_argument("--workdir", type=Path, default=None, help="keep both exports and logs here (default: temp)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.nproc < 2:
        ap.error("--nproc must be >= 2")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="export-equivalence-"))
    folders = {n: work / ("single" if n == 1 else f"ranks{n}") for n in (1, args.nproc)}
    try:
        seconds = {}
        for n, folder in folders.items():
            shutil.rmtree(folder, ignore_errors=True)  # start empty: nothing resumed from an earlier run
            params_file = write_variant(args.params, folder / "embeddings", folder / "params.yaml")
            seconds[n] = run_export(params_file, n, folder / "export.log")
        cmp = compare_exports(folders[1] / "embeddings", folders[args.nproc] / "embeddings", args.atol)
    except RuntimeError as err:
        log.error("%s", err)
        return 2
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "export_world_size": args.nproc,
        "export_equal_single_rank": cmp["equal"],
        "max_abs_diff": cmp["max_abs_diff"],
        "n_vectors": cmp["n_vectors"],
        "hashes_equal": cmp["hashes_equal"],
        "atol": args.atol,
        "mismatches": cmp["mismatches"],
        "single_rank_s": seconds[1],
        "world_size_s": seconds[args.nproc],
    }
    write_json(args.out, result)
    log.info("%s", json.dumps(result))
    return 0 if cmp["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
