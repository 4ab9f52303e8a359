"""Gradient caching: splitting a training batch into row chunks with consistent vision inputs.

With ``train.grad_cache_chunk > 0`` the training forward runs [queries; candidates] chunk by
chunk, each chunk under a non-reentrant ``torch.utils.checkpoint`` that keeps only its
pooled embeddings and summed generation CE; InfoNCE then runs over all rows' embeddings as
in one forward, and backward recomputes each chunk's activations before back-propagating
into it (GradCache's "embed all, back-propagate the contrastive gradient per chunk"). Peak
activation memory is one chunk; the loss and gradients are those of the whole batch.

A row's images are the ``<|vision_start|>`` tokens of its ``input_ids``; ``pixel_values``
holds every image's ``prod(grid_thw)`` patches in row order and ``image_grid_thw`` one row
per image, so both are sliced at the chunk's image and patch offsets.
"""

from __future__ import annotations

from typing import Any

import torch

VISION_KEYS = ("pixel_values", "image_grid_thw")
SEQ_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "labels")


def _offsets(counts: torch.Tensor) -> list[int]:
    """Exclusive prefix sums with the total appended: counts (n,) -> n + 1 offsets."""
    return [0, *torch.cumsum(counts, dim=0).tolist()]


def vision_offsets(batch: dict[str, Any], vision_start: int) -> tuple[list[int], list[int]]:
    """Per-row image offsets (rows + 1) and per-image patch offsets (images + 1).

    Raises:
        ValueError: the rows' ``<|vision_start|>`` count disagrees with ``image_grid_thw``, or
            the grids' patch total with ``pixel_values``.
    """
    per_row = (batch["input_ids"] == vision_start).sum(dim=1)  # (rows,)
    image_off = _offsets(per_row)
    grid = batch.get("image_grid_thw")
    n_images = 0 if grid is None else int(grid.shape[0])
    if image_off[-1] != n_images:
        raise ValueError(f"rows hold {image_off[-1]} <|vision_start|> tokens but the batch has {n_images} image grids")
    if grid is None:
        return image_off, [0]
    patch_off = _offsets(grid.prod(dim=1))
    n_patches = int(batch["pixel_values"].shape[0])
    if patch_off[-1] != n_patches:
        raise ValueError(f"image grids sum to {patch_off[-1]} patches but pixel_values has {n_patches}")
    return image_off, patch_off


def trim_padding(chunk: dict[str, Any]) -> dict[str, Any]:
    """Drop the trailing columns that no row of the chunk attends to (its padding)."""
    used = chunk["attention_mask"].any(dim=0).nonzero()
    width = int(used.max()) + 1 if used.numel() else 1
    return {k: v[:, :width] if k in SEQ_KEYS and v is not None else v for k, v in chunk.items()}


def slice_rows(
    batch: dict[str, Any], start: int, stop: int, image_off: list[int], patch_off: list[int]
) -> dict[str, Any]:
    """Rows ``[start, stop)`` of a batch: per-row tensors sliced, vision inputs at their offsets."""
    chunk = {k: v[start:stop] if isinstance(v, torch.Tensor) else v for k, v in batch.items() if k not in VISION_KEYS}
    first, last = image_off[start], image_off[stop]
    if last > first:
        chunk["image_grid_thw"] = batch["image_grid_thw"][first:last]
        chunk["pixel_values"] = batch["pixel_values"][patch_off[first] : patch_off[last]]
    return trim_padding(chunk)


def row_chunks(batch: dict[str, Any], size: int, vision_start: int) -> list[dict[str, Any]]:
    """Split a batch (every non-vision tensor per row) into chunks of ``size`` rows, in order.

    Args:
        batch: ``input_ids``/``attention_mask``/``mm_token_type_ids``/``labels`` (rows, seq),
            ``pool_index`` (rows,) and, with images, ``pixel_values``/``image_grid_thw``.
        size: rows per chunk (the last chunk may be smaller).
        vision_start: the ``<|vision_start|>`` token id (one per image).

    Returns:
        Chunks whose concatenated rows are the batch's rows; a chunk without images has no
        vision keys.
    """
    if size <= 0:
        raise ValueError(f"chunk size must be positive, got {size}")
    image_off, patch_off = vision_offsets(batch, vision_start)
    rows = int(batch["input_ids"].shape[0])
    return [slice_rows(batch, s, min(s + size, rows), image_off, patch_off) for s in range(0, rows, size)]
