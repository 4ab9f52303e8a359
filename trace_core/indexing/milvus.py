"""Milvus adapter: Milvus Lite file by default, any Milvus server by URI.

One collection per pool: an INT64 primary key ``pos`` (the row's position in the pool) and
a FLOAT_VECTOR ``vector``. FLAT (exact, the paper's protocol) by default; HNSW and IVF_FLAT
from params for scale. ``pymilvus`` is imported lazily so the CLI stays fast.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from trace_core.config import IndexParams
from trace_core.indexing.backend import check_dim, check_index_type

log = logging.getLogger(__name__)
PK, VEC = "pos", "vector"
LITE_LOCK = "LOCK"  # the file Milvus Lite flock()s inside its data folder


class MilvusConnectionError(ConnectionError):
    """The Milvus URI cannot be reached; the message names it."""


def resolve_uri(p: IndexParams, default_db: Path) -> str:
    """``index.uri`` when set, else the Milvus Lite file (its folder is created)."""
    if p.uri:
        return p.uri
    default_db.parent.mkdir(parents=True, exist_ok=True)
    return str(default_db)


def flock_holder(proc_locks: str, dev: int, inode: int) -> int | None:
    """PID holding a FLOCK on the file ``(dev, inode)`` according to ``/proc/locks`` text."""
    want = f"{os.major(dev):02x}:{os.minor(dev):02x}:{inode}"
    for line in proc_locks.splitlines():
        f = line.split()  # "33: FLOCK  ADVISORY  WRITE 6899 fe:00:2146385 0 EOF" ("->" marks waiters)
        if len(f) >= 6 and f[1] == "FLOCK" and f[5] == want and f[4].isdigit():
            return int(f[4])
    return None


def lite_lock_owner(db: Path) -> int | None:
    """PID holding Milvus Lite's lock on ``db`` (0 if it cannot be told), or None when free."""
    import fcntl

    lock = db / LITE_LOCK
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None  # no Lite folder yet: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except OSError:
        st = os.fstat(fd)
        try:
            return flock_holder(Path("/proc/locks").read_text(), st.st_dev, st.st_ino) or 0
        except OSError:
            return 0
    finally:
        os.close(fd)


def connect(uri: str, timeout_s: float) -> Any:
    """A ``MilvusClient`` for ``uri`` (a ``.db`` path starts Milvus Lite).

    Raises:
        MilvusConnectionError: naming the URI when no server answers, or the process holding
            a Milvus Lite file's lock.
    """
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if uri.endswith(".db"):
        _check_unlocked(uri, sure=False)
        # Milvus Lite serves gRPC in this process; pymilvus 3 probes AllocTimestamp, which it
        # does not implement, and grpc logs a harmless traceback for it on every insert.
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
        for name in ("milvus_lite.engine", "faiss.loader"):  # per-segment and loader chatter
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        client = MilvusClient(uri, timeout=timeout_s)
        client.list_collections()
    except (MilvusException, OSError, RuntimeError) as err:
        if uri.endswith(".db"):
            _check_unlocked(uri, sure=True)  # the open failed: a lock held elsewhere explains why
        raise MilvusConnectionError(f"cannot reach Milvus at '{uri}': {err}") from None
    return client


def _check_unlocked(uri: str, sure: bool) -> None:
    """Raise naming the process that holds a Lite file's lock (this process may reopen its own file).

    Before opening (``sure=False``) only a holder identified as another PID counts; after a failed
    open any holder but this process does.
    """
    pid = lite_lock_owner(Path(uri))
    if pid is None or pid == os.getpid() or (pid == 0 and not sure):
        return
    holder = f"PID {pid}" if pid else "another process"
    raise MilvusConnectionError(
        f"Milvus Lite file '{uri}' is locked by {holder} (another index or evaluate run?); "
        "wait for it to finish or stop it"
    )


def build_params(p: IndexParams) -> dict[str, Any]:
    """Index-build parameters of ``p.index_type`` (validated)."""
    check_index_type(p.index_type, p.metric)
    if p.index_type == "HNSW":
        return {"M": p.hnsw_m, "efConstruction": p.hnsw_ef_construction}
    if p.index_type == "IVF_FLAT":
        return {"nlist": p.ivf_nlist}
    return {}


def search_params(p: IndexParams, k: int) -> dict[str, Any]:
    """Search parameters of ``p.index_type``; HNSW's ef is at least k."""
    extra: dict[str, Any] = {}
    if p.index_type == "HNSW":
        extra = {"ef": max(p.hnsw_ef, k)}
    elif p.index_type == "IVF_FLAT":
        extra = {"nprobe": p.ivf_nprobe}
    return {"metric_type": p.metric, "params": extra}


class MilvusIndex:
    """A :class:`~trace_core.indexing.backend.VectorIndex` over one Milvus collection."""

    def __init__(self, client: Any, name: str, dim: int, p: IndexParams) -> None:
        self._client, self.name, self._dim, self._p = client, name, dim, p
        self._count = int(client.get_collection_stats(name)["row_count"]) if client.has_collection(name) else 0

    @classmethod
    def create(cls, client: Any, name: str, dim: int, p: IndexParams) -> MilvusIndex:
        """Drop ``name`` if it exists and create it empty with the configured index."""
        from pymilvus import DataType, MilvusClient

        index_build = build_params(p)
        if client.has_collection(name):
            client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(PK, DataType.INT64, is_primary=True)
        schema.add_field(VEC, DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        index.add_index(field_name=VEC, index_type=p.index_type, metric_type=p.metric, params=index_build)
        client.create_collection(name, schema=schema, index_params=index)
        return cls(client, name, dim, p)

    @classmethod
    def open(cls, client: Any, name: str, dim: int, p: IndexParams) -> MilvusIndex:
        """An existing collection, loaded for search (its dimension must equal ``dim``)."""
        if not client.has_collection(name):
            raise KeyError(f"collection '{name}' does not exist (run `trace index`)")
        fields = client.describe_collection(name)["fields"]
        stored = next(int(f["params"]["dim"]) for f in fields if f["name"] == VEC)
        if stored != dim:
            raise ValueError(f"collection '{name}' has dimension {stored}, expected {dim}")
        client.load_collection(name)
        return cls(client, name, dim, p)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def __len__(self) -> int:
        return self._count

    def add(self, vectors: np.ndarray) -> None:
        """Insert rows in batches of ``insert_batch``; positions continue from the current count."""
        v = check_dim(vectors, self._dim, "vectors")
        for start in range(0, len(v), self._p.insert_batch):
            block = v[start : start + self._p.insert_batch]
            rows = [{PK: self._count + i, VEC: row} for i, row in enumerate(block.tolist())]
            self._client.insert(self.name, rows)
            self._count += len(rows)

    def load(self) -> None:
        """Seal the inserted rows, then release and load so the index is built before searching.

        Milvus Lite builds indexes of flushed segments in the background and, meanwhile,
        answers searches by brute force; a load after a release builds them synchronously.
        """
        self._client.flush(self.name)
        self._client.release_collection(self.name)
        self._client.load_collection(self.name)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` positions and scores, in batches of ``search_batch`` queries."""
        q = check_dim(queries, self._dim, "queries")
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        positions = np.full((len(q), k), -1, dtype=np.int64)
        params = search_params(self._p, k)
        for start in range(0, len(q), self._p.search_batch):
            block = q[start : start + self._p.search_batch].tolist()
            hits = self._client.search(
                self.name, data=block, limit=k, anns_field=VEC, search_params=params, output_fields=[PK]
            )
            for i, row in enumerate(hits):
                for j, hit in enumerate(row):
                    scores[start + i, j] = hit["distance"]
                    positions[start + i, j] = hit[PK] if PK in hit else hit["id"]
        return scores, positions


def list_trace_collections(client: Any, prefix: str) -> list[str]:
    """Collections whose name starts with ``prefix``."""
    return [c for c in client.list_collections() if c.startswith(prefix)]
