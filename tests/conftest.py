"""Shared fixtures: a tiny generated M-BEIR-mini (built once per session) and its params.

``mini_root`` is the dataset root of a small M-BEIR-mini written by the real ``download``
stage (so it carries ``MANIFEST.json``); treat it as read-only and ``copy_tree`` it before
corrupting anything.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trace_core.env import quiet_environment

# Before anything imports huggingface_hub/mlflow/prefect: no telemetry, hub offline.
quiet_environment()
os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY_MINI: dict[str, Any] = {
    "train_per_task": 8,
    "test_per_task": 8,
    "val_per_task": 4,
    "pool_per_task": 24,
    "n_entities": 12,
}


def tiny_params(root: Path, **mini: Any):  # type: ignore[no-untyped-def]
    """Params whose paths live under ``root`` and whose mini benchmark is tiny."""
    from trace_core.config import parse_params

    raw = {
        "paths": {
            "data_root": str(root / "data" / "mbeir"),
            "cot_dir": str(root / "data" / "cot"),
            "model_dir": str(root / "models" / "trace"),
            "embeddings_dir": str(root / "embeddings"),
            "index_dir": str(root / "index"),
            "metrics_dir": str(root / "metrics"),
            "reports_dir": str(root / "reports"),
            "state_dir": str(root / ".trace"),
        },
        "download": {"mini": {**TINY_MINI, **mini}, "zeroshot_mini": {"queries": 4, "distractors": 2}},
        "self_chain": {"enabled": False},  # stage tests serve the phase-1 model; test_self_chain turns it on
    }
    return parse_params(raw, "<tests>")


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a dataset root (hard links are not used: tests corrupt the copy)."""
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def mini_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace folder whose ``data/mbeir`` holds the tiny M-BEIR-mini."""
    from trace_core.data import download
    from trace_core.paths import Paths

    root = tmp_path_factory.mktemp("mini_ws")
    params = tiny_params(root)
    download.run(params, Paths.from_params(params, root))
    return root


@pytest.fixture(scope="session")
def mini_params(mini_workspace: Path):  # type: ignore[no-untyped-def]
    """The params that generated ``mini_root`` (paths under the session workspace)."""
    return tiny_params(mini_workspace)


@pytest.fixture(scope="session")
def mini_root(mini_workspace: Path) -> Path:
    """Root of a tiny M-BEIR-mini (8 train/8 test queries per task, 24-candidate pools)."""
    return mini_workspace / "data" / "mbeir"


# --- one real Milvus standalone server per test session ------------------------------------
# The server (PyPI ``milvus``, embedded Milvus 2.3.5) listens on every interface of its network
# namespace, so it runs in a private one whose only interface is loopback (see
# trace_core.indexing.milvus_server); tests reach it on a free port of the host's 127.0.0.1
# through a forwarder, with authentication on and a generated token.
@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A started :class:`~trace_core.indexing.milvus_server.LocalMilvus` (``.uri``, ``.token``)."""
    pytest.importorskip("milvus", reason="the `milvus` package (Milvus server, in the dev extras) is not installed")
    from trace_core.indexing.milvus_server import LocalMilvus, free_port

    base = tmp_path_factory.mktemp("milvus_server")
    server = LocalMilvus(
        base=base / "server",
        port=free_port(),
        secret=base / "token",
        isolation="auto",
        bin_cache=Path(__file__).resolve().parents[1] / ".trace" / "milvus-bin",
        session_ttl_s=10,  # the restart test waits this long for the killed server's sessions
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=False)
