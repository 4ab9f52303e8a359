"""Milvus helpers without a server: credentials from the environment, request sizes, names, token files."""

from __future__ import annotations

import json
import stat

import pytest

from trace_core.indexing.build_index import check_pools, collection_name, model_prefix, previous_collections
from trace_core.indexing.milvus import MAX_INSERT_BYTES, env_token, rows_per_insert
from trace_core.indexing.milvus_server import MilvusServerError, ensure_secret, resolve_isolation
from trace_core.io import DataError


def test_token_comes_from_the_environment_only():
    assert env_token({}) == ""
    assert env_token({"MILVUS_TOKEN": "u:p"}) == "u:p"
    assert env_token({"TRACE_MILVUS_TOKEN": "root:a", "MILVUS_TOKEN": "u:p"}) == "root:a"
    assert env_token({"TRACE_MILVUS_TOKEN": "", "MILVUS_TOKEN": "u:p"}) == "u:p"


@pytest.mark.parametrize("dim", [16, 128, 1024, 3584, 65536])
def test_insert_requests_stay_under_the_byte_cap(dim):
    rows = rows_per_insert(dim, 1_000_000)
    assert rows >= 1 and (rows == 1 or rows * dim * 4 <= MAX_INSERT_BYTES)
    assert rows_per_insert(dim, 7) == min(7, rows)  # insert_batch still caps small batches
    assert MAX_INSERT_BYTES < 64 * 2**20  # the server's default gRPC receive limit


def test_collection_names_carry_model_and_pool():
    a = collection_name("3f2a9c81d0e4b7aa", "mscoco_task0", "ab" * 32)
    b = collection_name("77aa9c81d0e4b7aa", "mscoco_task0", "ab" * 32)
    assert a == "trace_3f2a9c81d0e4_mscoco_task0_abababab" and a != b
    assert a.startswith(model_prefix("3f2a9c81d0e4b7aa")) and not b.startswith(model_prefix("3f2a9c81d0e4b7aa"))
    assert collection_name("test-key.encoder", "cirr/task7", "0" * 64) == "trace_test_key_enc_cirr_task7_00000000"
    assert collection_name(None, "union", "f" * 64).startswith("trace_unknown_")


def _pool(tmp_path, name, model, dim=8):
    d = tmp_path / name
    d.mkdir()
    (d / "manifest.json").write_text(
        json.dumps({"model_id": model, "dim": dim, "count": 0, "hash": "0" * 64, "shards": []})
    )
    return d / "manifest.json"


def test_pools_of_two_models_are_refused(tmp_path):
    pools = {"a": _pool(tmp_path, "a", "m1"), "b": _pool(tmp_path, "b", "m2")}
    with pytest.raises(DataError, match=r"b/manifest.json.*model m2 differs from a's m1"):
        check_pools(pools)
    assert set(check_pools({"a": pools["a"]})) == {"a"}


def test_previous_collections_only_from_the_same_uri(tmp_path):
    path = tmp_path / "manifest.json"
    assert previous_collections(path, "x.db") == set()
    path.write_text(json.dumps({"backend": "milvus", "uri": "x.db", "pools": {"p": {"collection": "trace_m_p_1"}}}))
    assert previous_collections(path, "x.db") == {"trace_m_p_1"}
    assert previous_collections(path, "http://127.0.0.1:19530") == set()


def test_token_file_is_generated_private_and_reused(tmp_path):
    path = tmp_path / "state" / "milvus.token"
    token = ensure_secret(path)
    assert token.startswith("root:") and len(token) > 30
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_secret(path) == token
    path.chmod(0o644)
    with pytest.raises(MilvusServerError, match="readable by others"):
        ensure_secret(path)
    path.chmod(0o600)
    path.write_text("nonsense\n")
    with pytest.raises(MilvusServerError, match="root:<password>"):
        ensure_secret(path)


def test_unknown_isolation_is_refused():
    with pytest.raises(ValueError, match="isolation 'vm'"):
        resolve_isolation("vm")
    assert resolve_isolation("none") == ("none", None)


def test_busy_port_is_named_before_any_server_starts(tmp_path):
    import socket

    from trace_core.indexing.milvus_server import netns_command, serve

    if netns_command() is None:
        pytest.skip("no network namespace here (unshare refused)")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(MilvusServerError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(tmp_path / "server", port, None, "netns", None)
