"""The vector-store protocol and the exact in-memory reference index.

Every index stores rows at positions ``0..n-1`` in insertion order and answers a search
with ``(scores, positions)`` arrays of shape ``(n_queries, k)``, best first, padded with
score ``-inf`` and position ``-1`` when it holds fewer than ``k`` rows. Vectors are
L2-normalised, so inner product equals cosine similarity.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

INDEX_TYPES: frozenset[str] = frozenset({"FLAT", "HNSW", "IVF_FLAT"})
METRICS: frozenset[str] = frozenset({"IP", "COSINE"})


class DimensionError(ValueError):
    """Vectors whose dimension differs from the index's."""


@runtime_checkable
class VectorIndex(Protocol):
    """A searchable set of vectors addressed by insertion position."""

    @property
    def dim(self) -> int:
        """Vector dimension."""
        ...

    def __len__(self) -> int:
        """Number of stored rows."""
        ...

    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``(m, dim)``; they get the next ``m`` positions."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query: ``(scores (n, k) float32, positions (n, k) int64)``."""
        ...


def check_index_type(index_type: str, metric: str) -> None:
    """Reject index types and metrics the project does not support (Milvus Lite accepts some silently)."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unsupported index type '{index_type}' (supported: {', '.join(sorted(INDEX_TYPES))})")
    if metric not in METRICS:
        raise ValueError(f"unsupported metric '{metric}' (supported: {', '.join(sorted(METRICS))})")


def check_dim(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """Return ``vectors`` as float32 ``(n, dim)`` or raise :class:`DimensionError`."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != dim:
        raise DimensionError(f"{what} have shape {v.shape}, the index dimension is {dim}")
    return v


#: most query x row scores held at once by :class:`NumpyIndex` (256 MiB of float32; the top-k
#: selection needs about three times that): bounds memory on pools of millions of rows.
SCORE_BUDGET = 2**26


def query_block(block: int, rows: int, budget: int | None = None) -> int:
    """Queries scored together: at most ``block`` and ``budget`` (default :data:`SCORE_BUDGET`) scores, at least one."""
    return max(1, min(block, (budget or SCORE_BUDGET) // max(rows, 1)))


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns per row of ``scores (n, m)``, ties broken by lower position, padded."""
    n, m = scores.shape
    kk = min(k, m)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    out_p = np.full((n, k), -1, dtype=np.int64)
    if kk == 0:
        return out_s, out_p
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < m else np.tile(np.arange(m), (n, 1))
    part_scores = np.take_along_axis(scores, part, axis=1)  # (n, kk)
    order = np.lexsort((part, -part_scores), axis=1)
    out_p[:, :kk] = np.take_along_axis(part, order, axis=1)
    out_s[:, :kk] = np.take_along_axis(part_scores, order, axis=1)
    return out_s, out_p


class NumpyIndex:
    """Exact inner-product (or cosine) search over float32 rows held in memory."""

    def __init__(self, dim: int, metric: str = "IP", block: int = 1024) -> None:
        check_index_type("FLAT", metric)
        self._dim, self._metric, self._block = dim, metric, block
        self._blocks: list[np.ndarray] = []
        self._matrix: np.ndarray | None = np.zeros((0, dim), dtype=np.float32)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def __len__(self) -> int:
        return sum(len(b) for b in self._blocks)

    def _prepare(self, v: np.ndarray) -> np.ndarray:
        if self._metric == "COSINE":
            norms = np.linalg.norm(v, axis=1, keepdims=True)
            v = v / np.where(norms == 0, 1.0, norms)
        return v

    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``(m, dim)``."""
        self._blocks.append(self._prepare(check_dim(vectors, self._dim, "vectors")))
        self._matrix = None

    def _rows(self) -> np.ndarray:
        if self._matrix is None:
            self._matrix = np.concatenate(self._blocks) if self._blocks else np.zeros((0, self._dim), dtype=np.float32)
            self._blocks = [self._matrix]
        return self._matrix

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by inner product, query block by query block."""
        q = self._prepare(check_dim(queries, self._dim, "queries"))
        rows = self._rows()  # (m, dim)
        block = query_block(self._block, len(rows))
        scores, positions = [], []
        for start in range(0, len(q), block):
            s, p = top_k(q[start : start + block] @ rows.T, k)  # (b, m) -> (b, k)
            scores.append(s)
            positions.append(p)
        if not scores:
            return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
        return np.concatenate(scores), np.concatenate(positions)
