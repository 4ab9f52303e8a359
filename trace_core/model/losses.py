"""TRACE losses: generation cross-entropy on the query response + InfoNCE query->candidate.

``L = lambda_gen * L_gen + lambda_ret * L_ret`` (TRACE section 4).

InfoNCE (like sentence-transformers' ``MultipleNegativesRankingLoss``): for query
embeddings ``q_i`` and candidate embeddings ``c_j`` (unit vectors, so ``q_i . c_j`` is the
cosine similarity), with ``c_i`` the positive of ``q_i`` and every other candidate of the
(global) batch a negative::

    L_ret = -1/B * sum_i log( exp(q_i . c_i / tau) / sum_j exp(q_i . c_j / tau) )

Temperature ``tau = 0.05`` is the same as sentence-transformers' ``scale = 1 / tau = 20``.
Hard negatives (``neg_cand_list``) are extra candidate columns after the positives.

Across ranks, embeddings are all-gathered and the rank's own slice is replaced by the
local tensor, so every rank computes the full global loss with gradient on its slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers.utils import ModelOutput


@dataclass
class LossOutput(ModelOutput):
    """One training step's losses; ``loss`` is what is back-propagated.

    A ``ModelOutput`` (a mapping), so DeepSpeed ZeRO-3 hooks can see its tensors.
    """

    loss: torch.Tensor | None = None
    loss_gen: torch.Tensor | None = None
    loss_ret: torch.Tensor | None = None
    loss_route: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0; the local slice keeps its gradient (others are constants).

    Ranks may hold different numbers of rows.

    Args:
        t: (n_local, dim) local rows.

    Returns:
        (n_global, dim) rows of all ranks in rank order.
    """
    rank, size = world()
    if size == 1:
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    width = int(max(int(s) for s in sizes))
    padded = torch.zeros((width, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t.detach()
    parts = [torch.zeros_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    rows = [p[: int(s)] for p, s in zip(parts, sizes, strict=True)]
    rows[rank] = t
    return torch.cat(rows, dim=0)


def info_nce_from_embeddings(
    q: torch.Tensor,
    c: torch.Tensor,
    temperature: float | torch.Tensor,
    gather: bool,
    n_negatives: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of queries against in-batch candidates (and hard negatives).

    Args:
        q: (B, dim) unit query embeddings.
        c: (B + n_negatives, dim) unit candidate embeddings; ``c[i]`` is the positive of ``q[i]``.
        temperature: softmax temperature tau (0.05 == scale 20).
        gather: all-gather across ranks (gradient on the local slice).
        n_negatives: number of hard-negative rows at the end of ``c``.

    Returns:
        (loss, top-1 accuracy), both scalars over the global batch.
    """
    pos, neg = c[: q.shape[0]], c[q.shape[0] :]  # (B, dim), (n_negatives, dim)
    if n_negatives != neg.shape[0]:
        raise ValueError(f"expected {n_negatives} negative rows, got {neg.shape[0]}")
    if gather:
        q, pos, neg = gather_with_grad(q), gather_with_grad(pos), gather_with_grad(neg)
    cands = torch.cat([pos, neg], dim=0)  # (B_global + N_global, dim)
    scores = q @ cands.T / temperature  # (B_global, B_global + N_global)
    labels = torch.arange(q.shape[0], device=q.device)
    loss = F.cross_entropy(scores.float(), labels)
    accuracy = (scores.argmax(dim=1) == labels).float().mean()
    return loss, accuracy


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy (n_labelled,) over the labelled positions (float32).

    Its sum over chunks divided by the batch's labelled-token count (:func:`mean_of_sums`)
    is the generation loss ``L_gen`` of the whole batch (the mean token CE).
    """
    return F.cross_entropy(logits.float(), targets, reduction="none")


def first_labelled(mask: torch.Tensor) -> torch.Tensor:
    """The first labelled position of each row (the routing decision: ``<|emb|>`` or a chain).

    Args:
        mask: (rows, seq) bool, True where a position predicts a labelled token.

    Returns:
        (rows, seq) bool with at most one True per row.
    """
    return mask & (mask.long().cumsum(dim=1) == 1)


def mean_of_sums(sums: list[torch.Tensor], count: torch.Tensor) -> torch.Tensor:
    """``sum(sums) / count``: the mean token CE from per-chunk sums.

    With no labelled token every sum is 0, and so is the result.
    """
    return torch.stack(sums).sum() / count.clamp(min=1)


def combine(
    loss_gen: torch.Tensor,
    loss_ret: torch.Tensor,
    lambda_gen: float,
    lambda_ret: float,
    ret_scale: float,
    loss_route: torch.Tensor | None = None,
    lambda_route: float = 0.0,
) -> torch.Tensor:
    """``lambda_gen * L_gen + lambda_ret * ret_scale * L_ret (+ lambda_route * L_route)``.

    ``L_route`` is the CE of each query's first response token (``<|emb|>`` = embed at once,
    anything else = start a chain) averaged over queries rather than tokens: under the
    token mean of ``L_gen`` one decision weighs as much as one of a chain's ~100 tokens.

    ``ret_scale`` is the world size when InfoNCE is gathered: every rank holds the full
    global loss with gradient on its own slice, and the data-parallel all-reduce averages
    gradients, so the scale restores the exact gradient of the global loss.
    """
    total = lambda_gen * loss_gen + lambda_ret * ret_scale * loss_ret
    if loss_route is not None and lambda_route:
        total = total + lambda_route * loss_route
    return total
