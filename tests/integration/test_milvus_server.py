"""The index stage against a real Milvus standalone server (``index.uri``), one per session.

Same exported pools indexed three ways (server, Milvus Lite, exact NumPy): identical top-k
(FLAT). Then: re-indexing is idempotent, two models on one server never mix, inserts larger
than one gRPC message are batched, and the index survives a server crash + restart. The
restart test comes last: it restarts the session's server.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from export_doubles import DIM, KeyEncoder, make_layout

from trace_core.config import IndexParams, Params
from trace_core.evaluation import evaluate
from trace_core.indexing import build_index, export
from trace_core.indexing.backend import NumpyIndex
from trace_core.indexing.milvus import (
    MAX_INSERT_BYTES,
    MilvusConnectionError,
    MilvusIndex,
    connect,
    rows_per_insert,
)
from trace_core.indexing.shards import load_embeddings
from trace_core.paths import Paths

pytestmark = pytest.mark.milvus_server
K = 5


class OtherEncoder(KeyEncoder):
    """A second model: other id, other vectors for the same items."""

    model_id = "other-model-7"

    @staticmethod
    def _vec(key: str) -> np.ndarray:
        seed = int(hashlib.sha256(f"other/{key}".encode()).hexdigest()[:8], 16)
        v = np.random.default_rng(seed).standard_normal(DIM)
        return (v / np.linalg.norm(v)).astype(np.float32)


def _workspace(root: Path, uri: str | None, encoder: KeyEncoder) -> tuple[Params, Paths]:
    make_layout(root / "data")
    params = Params.model_validate(
        {
            "paths": {"data_root": "data"},
            "export": {"shard_size": 4, "batch_size": 2},
            "tracking": {"enabled": False},
            "index": {"uri": uri, "search_batch": 3, "timeout_s": 20.0},
        }
    )
    paths = Paths.from_params(params, root)
    export.run(params, paths, encoder=encoder)
    return params, paths


def _search_all(params: Params, paths: Paths, manifest: dict, queries: np.ndarray) -> dict[str, np.ndarray]:
    """Top-K positions of ``queries`` in every pool of an index manifest (the evaluate code path)."""
    searcher = evaluate.Searcher(params, paths, manifest)
    try:
        return {pool: searcher.get(pool)[0].search(queries, K)[1] for pool in manifest["pools"]}
    finally:
        searcher.close()


def _queries(paths: Paths, n: int = 20) -> np.ndarray:
    """The exported query vectors plus random unit vectors."""
    q = [load_embeddings(p)[1] for p in sorted((paths.embeddings_dir / "test/queries").glob("*/manifest.json"))]
    extra = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    return np.concatenate([*q, extra / np.linalg.norm(extra, axis=1, keepdims=True)])


def _assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for pool, positions in got.items():
        np.testing.assert_array_equal(positions, expected[pool], err_msg=pool)


@pytest.fixture(scope="module")
def model_a(milvus_server, tmp_path_factory):
    """Model A's pools exported and indexed on the server (the token only in the environment)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRACE_MILVUS_TOKEN", milvus_server.token)
        params, paths = _workspace(tmp_path_factory.mktemp("model_a"), milvus_server.uri, KeyEncoder())
        manifest = build_index.run(params, paths)
        assert milvus_server.token not in paths.index_manifest.read_text()
        yield params, paths, manifest, _search_all(params, paths, manifest, _queries(paths))


def test_server_runs_isolated_and_requires_the_token(milvus_server, model_a):
    if milvus_server.ready["isolation"] == "netns":  # its namespace holds loopback only
        pid = milvus_server.ready["pid"]
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        devices = [line.split(":")[0].strip() for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]]
        assert devices == ["lo"]
    assert milvus_server.ready["auth"] is True
    with pytest.raises(MilvusConnectionError, match="token not set"):
        connect(milvus_server.uri, 5.0, token="")
    with pytest.raises(MilvusConnectionError, match="token set"):
        connect(milvus_server.uri, 5.0, token="root:wrong-password")
    connect(milvus_server.uri, 5.0).close()  # TRACE_MILVUS_TOKEN from the environment


def test_flat_on_server_equals_lite_and_exact_numpy(model_a, tmp_path):
    params, paths, manifest, server_hits = model_a
    assert manifest["uri"] == params.index.uri and manifest["index_type"] == "FLAT"
    queries = _queries(paths)
    lite_params = params.model_copy(update={"index": params.index.model_copy(update={"uri": None})})
    lite_paths = Paths.from_params(
        params.model_copy(update={"paths": params.paths.model_copy(update={"index_dir": str(tmp_path / "lite")})}),
        paths.data_root.parent,
    )
    lite_manifest = build_index.run(lite_params, lite_paths)
    lite_hits = _search_all(lite_params, lite_paths, lite_manifest, queries)
    assert set(server_hits) == {"mscoco_task0", "cirr_task7", "union"}
    for pool, entry in manifest["pools"].items():
        exact = NumpyIndex(DIM)
        exact.add(load_embeddings(paths.embeddings_dir / entry["embeddings"])[1])
        expected = exact.search(queries, K)[1]
        np.testing.assert_array_equal(server_hits[pool], expected, err_msg=pool)
        np.testing.assert_array_equal(lite_hits[pool], expected, err_msg=pool)
    # the whole evaluate stage scores the same on the server and on Milvus Lite
    assert evaluate.run(params, paths)["local"] == evaluate.run(lite_params, lite_paths)["local"]


def test_reindexing_is_idempotent(model_a):
    params, paths, manifest, hits = model_a
    client = connect(params.index.uri, 20.0)
    try:
        before = sorted(client.list_collections())
        again = build_index.run(params, paths)
        assert again == manifest
        assert sorted(client.list_collections()) == before
        for entry in again["pools"].values():
            assert len(MilvusIndex.open(client, entry["collection"], DIM, params.index)) == entry["count"]
    finally:
        client.close()
    _assert_same(_search_all(params, paths, again, _queries(paths)), hits)


def test_two_models_on_one_server_never_mix(model_a, tmp_path):
    params, paths, manifest, hits = model_a
    other_params, other_paths = _workspace(tmp_path / "model_b", params.index.uri, OtherEncoder())
    other = build_index.run(other_params, other_paths)
    names_a = {e["collection"] for e in manifest["pools"].values()}
    names_b = {e["collection"] for e in other["pools"].values()}
    assert all(n.startswith("trace_test_key_enc_") for n in names_a)
    assert all(n.startswith("trace_other_model__") for n in names_b)
    client = connect(params.index.uri, 20.0)
    try:
        assert names_a | names_b <= set(client.list_collections())  # B's build left A's collections
    finally:
        client.close()
    queries = _queries(paths)
    _assert_same(_search_all(params, paths, manifest, queries), hits)
    b_hits = _search_all(other_params, other_paths, other, queries)
    assert any(not np.array_equal(b_hits[p], hits[p]) for p in hits)  # B answers from B's vectors


def test_inserts_larger_than_one_grpc_message_are_batched(milvus_server, model_a):
    dim, n = 1024, 17_000  # 69.6 MB of float32: above the proxy's 64 MiB receive limit
    assert n * dim * 4 > 64 * 2**20
    p = IndexParams(insert_batch=1_000_000, timeout_s=60.0)  # the batch size alone would send one message
    assert rows_per_insert(dim, p.insert_batch) * dim * 4 <= MAX_INSERT_BYTES
    rows = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    client = connect(milvus_server.uri, 60.0)
    try:
        index = MilvusIndex.create(client, "t_big_insert", dim, p)
        with pytest.raises(Exception, match="(?i)larger than max|message"):  # what an unbatched insert meets
            client.insert("t_big_insert", [{"pos": i, "vector": r} for i, r in enumerate(rows)])
        index.add(rows)
        index.load()
        assert len(index) == n and client.get_collection_stats("t_big_insert")["row_count"] == n
        probe = [0, 8191, 8192, n - 1]  # rows on both sides of a request boundary
        _, pos = index.search(rows[probe], 1)
        assert pos[:, 0].tolist() == probe
        client.drop_collection("t_big_insert")
    finally:
        client.close()


def test_search_after_a_server_restart(milvus_server, model_a):
    params, paths, manifest, hits = model_a
    milvus_server.restart(graceful=False)  # a crash: nothing gets to flush on the way down
    _assert_same(_search_all(params, paths, manifest, _queries(paths)), hits)
