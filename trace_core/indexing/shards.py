"""Embedding shards: ids + fp16 L2-normalised vectors side by side, manifests written last.

Layout of one pool or query set (``<dir>``)::

    <dir>/shard-00000.ids.npy      (n,) unicode ids
    <dir>/shard-00000.vectors.npy  (n, dim) float16, rows L2-normalised
    <dir>/shard-00000.json         shard meta, written after both arrays (its existence = done)
    <dir>/manifest.json            pool manifest, written after every shard

A union pool holds no vectors of its own: its manifest lists ``parts``, each a local pool
manifest plus an optional ``rows`` file selecting the rows it contributes, so the union is
the concatenation of already-embedded local pools.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trace_core.io import DataError, atomic_open, read_json, sha256_file, write_json

MANIFEST = "manifest.json"


def shard_name(index: int) -> str:
    """``shard-00007`` for index 7."""
    return f"shard-{index:05d}"


def normalise_fp16(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows in float32 and cast to float16.

    Raises:
        ValueError: not a 2-D array, or a row that is all zeros or not finite.
    """
    v = np.asarray(vectors, dtype=np.float32)  # (n, dim)
    if v.ndim != 2:
        raise ValueError(f"vectors must be 2-D (n, dim), got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)  # (n, 1)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} vector(s) are zero or not finite (first row {int(np.argmax(bad))})")
    out: np.ndarray = (v / norms).astype(np.float16)
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def write_shard(
    directory: Path, index: int, ids: Sequence[str], vectors: np.ndarray, meta: dict[str, Any]
) -> dict[str, Any]:
    """Write one shard (arrays first, the shard json last) and return the shard json.

    ``meta`` (model id, routing, timings) is stored under the shard json beside counts and hashes.
    """
    if len(ids) != len(vectors):
        raise ValueError(f"shard {index}: {len(ids)} ids but {len(vectors)} vectors")
    name = shard_name(index)
    ids_path, vec_path = directory / f"{name}.ids.npy", directory / f"{name}.vectors.npy"
    _save_npy(ids_path, np.asarray(list(ids), dtype=np.str_))
    _save_npy(vec_path, normalise_fp16(vectors))
    info = {
        "name": name,
        "count": len(ids),
        "dim": int(vectors.shape[1]),
        "sha256": hashlib.sha256((sha256_file(ids_path) + sha256_file(vec_path)).encode()).hexdigest(),
        "meta": meta,
    }
    write_json(directory / f"{name}.json", info)
    return info


def read_shard_info(directory: Path, index: int) -> dict[str, Any] | None:
    """The shard json of a finished shard, or None when it was never completed."""
    path = directory / f"{shard_name(index)}.json"
    return read_json(path) if path.exists() else None


def shard_done(
    directory: Path, index: int, expected_ids: Sequence[str], stamp: dict[str, Any]
) -> dict[str, Any] | None:
    """The shard json when shard ``index`` is complete, holds ``expected_ids`` and matches ``stamp``."""
    info = read_shard_info(directory, index)
    if info is None or info.get("meta", {}).get("stamp") != stamp or info.get("count") != len(expected_ids):
        return None
    ids_path = directory / f"{shard_name(index)}.ids.npy"
    if not ids_path.exists() or np.load(ids_path, allow_pickle=False).tolist() != list(expected_ids):
        return None
    return info


def check_shard_json(directory: Path, info: dict[str, Any]) -> None:
    """The shard json beside the arrays must be the one the manifest lists (same sha256).

    Export removes a shard's json before it rewrites the arrays, so a missing or different
    json means the shard was rewritten after the manifest, by an export that did not finish.

    Raises:
        DataError: naming the shard json.
    """
    path = directory / f"{info['name']}.json"
    if not path.exists():
        raise DataError(path, "file", "shard json missing: the shard is being rewritten (re-run `trace export`)")
    found = read_json(path)
    if found.get("sha256") != info.get("sha256"):
        model = found.get("meta", {}).get("stamp", {}).get("model_id")
        raise DataError(
            path,
            "sha256",
            f"shard rewritten (by model {model}) after the manifest listed it: an export did not finish "
            "(re-run `trace export`)",
        )


def load_shard(directory: Path, info: dict[str, Any], dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load and check one shard: ids and vectors of equal length, the declared dim and count.

    Raises:
        DataError: naming the shard file and the violated rule.
    """
    name = info["name"]
    ids_path, vec_path = directory / f"{name}.ids.npy", directory / f"{name}.vectors.npy"
    for p in (ids_path, vec_path):
        if not p.exists():
            raise DataError(p, "file", "shard file missing (re-run `trace export`)")
    check_shard_json(directory, info)
    ids = np.load(ids_path, allow_pickle=False)
    vectors = np.load(vec_path, mmap_mode="r", allow_pickle=False)
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        raise DataError(vec_path, "shape", f"{len(ids)} ids in {ids_path.name} but vectors have shape {vectors.shape}")
    if len(ids) != info["count"]:
        raise DataError(ids_path, "length", f"shard json says {info['count']} rows, file has {len(ids)}")
    want = info["dim"] if dim is None else dim
    if vectors.shape[1] != want:
        raise DataError(vec_path, "shape", f"dimension {vectors.shape[1]} differs from the expected {want}")
    return ids, vectors


def combined_hash(hashes: Sequence[str]) -> str:
    """sha256 over an ordered list of hashes (a pool's identity)."""
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` (call only after every shard is written)."""
    path = directory / MANIFEST
    write_json(path, manifest)
    return path


def load_manifest(path: Path) -> dict[str, Any]:
    """Read a pool/query manifest; a missing one means the export did not finish."""
    if not path.exists():
        raise DataError(path, "file", "manifest missing: the export did not complete (run `trace export`)")
    try:
        manifest = read_json(path)
    except json.JSONDecodeError as err:
        raise DataError(path, f"line {err.lineno}", f"malformed manifest JSON ({err.msg})") from None
    for key in ("count", "dim", "hash"):
        if key not in manifest:
            raise DataError(path, f"key '{key}'", "manifest lacks a required key")
    return dict(manifest)


def _iter_part(manifest_path: Path, rows: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of one local pool, optionally restricted to global row positions ``rows``."""
    start = 0
    for ids, vectors in iter_chunks(manifest_path):
        n = len(ids)
        if rows is None:
            yield ids, vectors
        else:
            local = rows[(rows >= start) & (rows < start + n)] - start
            if len(local):
                yield ids[local], np.asarray(vectors[local])
        start += n


def iter_chunks(manifest_path: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream ``(ids, fp16 vectors)`` shard by shard, following union ``parts``."""
    manifest = load_manifest(manifest_path)
    directory = manifest_path.parent
    if "parts" in manifest:
        for part in manifest["parts"]:
            rows = np.load(directory / part["rows"], allow_pickle=False) if part.get("rows") else None
            yield from _iter_part((directory / part["manifest"]).resolve(), rows)
        return
    for info in manifest["shards"]:
        yield load_shard(directory, info, manifest["dim"])


def load_embeddings(manifest_path: Path) -> tuple[list[str], np.ndarray]:
    """All ids and vectors (float32) of a manifest, checked against its count and for duplicates.

    Raises:
        DataError: the total differs from the manifest's count, or an id repeats.
    """
    manifest = load_manifest(manifest_path)
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    for chunk_ids, vectors in iter_chunks(manifest_path):
        ids.extend(chunk_ids.tolist())
        blocks.append(np.asarray(vectors, dtype=np.float32))
    if len(ids) != manifest["count"]:
        raise DataError(manifest_path, "count", f"manifest says {manifest['count']} rows, shards hold {len(ids)}")
    check_unique(ids, manifest_path)
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, manifest["dim"]), dtype=np.float32)
    return ids, vectors


def check_unique(ids: Sequence[str], path: Path) -> None:
    """Raise :class:`DataError` naming the first repeated id."""
    seen: set[str] = set()
    for i, x in enumerate(ids):
        if x in seen:
            raise DataError(path, f"row {i}", f"duplicate id '{x}'")
        seen.add(x)
