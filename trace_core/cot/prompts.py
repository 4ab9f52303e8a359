"""Teacher, assessor and verifier prompts (task-specific), and the request type they fill.

Every chain prompt requires the output ``<reasoning>...</reasoning><answer>...</answer>``;
the assessor answers ``<label>simple|complex</label>``; the verifier answers
``<decision>consistent|inconsistent</decision><confidence>x</confidence>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trace_core.data.mbeir import TASKS

Purpose = Literal["chain", "assess", "verify"]
PromptKind = Literal["visual", "edit", "knowledge"]
KNOWLEDGE_DATASETS: frozenset[int] = frozenset({2, 5, 6})  # WebQA, OVEN, InfoSeek
MODALITY_WORDS = {"text": "a text passage", "image": "an image", "image,text": "an image with its text"}

FORMAT_RULE = (
    "Answer in exactly this format and nothing else: "
    "<reasoning>your step-by-step reasoning</reasoning><answer>the final description</answer>. "
    "Write in English, keep the reasoning under 150 words and the answer under 40 words."
)
SYSTEM_PROMPTS: dict[PromptKind, str] = {
    "visual": (
        "You help a multimodal retrieval model. Given a query, reason about what the target "
        "it should retrieve looks like, then give a concise visual description of that target: "
        "objects, attributes (colour, shape, size), positions and setting. " + FORMAT_RULE
    ),
    "edit": (
        "You help a composed image retrieval model. The query is a source image and a requested "
        "modification. Begin the reasoning with one sentence on what the source image shows, then "
        "state the requested change and what stays the same. In the answer describe the target "
        "image after the change as one caption. " + FORMAT_RULE
    ),
    "knowledge": (
        "You help a knowledge-intensive retrieval model. The query is a question, often about "
        "the entity shown in an image. In the reasoning identify the entity and what the question "
        "asks. In the answer give the entity name and the key facts the answering passage "
        "contains. " + FORMAT_RULE
    ),
}
ASSESSOR_SYSTEM = (
    "You route queries of a multimodal retrieval model. A query is simple when its text or "
    "image already describes the target directly (caption matching). It is complex when finding "
    "the target needs reasoning: applying a requested edit to an image, identifying an entity, "
    "or answering a knowledge question. Reply with <label>simple</label> or <label>complex</label> "
    "and nothing else."
)
VERIFIER_SYSTEM = (
    "You check chains of thought written for retrieval queries. Decide whether the answer is "
    "consistent with the query and the ground-truth target, and how confident you are. Reply "
    "exactly <decision>consistent</decision> or <decision>inconsistent</decision> followed by "
    "<confidence>a number between 0 and 1</confidence>."
)


@dataclass(frozen=True)
class TeacherRequest:
    """One call to a teacher: prompts plus what the oracle needs (metadata, the chain)."""

    id: str
    purpose: Purpose
    system: str
    user: str
    image: str | None = None  # absolute path or None
    meta: str | None = None  # query_src_content (M-BEIR-mini metadata JSON)
    answer: str | None = None  # the chain's answer (verify requests)
    target_image: str | None = None  # absolute path of the ground-truth target image (verify requests)

    @property
    def images(self) -> tuple[str, ...]:
        """Image paths in prompt order: the query image, then the target image."""
        return tuple(p for p in (self.image, self.target_image) if p is not None)


@dataclass(frozen=True)
class TeacherResult:
    """Output of one request: the text, or ``None`` and the failure reason."""

    id: str
    text: str | None
    error: str | None = None


def prompt_texts() -> dict[str, str]:
    """Every fixed prompt text the teachers see (system prompts, format rule), by name."""
    return {**{f"system.{k}": v for k, v in SYSTEM_PROMPTS.items()}, "assessor": ASSESSOR_SYSTEM,
            "verifier": VERIFIER_SYSTEM, "format": FORMAT_RULE}  # fmt: skip


def prompt_kind(dataset_id: int, task_id: int) -> PromptKind:
    """Which task-specific prompt a query gets."""
    if task_id == 7:
        return "edit"
    if dataset_id in KNOWLEDGE_DATASETS or task_id in (1, 6, 8):
        return "knowledge"
    return "visual"


def _query_block(query_txt: str | None, has_image: bool, task_id: int) -> str:
    target = MODALITY_WORDS[TASKS[task_id][1]]
    lines = [f"The retrieval target is {target}."]
    if has_image:
        lines.append("The query image is attached.")
    if query_txt:
        lines.append(f"Query text: {query_txt}")
    return "\n".join(lines)


def chain_user_prompt(query_txt: str | None, has_image: bool, task_id: int, target_hint: str | None) -> str:
    """User message of a chain request; ``target_hint`` is the ground truth (not to be quoted)."""
    text = _query_block(query_txt, has_image, task_id)
    if target_hint:
        text += f"\nGround-truth target (for your guidance; do not mention that it was given): {target_hint}"
    return text


def assessor_user_prompt(query_txt: str | None, has_image: bool, task_id: int) -> str:
    """User message of an assessor request."""
    return _query_block(query_txt, has_image, task_id) + "\nIs this query simple or complex?"


def verifier_user_prompt(
    query_txt: str | None,
    task_id: int,
    reasoning: str,
    answer: str,
    target: str | None,
    query_image: bool = False,
    target_image: bool = False,
) -> str:
    """User message of a verifier request.

    The target is given as text when it has text, else as an image (``target_image``; it comes
    after the query image when both are attached), as the paper's verifier sees the target.
    """
    parts = [_query_block(query_txt, query_image, task_id), f"Reasoning: {reasoning}", f"Answer: {answer}"]
    if target:
        parts.append(f"Ground-truth target: {target}")
    elif target_image:
        which = "the second attached image (the first is the query image)" if query_image else "the attached image"
        parts.append(f"Ground-truth target: {which}")
    return "\n".join(parts)
