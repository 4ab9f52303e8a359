"""Real Milvus Lite against the exact NumpyIndex on the same vectors."""

from __future__ import annotations

import numpy as np
import pytest

from trace_core.config import IndexParams
from trace_core.indexing.backend import DimensionError, NumpyIndex
from trace_core.indexing.milvus import MilvusConnectionError, MilvusIndex, build_params, connect

DIM, N, NQ, K = 32, 2000, 50, 10


def _unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = connect(str(tmp_path_factory.mktemp("milvus") / "test.db"), 30.0)
    yield c
    c.close()


def _exact(rows, queries):
    index = NumpyIndex(DIM)
    index.add(rows)
    return index.search(queries, K)


def test_flat_matches_numpy_ids_and_scores(client):
    rows, queries = _unit(N, 0), _unit(NQ, 1)
    p = IndexParams(index_type="FLAT", insert_batch=700, search_batch=16)
    index = MilvusIndex.create(client, "t_flat", DIM, p)
    index.add(rows[:1000])
    index.add(rows[1000:])
    index.load()
    assert len(index) == N
    s, pos = index.search(queries, K)
    es, epos = _exact(rows, queries)
    assert (pos == epos).all()
    np.testing.assert_allclose(s, es, atol=1e-5)
    reopened = MilvusIndex.open(client, "t_flat", DIM, p)
    assert len(reopened) == N and (reopened.search(queries[:3], K)[1] == epos[:3]).all()


def test_hnsw_recall_close_to_exact(client):
    rows, queries = _unit(N, 2), _unit(NQ, 3)
    index = MilvusIndex.create(client, "t_hnsw", DIM, IndexParams(index_type="HNSW"))
    index.add(rows)
    index.load()
    _, pos = index.search(queries, K)
    _, epos = _exact(rows, queries)
    recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(pos.tolist(), epos.tolist(), strict=True)])
    assert recall >= 0.9


def test_small_collection_pads_and_dimension_is_checked(client):
    p = IndexParams()
    index = MilvusIndex.create(client, "t_small", DIM, p)
    index.add(_unit(3, 4))
    index.load()
    s, pos = index.search(_unit(2, 5), 5)
    assert (pos[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
    with pytest.raises(DimensionError):
        index.add(np.ones((2, DIM + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="has dimension 32, expected 64"):
        MilvusIndex.open(client, "t_small", 64, p)


def test_unsupported_index_type_is_rejected_before_milvus():
    with pytest.raises(ValueError, match="unsupported index type 'DISKANN'"):
        build_params(IndexParams.model_construct(index_type="DISKANN", metric="IP"))


def test_unreachable_uri_names_it():
    with pytest.raises(MilvusConnectionError, match=r"http://127.0.0.1:9"):
        connect("http://127.0.0.1:9", 2.0)


def test_lite_file_locked_by_another_process_names_its_pid(tmp_path):
    import subprocess
    import sys

    db = tmp_path / "locked.db"
    holder = "import sys; from pymilvus import MilvusClient; MilvusClient(sys.argv[1]).list_collections(); " \
        "print('ready', flush=True); sys.stdin.read()"  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(MilvusConnectionError, match=rf"locked by PID {proc.pid}\b") as err:
            connect(str(db), 5.0)
        assert "cannot reach" not in str(err.value) and str(db) in str(err.value)
    finally:
        proc.communicate(input="", timeout=60)


def test_flock_holder_reads_proc_locks():
    import os

    from trace_core.indexing.milvus import flock_holder

    text = (
        "1: POSIX  ADVISORY  READ 7087 fe:00:5562438 128 128\n"
        "2: FLOCK  ADVISORY  WRITE 6899 fe:00:2146385 0 EOF\n"
        "2: -> FLOCK  ADVISORY  WRITE 7001 fe:00:2146385 0 EOF\n"
    )
    dev = os.makedev(0xFE, 0)
    assert flock_holder(text, dev, 2146385) == 6899
    assert flock_holder(text, dev, 5562438) is None  # a POSIX lock, not Milvus Lite's flock
    assert flock_holder(text, os.makedev(8, 1), 2146385) is None
