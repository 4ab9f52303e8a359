"""TraceModel: a wrapped Qwen2-VL backbone with TRACE's pooling, losses and temperature.

``forward`` is the training step (one batched forward over [queries; candidates], or the
same rows in gradient-cache chunks (:mod:`.grad_cache`), that returns a
:class:`~trace_core.model.losses.LossOutput`); ``encode_candidates`` is one
forward; routed query encoding lives in :mod:`trace_core.model.inference`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from trace_core.model.collate import IGNORE_INDEX
from trace_core.model.grad_cache import VISION_KEYS, row_chunks
from trace_core.model.losses import (
    LossOutput,
    combine,
    first_labelled,
    info_nce_from_embeddings,
    mean_of_sums,
    token_cross_entropy,
    world,
)
from trace_core.model.pooling import pool_at
from trace_core.model.tokens import SpecialIds


def zero3_ranks(model: nn.Module) -> bool:
    """Whether ``model`` trains under ZeRO-3 (partitioned parameters) with several ranks."""
    return world()[1] > 1 and any(hasattr(p, "ds_id") for p in model.parameters())


@dataclass(frozen=True)
class HeadConfig:
    """Loss settings (from ``params.train``); ``grad_cache_chunk`` > 0 = rows per gradient-cache chunk."""

    lambda_gen: float
    lambda_ret: float
    temperature: float
    learnable_temperature: bool
    gather: bool
    grad_cache_chunk: int = 0
    lambda_route: float = 0.0


class TraceModel(nn.Module):
    """TRACE retriever around a ``transformers`` Qwen2-VL model (possibly peft-wrapped)."""

    def __init__(self, backbone: Any, ids: SpecialIds, head: HeadConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.ids = ids
        self.head = head
        scale = torch.tensor(math.log(1.0 / head.temperature))
        if head.learnable_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)

    @property
    def base(self) -> Any:
        """The ``...ForConditionalGeneration`` model under any peft wrapper."""
        return self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone

    @property
    def config(self) -> Any:
        """The backbone's config (the Trainer reads it)."""
        return self.base.config

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        """Delegate to the backbone (called by the Trainer when ``gradient_checkpointing``)."""
        self.base.gradient_checkpointing_enable(**kwargs)
        if self.backbone is not self.base:
            self.base.enable_input_require_grads()

    def temperature(self) -> torch.Tensor:
        """Current softmax temperature (``exp(-logit_scale)``)."""
        return torch.exp(-self.logit_scale)

    def rope_positions(self, batch: dict[str, Any]) -> torch.Tensor:
        """Qwen2-VL 3-D (M-RoPE) position ids (3, batch, seq), padding-aware."""
        pos, _ = self.base.model.get_rope_index(
            batch["input_ids"],
            batch["mm_token_type_ids"],
            batch.get("image_grid_thw"),
            attention_mask=batch["attention_mask"],
        )
        positions: torch.Tensor = pos
        return positions

    def hidden_states(self, batch: dict[str, Any], use_cache: bool = False) -> tuple[torch.Tensor, Any]:
        """Last-layer hidden states (batch, seq, dim) and the KV cache (None without ``use_cache``).

        Under ZeRO-3 on several ranks a batch without images still runs the vision tower (see
        :meth:`_blank_vision`), so that every rank gathers the same parameters in the same order.
        """
        vision = {k: batch[k] for k in VISION_KEYS if batch.get(k) is not None}
        with self._blank_vision(not vision and zero3_ranks(self)):
            out = self.base.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                position_ids=self.rope_positions(batch),
                mm_token_type_ids=batch["mm_token_type_ids"],
                use_cache=use_cache,
                **vision,
            )
        return out.last_hidden_state, (out.cache if use_cache else None)

    @contextmanager
    def _blank_vision(self, active: bool) -> Iterator[None]:
        """While active, the text embedding's output gets ``0 x`` the vision tower's output on a blank image.

        ZeRO-3 gathers each module's partitioned parameters with a collective when the module
        runs: if one rank's batch (or gradient-cache chunk) has images and another's has none,
        the ranks would call different modules and wait on each other forever. The model runs
        the vision tower right after the text embeddings; a hook there runs it on a 2x2-patch
        blank image and adds its output times zero, so the same modules run in the same order
        on every rank (the merger gets a zero gradient) and the result is unchanged.
        """
        if not active:
            yield
            return

        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            vc = self.config.vision_config
            width = int(vc.in_channels) * int(vc.temporal_patch_size) * int(vc.patch_size) ** 2
            pixels = torch.zeros(4, width, device=output.device)
            grid = torch.tensor([[1, 2, 2]], device=output.device)  # (t, h, w) patches: one merged token
            feats = self.base.model.get_image_features(pixels, grid).pooler_output
            return output + 0.0 * torch.stack([f.sum() for f in feats]).sum().to(output.dtype)

        handle = self.base.model.get_input_embeddings().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def step(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, Any]:
        """One cached decoding step: (batch, 1) new ids -> (batch, dim) hidden states and the cache."""
        out = self.base.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, cache=cache, use_cache=True
        )
        return out.last_hidden_state[:, -1], out.cache

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM-head logits of hidden states (..., dim) -> (..., vocab)."""
        logits: torch.Tensor = self.base.lm_head(hidden)
        return logits

    def embed_and_generation_loss(
        self, batch: dict[str, Any], labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward over all rows: embeddings, token-mean CE and decision-token mean CE.

        Returns pooled embeddings (rows, dim), the mean generation CE over labelled tokens and
        the mean CE of each labelled row's first token (the routing decision).
        """
        emb, ce_sum, first_sum = self.chunk_outputs({**batch, "labels": labels})
        return emb, *self._label_means(labels, ce_sum, first_sum)

    def chunk_outputs(self, chunk: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One row chunk: pooled embeddings (rows, dim) and summed CEs.

        The sums are over its labelled tokens and over each row's first labelled token.
        """
        hidden, _ = self.hidden_states(chunk)
        shift = chunk["labels"][:, 1:]  # token t+1 is predicted at position t
        mask = shift != IGNORE_INDEX
        first = first_labelled(mask)[mask]  # (n_labelled,) bool: the decision tokens
        ce = token_cross_entropy(self.logits(hidden[:, :-1][mask]), shift[mask])  # (n_labelled,)
        return pool_at(hidden, chunk["pool_index"]), ce.sum(), (ce * first).sum()

    def _label_means(
        self, labels: torch.Tensor, ce_sums: torch.Tensor, first_sums: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-mean CE and decision-token mean CE of the (global) batch from this rank's sums.

        With gathered InfoNCE over several ranks the means are over the global batch as well:
        each rank divides its sums by the global counts (all-reduced) and scales by the world
        size, so the data-parallel gradient average is the gradient of the global means and the
        ranks' mean of ``loss_gen`` is the global ``L_gen`` (one rank x batch 2b == two ranks x b
        also when the ranks hold different numbers of labelled tokens).
        """
        mask = labels[:, 1:] != IGNORE_INDEX
        counts = torch.stack([mask.sum(), mask.any(dim=1).sum()])  # labelled tokens, labelled rows
        _, size = world()
        scale = 1.0
        if self.head.gather and size > 1:
            counts = counts.clone()
            dist.all_reduce(counts)
            scale = float(size)
        return scale * mean_of_sums([ce_sums], counts[0]), scale * mean_of_sums([first_sums], counts[1])

    def embed_chunked(
        self, batch: dict[str, Any], labels: torch.Tensor, size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradient caching: :meth:`embed_and_generation_loss` in chunks of ``size`` rows.

        Each chunk runs under a non-reentrant checkpoint, so only its embeddings and CE sums
        outlive its forward; backward recomputes one chunk at a time. All chunks stay in one
        autograd graph, so each parameter's gradient is accumulated (and reduced) once.
        """
        chunks = row_chunks({**batch, "labels": labels}, size, self.ids.vision_start)
        outs = [checkpoint(self.chunk_outputs, c, use_reentrant=False) for c in chunks]
        ce_sum = torch.stack([s for _, s, _ in outs]).sum()
        first_sum = torch.stack([f for _, _, f in outs]).sum()
        return torch.cat([e for e, _, _ in outs]), *self._label_means(labels, ce_sum, first_sum)

    def forward(self, **batch: Any) -> LossOutput:
        """Training step: one forward over [queries; candidates] -> losses.

        ``batch`` comes from :class:`~trace_core.model.collate.TrainCollator`: rows
        ``[:n_queries]`` are teacher-forced queries, then candidates (positives first), then
        ``own_rows`` unlabelled own-chain query rows; ``query_rows`` (when set) picks each
        query's InfoNCE row (self-chain training), else rows ``[:n_queries]`` are used.
        With ``head.grad_cache_chunk`` below the row count the rows run in chunks
        (:meth:`embed_chunked`); the losses are the same.
        """
        n_q = int(batch.pop("n_queries"))
        query_rows = batch.pop("query_rows", None)  # (queries,) self-chain training: own-chain rows
        n_own = int(batch.pop("own_rows", 0))
        labels = batch.pop("labels")  # (rows, seq)
        size = self.head.grad_cache_chunk
        if 0 < size < labels.shape[0]:
            emb, loss_gen, loss_route = self.embed_chunked(batch, labels, size)
        else:
            emb, loss_gen, loss_route = self.embed_and_generation_loss(batch, labels)
        queries = emb[:n_q] if query_rows is None else emb[query_rows]  # (queries, dim)
        cands = emb[n_q : emb.shape[0] - n_own]  # (queries + negatives, dim)
        n_neg = cands.shape[0] - n_q
        loss_ret, acc = info_nce_from_embeddings(queries, cands, self.temperature(), self.head.gather, n_neg)
        ret_scale = float(world()[1]) if self.head.gather else 1.0
        h = self.head
        loss = combine(loss_gen, loss_ret, h.lambda_gen, h.lambda_ret, ret_scale, loss_route, h.lambda_route)
        return LossOutput(
            loss=loss,
            loss_gen=loss_gen.detach(),
            loss_ret=loss_ret.detach(),
            loss_route=loss_route.detach(),
            accuracy=acc.detach(),
        )

    training_step = forward

    @torch.no_grad()
    def encode_candidates(self, batch: dict[str, Any]) -> torch.Tensor:
        """Candidate embeddings (batch, dim): one forward over prompt + ``<|emb|>``."""
        hidden, _ = self.hidden_states(batch)
        return pool_at(hidden, batch["pool_index"])
