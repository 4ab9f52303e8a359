"""Pooling: the last-layer hidden state of the token right before the response's first ``<|emb|>``.

In a teacher-forced sequence ``prompt + response`` the state at position(<|emb|>) - 1 is
exactly the state that predicts ``<|emb|>``; for a candidate (response = ``<|emb|>``) it is
the last prompt position. The system prompts mention ``<|emb|>`` themselves, so the position
is located inside the response (by the collator), never by a search over the whole row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def response_pool_index(prompt_len: int, response_ids: list[int], emb_id: int) -> int:
    """Index of the state that predicts the response's first ``<|emb|>`` (-1 if it has none)."""
    if emb_id not in response_ids:
        return -1
    return prompt_len + response_ids.index(emb_id) - 1


def pool_at(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """L2-normalised hidden state of each row at ``index``.

    Args:
        hidden: (batch, seq, dim) last-layer hidden states.
        index: (batch,) positions, e.g. position(first <|emb|> of the response) - 1.

    Returns:
        (batch, dim) unit vectors.
    """
    if bool((index < 0).any()):
        bad = (index < 0).nonzero().flatten().tolist()
        raise ValueError(f"rows {bad} have no <|emb|> in their response to pool before")
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return F.normalize(hidden[rows, index], dim=-1)
