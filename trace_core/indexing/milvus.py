"""Milvus adapter: Milvus Lite file by default, any Milvus server by URI.

One collection per pool: an INT64 primary key ``pos`` (the row's position in the pool) and
a FLOAT_VECTOR ``vector``. FLAT (exact, the paper's protocol) by default; HNSW and IVF_FLAT
from params for scale. ``pymilvus`` is imported lazily so the CLI stays fast.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trace_core.config import IndexParams
from trace_core.indexing.backend import check_dim, check_index_type

log = logging.getLogger(__name__)
PK, VEC = "pos", "vector"
LITE_LOCK = "LOCK"  # the file Milvus Lite flock()s inside its data folder
#: environment variables holding a Milvus server's token (``user:password``), first one set wins
TOKEN_ENV = ("TRACE_MILVUS_TOKEN", "MILVUS_TOKEN")
#: bytes of vectors per insert request: half the server's 64 MiB gRPC receive limit
MAX_INSERT_BYTES = 32 * 2**20


class MilvusConnectionError(ConnectionError):
    """The Milvus URI cannot be reached; the message names it."""


def resolve_uri(p: IndexParams, default_db: Path) -> str:
    """``index.uri`` when set, else the Milvus Lite file (its folder is created)."""
    if p.uri:
        return p.uri
    default_db.parent.mkdir(parents=True, exist_ok=True)
    return str(default_db)


def is_lite(uri: str) -> bool:
    """True for a Milvus Lite file path, False for a server URI."""
    return uri.endswith(".db")


def env_token(environ: Mapping[str, str] | None = None) -> str:
    """The server token from the environment (:data:`TOKEN_ENV`), "" when none is set.

    Credentials never live in params: ``make milvus-up`` writes them to a 0600 file that
    ``.trace/milvus.env`` exports as ``TRACE_MILVUS_TOKEN``.
    """
    env = os.environ if environ is None else environ
    return next((env[name] for name in TOKEN_ENV if env.get(name)), "")


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


def connect(uri: str, timeout_s: float, token: str | None = None) -> Any:
    """A ``MilvusClient`` for ``uri`` (a ``.db`` path starts Milvus Lite).

    Args:
        uri: Milvus Lite file or server URI.
        timeout_s: connection and call timeout.
        token: server credentials ``user:password``; None reads :func:`env_token` (servers only).

    Raises:
        MilvusConnectionError: naming the URI (never the token) when no server answers, or the
            process holding a Milvus Lite file's lock.
    """
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    lite = is_lite(uri)
    if token is None:
        token = "" if lite else env_token()
    if lite:
        _check_unlocked(uri, sure=False)
        # Milvus Lite serves gRPC in this process; pymilvus 3 probes AllocTimestamp, which it
        # does not implement, and grpc logs a harmless traceback for it on every insert.
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
        for name in ("milvus_lite.engine", "faiss.loader"):  # per-segment and loader chatter
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        client = MilvusClient(uri, token=token, timeout=timeout_s)
        client.list_collections()
    except (MilvusException, OSError, RuntimeError) as err:
        if lite:
            _check_unlocked(uri, sure=True)  # the open failed: a lock held elsewhere explains why
        hint = (
            "" if lite else f" (token {'set' if token else 'not set'}; servers with authentication need {TOKEN_ENV[0]})"
        )
        raise MilvusConnectionError(f"cannot reach Milvus at '{uri}': {err}{hint}") from None
    return client


def rows_per_insert(dim: int, insert_batch: int) -> int:
    """Rows per insert request: ``insert_batch`` capped so a request carries at most :data:`MAX_INSERT_BYTES`."""
    return max(1, min(insert_batch, MAX_INSERT_BYTES // (4 * dim + 8)))


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
        """Drop ``name`` if it exists and create it empty with the configured index (not loaded).

        Loading happens at search time (:meth:`open`, :meth:`load`): loading an empty
        collection on a server costs ~2 s for nothing.
        """
        from pymilvus import DataType, MilvusClient

        index_build = build_params(p)
        if client.has_collection(name):
            client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(PK, DataType.INT64, is_primary=True)
        schema.add_field(VEC, DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        index.add_index(field_name=VEC, index_type=p.index_type, metric_type=p.metric, params=index_build)
        client.create_collection(name, schema=schema)
        client.create_index(name, index)
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
        """Insert rows in requests of :func:`rows_per_insert`; positions continue from the current count."""
        v = check_dim(vectors, self._dim, "vectors")
        step = rows_per_insert(self._dim, self._p.insert_batch)
        for start in range(0, len(v), step):
            block = v[start : start + step]
            self._client.insert(self.name, [{PK: self._count + i, VEC: row} for i, row in enumerate(block)])
            self._count += len(block)

    def wait_indexed(self, timeout_s: float | None = None) -> None:
        """Block until the index covers every flushed row (a server builds it in the background).

        Raises:
            TimeoutError: naming the collection and the pending row count.
        """
        deadline = time.monotonic() + (self._p.timeout_s * 20 if timeout_s is None else timeout_s)
        while True:
            info = self._client.describe_index(self.name, VEC)
            pending = int(info.get("pending_index_rows", 0))
            if pending == 0 and int(info.get("indexed_rows", 0)) >= int(info.get("total_rows", 0)):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"collection '{self.name}': {pending} rows still waiting for their index")
            time.sleep(0.5)

    def seal(self) -> None:
        """Flush the inserted rows to sealed segments and wait until the index covers them."""
        self._client.flush(self.name)
        self.wait_indexed()

    def load(self) -> None:
        """:meth:`seal`, then release and load the collection for search.

        Milvus Lite builds indexes of flushed segments in the background and, meanwhile,
        answers searches by brute force; a load after a release builds them synchronously.
        A server builds them in its index node: :meth:`wait_indexed` waits for that first.
        """
        self.seal()
        self._client.release_collection(self.name)
        self._client.load_collection(self.name)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` positions and scores, in batches of ``search_batch`` queries."""
        q = check_dim(queries, self._dim, "queries")
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        positions = np.full((len(q), k), -1, dtype=np.int64)
        params = search_params(self._p, k)
        for start in range(0, len(q), self._p.search_batch):
            block = list(q[start : start + self._p.search_batch])
            hits = self._client.search(
                self.name, data=block, limit=k, anns_field=VEC, search_params=params, output_fields=[PK]
            )
            for i, row in enumerate(hits):
                for j, hit in enumerate(row):
                    scores[start + i, j] = hit["distance"]
                    positions[start + i, j] = hit[PK] if PK in hit else hit["id"]
        return scores, positions


def load_all(indexes: list[MilvusIndex]) -> None:
    """:meth:`MilvusIndex.load` several collections at once (on a server each flush or load waits 2-4 s)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(indexes)))) as pool:
        list(pool.map(MilvusIndex.load, indexes))


def list_trace_collections(client: Any, prefix: str) -> list[str]:
    """Collections whose name starts with ``prefix``."""
    return [c for c in client.list_collections() if c.startswith(prefix)]
