"""System prompts per task type (query side) and per modality (candidate side).

Queries are told to reason for complex requests and to answer with ``<|emb|>`` alone for
simple ones; candidates are told that their output MUST and ONLY be ``<|emb|>`` (TRACE
section 3). The M-BEIR instruction is already part of the query text (see
:func:`trace_core.data.dataset.query_item`); candidates get none.
"""

from __future__ import annotations

from typing import Any

from trace_core.types import EncodeItem, Side

# task id -> what the query asks for (M-BEIR task table)
TASK_GOALS: dict[int, str] = {
    0: "find the image described by the text",
    1: "find the text passage that matches the text",
    2: "find the image with text that matches the text",
    3: "find the text that describes the image",
    4: "find the image that looks like the image",
    6: "find the text that answers the question about the image",
    7: "find the image that shows the reference image changed as the text asks",
    8: "find the image with text that answers the question about the image",
}

QUERY_SYSTEM = (
    "You are a multimodal retrieval encoder. Task: {goal}. For a complex query first write a concise "
    "description of the target, then output {emb}. For a simple query output only {emb}."
)
CANDIDATE_SYSTEM = (
    "You are a multimodal retrieval encoder. Summarize the {modality} for retrieval. "
    "Your output MUST and ONLY be {emb}."
)


def item_modality(item: EncodeItem) -> str:
    """``image``, ``text`` or ``image and text``, from which parts the item has."""
    if item.img_path is not None and item.text:
        return "image and text"
    return "image" if item.img_path is not None else "text"


def system_prompt(item: EncodeItem, side: Side, emb_token: str) -> str:
    """The system prompt of an item on the given side."""
    if side == "candidate":
        return CANDIDATE_SYSTEM.format(modality=item_modality(item), emb=emb_token)
    goal = TASK_GOALS.get(item.task_id)
    if goal is None:
        raise ValueError(f"no query prompt for task_id {item.task_id} (item {item.id})")
    return QUERY_SYSTEM.format(goal=goal, emb=emb_token)


def messages(item: EncodeItem, side: Side, emb_token: str, text: str | None = None) -> list[dict[str, Any]]:
    """Chat messages of an item: system prompt, then the user turn (image first, then text).

    Args:
        item: what to encode.
        side: ``query`` or ``candidate``.
        emb_token: the retrieval token named in the prompts.
        text: replacement for ``item.text`` (used to truncate long texts).
    """
    body = item.text if text is None else text
    content: list[dict[str, Any]] = []
    if item.img_path is not None:
        content.append({"type": "image"})
    if body:
        content.append({"type": "text", "text": body})
    if not content:
        content.append({"type": "text", "text": ""})
    return [
        {"role": "system", "content": system_prompt(item, side, emb_token)},
        {"role": "user", "content": content},
    ]


def all_prompt_texts(emb_token: str) -> list[str]:
    """Every system prompt text (used to train the tiny tokenizer)."""
    out = [QUERY_SYSTEM.format(goal=g, emb=emb_token) for g in TASK_GOALS.values()]
    out += [CANDIDATE_SYSTEM.format(modality=m, emb=emb_token) for m in ("image", "text", "image and text")]
    return out
