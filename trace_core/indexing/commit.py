"""The export's commit record: ``<embeddings>/manifest.json``, written last, checked by readers.

An export is a transaction per model. It starts by writing ``export.pending.json`` (the model
it exports) and removing the manifests of the sets it will rewrite; shards are rewritten in
place; only when every query set and pool is written does the top manifest replace the
previous one (and the pending mark go). The top manifest names the model and, for every
per-set manifest, that set's model id, hash and count. A killed export therefore leaves the
previous top manifest beside a pending mark and sets that are missing or from the new model,
and :func:`load_export` (called by ``trace index`` and ``trace evaluate``) refuses such a mix,
naming the set and both model ids.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trace_core.indexing.shards import load_manifest
from trace_core.io import DataError, read_json, write_json

log = logging.getLogger(__name__)
TOP = "manifest.json"
PENDING = "export.pending.json"
RERUN = "an export was interrupted or mixed two models; re-run `trace export`"


def top_path(embeddings_dir: Path) -> Path:
    """Where the commit record lives."""
    return embeddings_dir / TOP


def commit_entry(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the top manifest records of one per-set manifest."""
    return {"model_id": manifest.get("model_id"), "hash": manifest["hash"], "count": manifest["count"]}


def top_manifest(
    embeddings_dir: Path,
    model_id: str,
    dim: int,
    routing: str,
    listing: dict[str, dict[str, Path]],
    union: Path | None,
    extra: list[Path],
) -> dict[str, Any]:
    """The commit record of a finished export.

    Args:
        embeddings_dir: root the recorded paths are relative to.
        model_id: the encoder's model id (every set must carry it).
        dim: embedding dimension.
        routing: query routing mode.
        listing: ``{"queries": {stem: manifest}, "pools": {stem: manifest}}``.
        union: the union manifest, if any.
        extra: other manifests the export wrote (union-only candidates).
    """
    rel = {side: {stem: str(p.relative_to(embeddings_dir)) for stem, p in d.items()} for side, d in listing.items()}
    every = [p for d in listing.values() for p in d.values()] + ([union] if union else []) + extra
    return {
        "model_id": model_id,
        "dim": dim,
        "routing": routing,
        "queries": rel["queries"],
        "pools": rel["pools"],
        "union": str(union.relative_to(embeddings_dir)) if union else None,
        "manifests": {str(p.relative_to(embeddings_dir)): commit_entry(load_manifest(p)) for p in every},
    }


def write_top(embeddings_dir: Path, top: dict[str, Any]) -> Path:
    """Commit the export (atomic replace; call after every per-set manifest is written)."""
    path = top_path(embeddings_dir)
    write_json(path, top)
    (embeddings_dir / PENDING).unlink(missing_ok=True)
    return path


def shard_models(directory: Path) -> list[str]:
    """Model ids stamped on the finished shards of a folder (to name them in errors)."""
    found = set()
    for p in directory.glob("shard-*[0-9].json"):
        try:
            found.add(str(read_json(p).get("meta", {}).get("stamp", {}).get("model_id")))
        except ValueError:
            continue
    return sorted(found)


def listed(top: dict[str, Any]) -> dict[str, str]:
    """``relative manifest path -> what it is`` (e.g. ``pool mscoco_task0``) of a top manifest."""
    names = {rel: f"query set {stem}" for stem, rel in top.get("queries", {}).items()}
    names.update({rel: f"pool {stem}" for stem, rel in top.get("pools", {}).items()})
    if top.get("union"):
        names[top["union"]] = "pool union"
    for rel in top.get("manifests", {}):
        names.setdefault(rel, f"pool {Path(rel).parent.name}")
    return names


def set_problem(embeddings_dir: Path, rel: str, what: str, top: dict[str, Any]) -> tuple[DataError, bool] | None:
    """Why a listed per-set manifest does not belong to the committed export (None when it does).

    Missing (its shards are being rewritten), from another model, or rewritten since the commit.
    The flag says whether another model's embeddings were found there.
    """
    path, model = embeddings_dir / rel, top.get("model_id")
    if not path.exists():
        models = [m for m in shard_models(path.parent) if m != model]
        found = f"; its shards are from model {', '.join(models)}" if models else ""
        rule = f"{what}: manifest missing while {TOP} names model {model}{found} ({RERUN})"
        return DataError(path, "file", rule), bool(models)
    manifest = load_manifest(path)
    if manifest.get("model_id") != model:
        rule = f"{what} holds embeddings of model {manifest.get('model_id')} but {TOP} names model {model} ({RERUN})"
        return DataError(path, "model_id", rule), True
    want = top.get("manifests", {}).get(rel)
    if want is not None and want["hash"] != manifest["hash"]:
        rule = f"{what} (model {model}) was rewritten after {TOP} was committed ({RERUN})"
        return DataError(path, "hash", rule), False
    return None


def first_problem(embeddings_dir: Path, top: dict[str, Any]) -> DataError | None:
    """The first listed set that does not belong to the export, preferring one holding another model's data."""
    found = [p for rel, what in listed(top).items() if (p := set_problem(embeddings_dir, rel, what, top))]
    return next((err for err, mixed in found if mixed), found[0][0] if found else None)


def begin(embeddings_dir: Path, model_id: str) -> Path:
    """Mark an export of ``model_id`` as under way (removed by :func:`write_top` when it commits)."""
    path = embeddings_dir / PENDING
    write_json(path, {"model_id": model_id})
    return path


def load_export(embeddings_dir: Path) -> dict[str, Any]:
    """The top manifest of a finished export, checked against every manifest it lists.

    Raises:
        DataError: no export; an unfinished export of another model (naming both model ids and
            the first query set or pool it changed); or a set that does not belong to the
            committed export (missing, another model's, or rewritten since).
    """
    path = top_path(embeddings_dir)
    if not path.exists():
        raise DataError(path, "file", "no export manifest (run `trace export`)")
    top = dict(read_json(path))
    if "manifests" not in top:
        log.warning("%s predates the per-set commit record: checking model ids only", path)
    first = first_problem(embeddings_dir, top)
    pending_path = embeddings_dir / PENDING
    pending = read_json(pending_path).get("model_id") if pending_path.exists() else None
    if pending is not None and pending != top.get("model_id"):
        detail = f"; first changed: {first.path}: {first.rule}" if first else ""
        raise DataError(
            pending_path,
            "model_id",
            f"an export of model {pending} did not finish and {TOP} still names model {top.get('model_id')}{detail}",
        )
    if first is not None:
        raise first
    return top
