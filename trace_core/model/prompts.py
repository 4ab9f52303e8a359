"""System prompts per task type (query side) and per modality (candidate side).

Queries are told to reason for complex requests and to answer with ``<|emb|>`` alone for
simple ones; candidates are told that their output MUST and ONLY be ``<|emb|>`` (TRACE
section 3). The M-BEIR instruction is already part of the query text (see
:func:`trace_core.data.dataset.query_item`); candidates get none.
"""

from __future__ import annotations

from typing import Any

from trace_core.types import EncodeItem, Segment, Side

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


def user_parts(item: EncodeItem, text: str | None = None) -> tuple[Segment, ...]:
    """The user turn of an item in order: its segments, else the image then the text.

    Args:
        item: what to encode.
        text: replacement for ``item.text`` (used to truncate long texts).
    """
    if item.segments:
        return item.segments
    body = item.text if text is None else text
    image: tuple[Segment, ...] = (("image", item.img_path),) if item.img_path is not None else ()
    return image + ((("text", body),) if body else ())


def image_paths(item: EncodeItem) -> list[str]:
    """The item's image paths in the order they appear in its user turn."""
    return [value for kind, value in user_parts(item) if kind == "image"]


def item_modality(item: EncodeItem) -> str:
    """``image``, ``text`` or ``image and text``, from which parts the item has."""
    kinds = {kind for kind, value in user_parts(item) if kind == "image" or value}
    if kinds == {"image", "text"}:
        return "image and text"
    return "image" if "image" in kinds else "text"


def system_prompt(item: EncodeItem, side: Side, emb_token: str) -> str:
    """The system prompt of an item on the given side."""
    if side == "candidate":
        return CANDIDATE_SYSTEM.format(modality=item_modality(item), emb=emb_token)
    goal = TASK_GOALS.get(item.task_id)
    if goal is None:
        raise ValueError(f"no query prompt for task_id {item.task_id} (item {item.id})")
    return QUERY_SYSTEM.format(goal=goal, emb=emb_token)


def messages(
    item: EncodeItem,
    side: Side,
    emb_token: str,
    text: str | None = None,
    segments: tuple[Segment, ...] | None = None,
) -> list[dict[str, Any]]:
    """Chat messages of an item: the system prompt, then one user turn.

    The user turn is the image then the text, or the item's segments in order (several
    images and texts interleaved).

    Args:
        item: what to encode.
        side: ``query`` or ``candidate``.
        emb_token: the retrieval token named in the prompts.
        text: replacement for ``item.text`` (used to truncate long texts).
        segments: replacement for ``item.segments`` (used to truncate interleaved items).
    """
    parts = segments if segments is not None else user_parts(item, text)
    content: list[dict[str, Any]] = [
        {"type": "image"} if kind == "image" else {"type": "text", "text": value}
        for kind, value in parts
        if kind == "image" or value
    ]
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
