"""Routed query encoding and the encoder API used by export/evaluate.

One prefill forward over the prompt gives the last-position logits and hidden state. If
the argmax is ``<|emb|>`` that state is the embedding (one forward, as cheap as a plain
encoder). Otherwise the row greedy-decodes with the KV cache until it predicts ``<|emb|>``;
its embedding is the hidden state of the step that predicted it. At ``max_new_tokens``
generated tokens ``<|emb|>`` is forced (route ``forced``). Rows that are done leave the
batch (their cache rows are dropped). Modes: ``adaptive``, ``never`` (the prefill state,
LamRA-style) and ``always`` (``<|emb|>`` is never accepted as the first token).

:class:`TraceEncoder` pools the rows that reason across batches: a first cache-free prefill
of every batch settles the direct rows; the rows that start a chain are then re-prefilled
together and decoded ``batch_size`` at a time, so a few reasoning rows scattered over many
batches cost a few full decode loops instead of one mostly-empty loop per batch. With
``num_workers`` > 0 the inputs of the next batches (images opened and decoded, prompts
tokenised, padded) are built by DataLoader worker processes while the model runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from trace_core.model.collate import Processors, encode_items
from trace_core.types import EncodeItem, Route, RoutingMode, Side

if TYPE_CHECKING:
    from trace_core.model.trace_model import TraceModel

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RoutedBatch:
    """Result of :func:`routed_encode` for one batch (row order = input order)."""

    vectors: torch.Tensor
    routes: list[Route]
    generated: list[list[int]] = field(default_factory=list)


@dataclass
class _Decoding:
    rows: torch.Tensor  # (b,) original row index of each active row
    tokens: torch.Tensor  # (b,) last chosen token, fed at the next step
    attention: torch.Tensor  # (b, past) attention mask
    positions: torch.Tensor  # (b,) rope position of the next fed token
    cache: Any

    def keep(self, mask: torch.Tensor, next_tokens: torch.Tensor) -> None:
        idx = mask.nonzero().flatten()
        self.cache.batch_select_indices(idx)
        self.rows, self.tokens = self.rows[idx], next_tokens[idx]
        self.attention, self.positions = self.attention[idx], self.positions[idx]


def _first_tokens(logits: torch.Tensor, emb_id: int, mode: RoutingMode) -> torch.Tensor:
    if mode == "always":
        logits = logits.clone()
        logits[:, emb_id] = float("-inf")
    return logits.argmax(dim=-1)


@torch.no_grad()
def routed_encode(model: TraceModel, batch: dict[str, Any], mode: RoutingMode, max_new_tokens: int) -> RoutedBatch:
    """Routed encoding of a left-padded, prompt-only batch.

    Args:
        model: the TRACE model.
        batch: inputs from :func:`encode_items` with ``padding_side="left"`` and no response.
        mode: ``adaptive``, ``never`` or ``always``.
        max_new_tokens: cap on generated tokens before ``<|emb|>`` is forced.

    Returns:
        Unit vectors (batch, dim), the route and the generated token ids of each row.
    """
    emb_id = model.ids.emb
    hidden, cache = model.hidden_states(batch, use_cache=mode != "never" and max_new_tokens > 0)
    last = hidden[:, -1]  # (batch, dim): left padding puts every prompt's end here
    n = last.shape[0]
    vectors = F.normalize(last, dim=-1).clone()
    routes: list[Route] = ["direct"] * n
    generated: list[list[int]] = [[] for _ in range(n)]
    if mode == "never":
        return RoutedBatch(vectors, routes, generated)
    first = _first_tokens(model.logits(last), emb_id, mode)  # (batch,)
    active = first != emb_id
    if max_new_tokens <= 0:  # no room for a chain: <|emb|> is forced at once
        routes = ["forced" if a else "direct" for a in active.tolist()]
        return RoutedBatch(vectors, routes, generated)
    if not bool(active.any()):
        return RoutedBatch(vectors, routes, generated)
    pos = model.rope_positions(batch).amax(dim=(0, 2)) + 1  # (batch,) next text position
    state = _Decoding(torch.arange(n), first, batch["attention_mask"], pos, cache)
    state.keep(active, first)
    for row in state.rows.tolist():
        generated[row].append(int(first[row]))
    _decode(model, state, vectors, routes, generated, max_new_tokens)
    return RoutedBatch(vectors, routes, generated)


def _decode(
    model: TraceModel,
    st: _Decoding,
    vectors: torch.Tensor,
    routes: list[Route],
    generated: list[list[int]],
    max_new_tokens: int,
) -> None:
    """Greedy cached decoding of the active rows until each predicts (or is forced) ``<|emb|>``."""
    emb_id = model.ids.emb
    while st.rows.numel():
        n_new = len(generated[int(st.rows[0])])  # all active rows have generated the same count
        b = st.rows.numel()
        st.attention = torch.cat([st.attention, st.attention.new_ones(b, 1)], dim=1)
        h, st.cache = model.step(st.tokens[:, None], st.attention, st.positions.view(1, b, 1).expand(3, b, 1), st.cache)
        st.positions = st.positions + 1
        nxt = model.logits(h).argmax(dim=-1)  # (b,)
        done = (nxt == emb_id) | (n_new >= max_new_tokens)
        for i in done.nonzero().flatten().tolist():
            row = int(st.rows[i])
            vectors[row] = F.normalize(h[i], dim=-1)
            routes[row] = "reasoned" if int(nxt[i]) == emb_id else "forced"
        for i in (~done).nonzero().flatten().tolist():
            generated[int(st.rows[i])].append(int(nxt[i]))
        st.keep(~done, nxt)


@dataclass(frozen=True)
class QueryEncoding:
    """Routed query embeddings with their routes and chains (``token_ids``: each chain's generated ids)."""

    vectors: np.ndarray
    routes: list[str]
    new_tokens: list[int]
    chains: list[str]
    token_ids: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True)
class BatchCollator:
    """Model inputs of one batch of items (picklable: it runs in DataLoader workers).

    Candidates end with ``<|emb|>`` (right padding); queries are prompt-only, left-padded for decoding.
    """

    proc: Processors
    image_root: Path
    side: Side

    def __call__(self, items: Sequence[EncodeItem]) -> dict[str, torch.Tensor]:
        """Collate ``items`` (images opened and processed, prompts tokenised and padded)."""
        n = len(items)
        if self.side == "candidate":
            return encode_items(
                self.proc, items, ["candidate"] * n, [self.proc.emb_token] * n, [False] * n, self.image_root
            )
        return encode_items(self.proc, items, ["query"] * n, [None] * n, [False] * n, self.image_root, "left")


class _Batches(Dataset[Sequence[EncodeItem]]):
    """A list of item batches as a map-style dataset (one element = one batch)."""

    def __init__(self, batches: Sequence[Sequence[EncodeItem]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Sequence[EncodeItem]:
        return self.batches[index]


def collated(
    batches: Sequence[Sequence[EncodeItem]], collate: BatchCollator, num_workers: int, pin_memory: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Model inputs of each batch, in order.

    With ``num_workers`` > 0 (and more than one batch) a DataLoader builds them in worker
    processes, each prefetching two batches ahead, so image decoding and collation overlap the
    forwards; with 0 each batch is built here when it is needed. Both give the same tensors.
    """
    if num_workers == 0 or len(batches) <= 1:
        yield from (collate(b) for b in batches)
        return
    loader: DataLoader[Sequence[EncodeItem]] = DataLoader(
        _Batches(batches),
        batch_size=None,
        shuffle=False,
        num_workers=min(num_workers, len(batches)),
        collate_fn=collate,
        prefetch_factor=2,
        pin_memory=pin_memory,
    )
    yield from loader


def split(items: Sequence[T], batch_size: int) -> list[Sequence[T]]:
    """Consecutive batches of ``batch_size`` items (the last may be short)."""
    return [items[s : s + batch_size] for s in range(0, len(items), batch_size)]


class TraceEncoder:
    """Encodes queries (routed) and candidates with a saved TRACE model.

    ``num_workers`` DataLoader workers build the batches' inputs ahead of the forwards (0: inline).
    """

    def __init__(
        self, model: TraceModel, proc: Processors, model_id: str, device: str = "cpu", num_workers: int = 0
    ) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.model = model.to(device).eval()
        self.proc = proc
        self.model_id = model_id
        self.device = device
        self.num_workers = num_workers
        self.dim = int(model.config.text_config.hidden_size)

    def _inputs(
        self, batches: Sequence[Sequence[EncodeItem]], image_root: Path, side: Side, what: str
    ) -> Iterator[dict[str, Any]]:
        """Device-ready inputs of each batch, with a progress bar."""
        pin = self.num_workers > 0 and self.device.startswith("cuda")
        stream = collated(batches, BatchCollator(self.proc, image_root, side), self.num_workers, pin)
        for batch in tqdm(stream, total=len(batches), desc=f"encode {what}", disable=None, leave=False):
            yield self._to_device(batch)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def encode_candidates(self, items: Sequence[EncodeItem], image_root: Path, batch_size: int) -> np.ndarray:
        """Candidate embeddings (n, dim) float32, unit rows: one forward per batch, never a chain."""
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        for batch in self._inputs(split(items, batch_size), image_root, "candidate", "candidates"):
            out.append(self.model.encode_candidates(batch).float().cpu().numpy())
        return np.concatenate(out, axis=0)

    def encode_queries(
        self, items: Sequence[EncodeItem], image_root: Path, mode: RoutingMode, max_new_tokens: int, batch_size: int
    ) -> QueryEncoding:
        """Routed query embeddings; direct rows cost one forward, the others decode (pooled)."""
        n = len(items)
        vecs = np.zeros((n, self.dim), dtype=np.float32)
        routes: list[str] = ["direct"] * n
        generated: list[list[int]] = [[] for _ in range(n)]
        pending: list[int] = []
        batches = split(items, batch_size)
        for b, batch in enumerate(self._inputs(batches, image_root, "query", "queries")):  # pass 1: prefill (cap 0)
            s = b * batch_size
            res = routed_encode(self.model, batch, mode, 0)
            vecs[s : s + len(res.routes)] = res.vectors.float().cpu().numpy()
            for i, route in enumerate(res.routes):
                if route == "forced" and max_new_tokens > 0:  # wants a chain: decoded in pass 2
                    pending.append(s + i)
                else:
                    routes[s + i] = route
        if pending:
            log.debug("decoding %d of %d queries in pooled batches", len(pending), n)
        groups = split(pending, batch_size)
        chains_in = [[items[r] for r in rows] for rows in groups]
        for rows, batch in zip(groups, self._inputs(chains_in, image_root, "query", "chains"), strict=True):
            res = routed_encode(self.model, batch, mode, max_new_tokens)
            out = res.vectors.float().cpu().numpy()
            for j, r in enumerate(rows):
                vecs[r], routes[r], generated[r] = out[j], res.routes[j], res.generated[j]
        chains = [self.proc.tokenizer.decode(g, skip_special_tokens=True) if g else "" for g in generated]
        return QueryEncoding(vecs, routes, [len(g) for g in generated], chains, generated)

    def encode_forced(
        self, items: Sequence[EncodeItem], responses: Sequence[str], image_root: Path, batch_size: int
    ) -> np.ndarray:
        """Teacher-forced query embeddings (n, dim): one forward over prompt + response each.

        Each response ends with ``<|emb|>``; the embedding is the state that predicts it (as in
        training), e.g. a query's embedding after a given chain.
        """
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in tqdm(range(0, len(items), batch_size), desc="encode forced", disable=None, leave=False):
            chunk, resp = items[start : start + batch_size], responses[start : start + batch_size]
            n = len(chunk)
            batch = encode_items(self.proc, chunk, ["query"] * n, resp, [False] * n, image_root)
            out.append(self.model.encode_candidates(self._to_device(batch)).float().cpu().numpy())
        return np.concatenate(out, axis=0)

    def _routed(self, chunk: Sequence[EncodeItem], image_root: Path, mode: RoutingMode, cap: int) -> RoutedBatch:
        batch = BatchCollator(self.proc, image_root, "query")(chunk)
        return routed_encode(self.model, self._to_device(batch), mode, cap)


def load_encoder(model_dir: Path, device: str = "cpu", num_workers: int = 0) -> TraceEncoder:
    """Load the encoder saved by the train stage (weights, tokenizer, image processor, meta).

    ``num_workers``: DataLoader workers that build batch inputs ahead of the forwards (0: inline).
    """
    from trace_core.config import ModelParams
    from trace_core.model.checkpoint import load_saved, model_hash, read_meta
    from trace_core.model.trace_model import HeadConfig, TraceModel

    meta = read_meta(model_dir)
    mp = ModelParams.model_validate(meta["params"]["model"])
    dtype = torch.bfloat16 if meta.get("dtype") == "bfloat16" else torch.float32
    bb = load_saved(model_dir, mp, meta["model_class"], dtype)
    t = meta["params"]["train"]
    head = HeadConfig(t["lambda_gen"], t["lambda_ret"], float(meta["temperature"]), False, False)
    return TraceEncoder(TraceModel(bb.model, bb.proc.ids, head), bb.proc, model_hash(model_dir), device, num_workers)
