"""Shards (fp16, manifests, resume checks), the union row selection and the exact index."""

from __future__ import annotations

import numpy as np
import pytest

from trace_core.indexing.backend import DimensionError, NumpyIndex, check_index_type, top_k
from trace_core.indexing.shards import (
    check_unique,
    combined_hash,
    load_embeddings,
    load_shard,
    normalise_fp16,
    shard_done,
    write_manifest,
    write_shard,
)
from trace_core.indexing.union import union_rows
from trace_core.io import DataError, read_json


def _vecs(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_normalise_fp16_unit_rows_and_rejects_zero():
    v = normalise_fp16(_vecs(5) * 7)
    assert v.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(v.astype(np.float32), axis=1), 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="zero or not finite"):
        normalise_fp16(np.zeros((2, 4)))


def _pool(tmp_path, n=10, shard=4, dim=8):
    infos = []
    ids = [f"9:{i + 1}" for i in range(n)]
    vecs = _vecs(n, dim)
    for index, start in enumerate(range(0, n, shard)):
        infos.append(
            write_shard(tmp_path, index, ids[start : start + shard], vecs[start : start + shard], {"stamp": {"m": 1}})
        )
    manifest = {"dim": dim, "count": n, "hash": combined_hash([i["sha256"] for i in infos]), "shards": infos}
    return write_manifest(tmp_path, manifest), ids, vecs


def test_round_trip_and_resume_checks(tmp_path):
    path, ids, vecs = _pool(tmp_path)
    got_ids, got = load_embeddings(path)
    assert got_ids == ids
    np.testing.assert_allclose(got, vecs / np.linalg.norm(vecs, axis=1, keepdims=True), atol=2e-3)
    assert shard_done(tmp_path, 1, ids[4:8], {"m": 1}) is not None
    assert shard_done(tmp_path, 1, ids[4:8], {"m": 2}) is None  # other model: redo
    assert shard_done(tmp_path, 1, ids[3:7], {"m": 1}) is None  # other ids: redo
    assert shard_done(tmp_path, 3, ids[8:], {"m": 1}) is None  # never written


def test_length_mismatch_names_the_shard_file(tmp_path):
    path, ids, _ = _pool(tmp_path)
    np.save(tmp_path / "shard-00001.ids.npy", np.asarray(ids[4:7]))
    with pytest.raises(DataError, match=r"shard-00001.vectors.npy:shape: 3 ids"):
        load_embeddings(path)


def test_dimension_mismatch_and_duplicates(tmp_path):
    path, ids, _ = _pool(tmp_path)
    info = read_json(tmp_path / "shard-00000.json")
    with pytest.raises(DataError, match="dimension 8 differs from the expected 16"):
        load_shard(tmp_path, info, 16)
    with pytest.raises(DataError, match="row 2: duplicate id '9:1'"):
        check_unique(["9:1", "9:2", "9:1"], path)
    np.save(tmp_path / "shard-00001.ids.npy", np.asarray(["9:1", "9:6", "9:7", "9:8"]))
    with pytest.raises(DataError, match="duplicate id '9:1'"):
        load_embeddings(path)


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="export did not complete"):
        load_embeddings(tmp_path / "manifest.json")


def test_union_rows_take_first_occurrence_and_membership():
    local = {"a": ["1:1", "1:2", "1:3"], "b": ["1:3", "2:1"], "c": ["3:1"]}
    assert union_rows(local, None) == {"a": [0, 1, 2], "b": [1], "c": [0]}
    assert union_rows(local, ["1:3", "2:1", "1:1"]) == {"a": [0, 2], "b": [1], "c": []}


def test_top_k_sorted_ties_by_position_and_padding():
    scores = np.array([[0.1, 0.9, 0.5, 0.9]], dtype=np.float32)
    s, p = top_k(scores, 3)
    assert p.tolist() == [[1, 3, 2]] and s[0, 0] == pytest.approx(0.9)
    s, p = top_k(scores, 6)
    assert p.tolist() == [[1, 3, 2, 0, -1, -1]] and np.isneginf(s[0, 4:]).all()


def test_numpy_index_matches_brute_force():
    rows, queries = _vecs(300, 16, 1), _vecs(20, 16, 2)
    index = NumpyIndex(16, block=7)
    index.add(rows[:100])
    index.add(rows[100:])
    assert len(index) == 300
    s, p = index.search(queries, 10)
    expected = np.argsort(-(queries @ rows.T), axis=1, kind="stable")[:, :10]
    assert (p == expected).all()
    np.testing.assert_allclose(s, np.take_along_axis(queries @ rows.T, expected, axis=1), rtol=1e-5)
    with pytest.raises(DimensionError, match="index dimension is 16"):
        index.search(_vecs(2, 8), 3)


def test_unsupported_index_type_rejected():
    with pytest.raises(ValueError, match="unsupported index type 'IVF_PQ'"):
        check_index_type("IVF_PQ", "IP")
    with pytest.raises(ValueError, match="unsupported metric"):
        check_index_type("FLAT", "L2")


def test_numpy_index_bounds_the_scores_it_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large pools are scored a few queries at a time; the result equals the one-block search."""
    from trace_core.indexing import backend

    assert backend.query_block(1024, 10_000) == 1024
    assert backend.query_block(1024, 1_000_000) == 2**26 // 1_000_000 == 67
    assert backend.query_block(1024, 10**9) == 1  # never zero
    rng = np.random.default_rng(0)
    rows, queries = rng.standard_normal((500, 8)).astype(np.float32), rng.standard_normal((37, 8)).astype(np.float32)
    index = NumpyIndex(8)
    index.add(rows)
    whole = index.search(queries, 5)
    monkeypatch.setattr(backend, "SCORE_BUDGET", 3 * 500)  # three queries per block
    assert backend.query_block(1024, 500) == 3
    small = index.search(queries, 5)
    np.testing.assert_array_equal(whole[1], small[1])
    np.testing.assert_allclose(whole[0], small[0], rtol=1e-6)  # matmul blocking may change the last bit
