"""Stage ``index``: one collection per local pool plus the union, from the exported shards.

Milvus collections are named ``trace_<model12>_<pool>_<hash8>`` after the model id and the
pool's shard hash, so two models (or two projects) sharing one server never mix. A build
fills ``<name>_staging`` collections first; only when every pool is built are the old
collections dropped, the staging ones renamed and ``index/manifest.json`` written (last),
so a failed build leaves the previous index and manifest usable. Rebuilding the same
shards recreates the same names (idempotent). A build drops only what is its own: older
collections of the same model and those the previous manifest of this project referenced.
The ``numpy`` backend indexes nothing: its manifest points evaluate at the shards, searched
exactly in memory.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from tqdm import tqdm

from trace_core.config import IndexParams, Params
from trace_core.indexing.backend import NumpyIndex, VectorIndex, check_index_type
from trace_core.indexing.commit import load_export
from trace_core.indexing.shards import iter_chunks, load_embeddings, load_manifest
from trace_core.io import DataError, read_json, write_json
from trace_core.paths import Paths

log = logging.getLogger(__name__)
PREFIX = "trace_"
STAGING = "_staging"
UNION = "union"


def pool_index_params(p: IndexParams, pool: str) -> IndexParams:
    """Index settings of one pool: ``index_type`` for the union pool, ``local_index_type`` for local pools."""
    return p if pool == UNION else p.model_copy(update={"index_type": p.local_index_type})


def _safe(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", text)


def model_prefix(model_id: str | None) -> str:
    """``trace_<first 12 characters of the model id>_``: every collection of one model starts so."""
    return f"{PREFIX}{_safe(model_id or 'unknown')[:12]}_"


def collection_name(model_id: str | None, pool: str, pool_hash: str) -> str:
    """``trace_<model12>_<pool>_<first 8 hex of the shard hash>`` (Milvus-safe characters only)."""
    return f"{model_prefix(model_id)}{_safe(pool)}_{pool_hash[:8]}"


def embedding_pools(paths: Paths) -> dict[str, Path]:
    """``pool -> manifest path`` of every exported candidate pool (the union included)."""
    top = load_export(paths.embeddings_dir)  # refuses a mix of models (an interrupted export)
    pools = {stem: paths.embeddings_dir / rel for stem, rel in top["pools"].items()}
    if top.get("union"):
        pools[UNION] = paths.embeddings_dir / top["union"]
    return pools


def check_pools(pools: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Manifests of the pools, checked to share one model and one dimension."""
    manifests = {stem: load_manifest(p) for stem, p in pools.items()}
    models = {m.get("model_id") for m in manifests.values()}
    if len(models) > 1:
        first = next(iter(manifests))
        stem = next(s for s, m in manifests.items() if m.get("model_id") != manifests[first].get("model_id"))
        raise DataError(
            pools[stem],
            "model_id",
            f"model {manifests[stem].get('model_id')} differs from {first}'s {manifests[first].get('model_id')} "
            "(re-run `trace export`)",
        )
    dims = {m["dim"] for m in manifests.values()}
    if len(dims) > 1:
        first = next(iter(manifests))
        for stem, m in manifests.items():
            if m["dim"] != manifests[first]["dim"]:
                raise DataError(
                    pools[stem], "dim", f"dimension {m['dim']} differs from {first}'s {manifests[first]['dim']}"
                )
    return manifests


def fill(index: VectorIndex, manifest_path: Path, expected: int) -> None:
    """Insert a pool's vectors shard by shard and check the final count."""
    # one bar per pool, cleared when done (leave=False): a terminal keeps one line, not one per pool
    for _, vectors in tqdm(
        iter_chunks(manifest_path), desc=f"index {manifest_path.parent.name}", unit="shard", disable=None, leave=False
    ):
        index.add(vectors)
    if len(index) != expected:
        raise DataError(manifest_path, "count", f"index holds {len(index)} rows, the manifest says {expected}")


def build_milvus(
    client: Any, params: Params, pools: dict[str, Path], manifests: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """Build staging collections, then swap them in; returns ``pool -> collection``."""
    from trace_core.indexing.milvus import MilvusIndex, list_trace_collections, load_all

    model_id = _model_id(manifests)
    for stale in list_trace_collections(client, model_prefix(model_id)):
        if stale.endswith(STAGING):
            client.drop_collection(stale)
    names = {stem: collection_name(model_id, stem, m["hash"]) for stem, m in manifests.items()}
    try:
        built = []
        for stem, name in names.items():
            pp = pool_index_params(params.index, stem)
            built.append(MilvusIndex.create(client, name + STAGING, manifests[stem]["dim"], pp))
            fill(built[-1], pools[stem], manifests[stem]["count"])
        load_all(built)
    except BaseException:
        for name in names.values():
            if client.has_collection(name + STAGING):
                client.drop_collection(name + STAGING)
        raise
    for name in names.values():
        if client.has_collection(name):
            client.drop_collection(name)
        client.rename_collection(name + STAGING, name)
    return names


def _model_id(manifests: dict[str, dict[str, Any]]) -> str | None:
    return next(iter(manifests.values())).get("model_id") if manifests else None


def manifest_uri(params: Params, paths: Paths) -> str:
    """The server URI, or the Lite file relative to the index folder (no machine paths in DVC outputs)."""
    return params.index.uri or paths.milvus_db.relative_to(paths.index_dir).as_posix()


def previous_collections(manifest_path: Path, uri: str) -> set[str]:
    """Collections the previous index manifest at ``manifest_path`` built on ``uri`` (its manifest form).

    Empty when there is none, or it indexed elsewhere or with the numpy backend.
    """
    if not manifest_path.exists():
        return set()
    old = read_json(manifest_path)
    if old.get("backend") != "milvus" or old.get("uri") != uri:
        return set()
    return {e["collection"] for e in old.get("pools", {}).values() if e.get("collection")}


def drop_unreferenced(client: Any, keep: set[str], model_id: str | None, previous: set[str]) -> list[str]:
    """Drop this build's leftovers: the model's other collections and the previous manifest's.

    Collections of other models (another project on the same server) are left alone.
    """
    from trace_core.indexing.milvus import list_trace_collections

    own = set(list_trace_collections(client, model_prefix(model_id)))
    existing = set(client.list_collections())
    dropped = sorted(((own | previous) & existing) - keep)
    for c in dropped:
        client.drop_collection(c)
    return dropped


def index_manifest(
    params: Params, pools: dict[str, Path], manifests: dict[str, dict[str, Any]], names: dict[str, str], paths: Paths
) -> dict[str, Any]:
    """The index manifest: backend, index settings and one entry per pool."""
    p = params.index
    return {
        "backend": p.backend,
        "uri": manifest_uri(params, paths) if p.backend == "milvus" else None,
        "index_type": p.index_type if p.backend == "milvus" else "exact",
        "local_index_type": p.local_index_type if p.backend == "milvus" else "exact",
        "metric": p.metric,
        "model_id": _model_id(manifests),
        "pools": {
            stem: {
                "collection": names.get(stem),
                "count": m["count"],
                "dim": m["dim"],
                "hash": m["hash"],
                "embeddings": str(pools[stem].relative_to(paths.embeddings_dir)),
                "index_type": pool_index_params(p, stem).index_type if p.backend == "milvus" else "exact",
            }
            for stem, m in manifests.items()
        },
    }


def open_index(params: Params, entry: dict[str, Any], manifest_path: Path, client: Any | None) -> VectorIndex:
    """A searchable index of one pool entry of the index manifest."""
    if client is None:
        index = NumpyIndex(entry["dim"], params.index.metric)
        index.add(load_embeddings(manifest_path)[1])
        return index
    from trace_core.indexing.milvus import MilvusIndex

    built_as = params.index.model_copy(update={"index_type": entry.get("index_type", params.index.index_type)})
    return MilvusIndex.open(client, entry["collection"], entry["dim"], built_as)


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Build (or, for numpy, register) the index of every exported pool; manifest last."""
    check_index_type(params.index.index_type, params.index.metric)
    check_index_type(params.index.local_index_type, params.index.metric)
    pools = embedding_pools(paths)
    manifests = check_pools(pools)
    names: dict[str, str] = {}
    if params.index.backend == "milvus":
        from trace_core.indexing.milvus import connect, resolve_uri

        uri = resolve_uri(params.index, paths.milvus_db)
        previous = previous_collections(paths.index_manifest, manifest_uri(params, paths))
        client = connect(uri, params.index.timeout_s)
        try:
            names = build_milvus(client, params, pools, manifests)
            manifest = index_manifest(params, pools, manifests, names, paths)
            write_json(paths.index_manifest, manifest)
            dropped = drop_unreferenced(client, set(names.values()), _model_id(manifests), previous)
        finally:
            client.close()
        kinds = f"local {params.index.local_index_type}, union {params.index.index_type}"
        log.info("built %d collections (%s), dropped %d old ones", len(names), kinds, len(dropped))
    else:
        manifest = index_manifest(params, pools, manifests, names, paths)
        write_json(paths.index_manifest, manifest)
        log.info("numpy backend: %d pools registered for exact search", len(manifests))
    return manifest
