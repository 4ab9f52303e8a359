"""Integration fixtures: one real Milvus standalone server per test session.

The server (PyPI ``milvus``, embedded Milvus 2.3.5) listens on every interface of its
network namespace, so it runs in a private one whose only interface is loopback (see
:mod:`trace_core.indexing.milvus_server`); tests reach it on a free port of the host's
127.0.0.1 through a forwarder. Authentication is on with a generated token. It starts in
~5-10 s and is killed (not shut down gracefully: ~9 s saved) at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
        bin_cache=ROOT / ".trace" / "milvus-bin",
        session_ttl_s=10,  # the restart test waits this long for the killed server's sessions
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=False)
