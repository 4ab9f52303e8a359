"""The union pool as a concatenation of local pools (row selections, no new vectors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trace_core.indexing.shards import MANIFEST, combined_hash, load_manifest, write_manifest
from trace_core.io import atomic_open, sha256_file

UNION = "union"


def union_rows(local_dids: dict[str, list[str]], members: list[str] | None) -> dict[str, list[int]]:
    """Rows each local pool contributes: union members at their first occurrence, in pool order.

    Args:
        local_dids: pool stem -> dids in export order (pools in export order).
        members: dids of the union pool file, or None to take every local candidate once.
    """
    member_set = None if members is None else set(members)
    taken: set[str] = set()
    out: dict[str, list[int]] = {}
    for stem, dids in local_dids.items():
        rows = [i for i, d in enumerate(dids) if d not in taken and (member_set is None or d in member_set)]
        taken.update(dids[i] for i in rows)
        out[stem] = rows
    return out


def _part(cand_dir: Path, stem: str, rows: list[int], total: int) -> dict[str, Any]:
    manifest = load_manifest(cand_dir / stem / MANIFEST)
    part: dict[str, Any] = {
        "pool": stem,
        "manifest": f"../{stem}/{MANIFEST}",
        "count": len(rows),
        "hash": manifest["hash"],
        "rows": None,
    }
    if len(rows) < total:
        rows_path = cand_dir / UNION / f"rows-{stem}.npy"
        with atomic_open(rows_path, "wb") as fh:
            np.save(fh, np.asarray(rows, dtype=np.int64), allow_pickle=False)
        part["rows"] = rows_path.name
        part["hash"] = combined_hash([manifest["hash"], sha256_file(rows_path)])
    return part


def write_union(
    cand_dir: Path,
    local_dids: dict[str, list[str]],
    members: list[str] | None,
    extra_manifest: Path | None,
    source: str | None,
) -> Path:
    """Write ``<cand_dir>/union/manifest.json`` referencing the local pools' shards.

    ``extra_manifest`` is the pool of union-only candidates (embedded once), if any.
    """
    (cand_dir / UNION).mkdir(parents=True, exist_ok=True)
    parts = [
        _part(cand_dir, stem, rows, len(local_dids[stem]))
        for stem, rows in union_rows(local_dids, members).items()
        if rows
    ]
    if extra_manifest is not None:
        extra = load_manifest(extra_manifest)
        rel = f"../{extra_manifest.parent.name}/{MANIFEST}"
        parts.append(
            {
                "pool": extra_manifest.parent.name,
                "manifest": rel,
                "count": extra["count"],
                "hash": extra["hash"],
                "rows": None,
            }
        )
    dims = {load_manifest((cand_dir / UNION / p["manifest"]).resolve())["dim"] for p in parts}
    if len(dims) > 1:
        raise ValueError(f"local pools disagree on the dimension: {sorted(dims)}")
    manifest = {
        "side": "candidate",
        "pool": UNION,
        "model_id": load_manifest((cand_dir / UNION / parts[0]["manifest"]).resolve()).get("model_id")
        if parts
        else None,
        "dim": dims.pop() if dims else 0,
        "count": sum(p["count"] for p in parts),
        "hash": combined_hash([p["hash"] for p in parts]),
        "parts": parts,
        "membership": source or "local pools (first occurrence of each did)",
    }
    return write_manifest(cand_dir / UNION, manifest)
