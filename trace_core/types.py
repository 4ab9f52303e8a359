"""Typed records shared by every stage (M-BEIR layout and TRACE training samples)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Modality = Literal["text", "image", "image,text"]
MODALITIES: tuple[str, ...] = ("text", "image", "image,text")
Side = Literal["query", "candidate"]
Route = Literal["direct", "reasoned", "forced"]
RoutingMode = Literal["adaptive", "never", "always"]
ROUTING_MODES: tuple[RoutingMode, ...] = ("adaptive", "never", "always")


def routing_mode(value: str) -> RoutingMode:
    """``value`` as a :data:`RoutingMode`; ``ValueError`` names the allowed modes otherwise."""
    for mode in ROUTING_MODES:
        if value == mode:
            return mode
    raise ValueError(f"routing must be adaptive, never or always, got '{value}'")


@dataclass(frozen=True, slots=True)
class QueryRecord:
    """One M-BEIR query line."""

    qid: str
    query_txt: str | None
    query_img_path: str | None
    query_modality: str
    query_src_content: str | None
    pos_cand_list: tuple[str, ...]
    neg_cand_list: tuple[str, ...]
    task_id: int

    @property
    def dataset_id(self) -> int:
        """Dataset id encoded in the qid prefix."""
        return int(self.qid.split(":", 1)[0])


@dataclass(frozen=True, slots=True)
class CandidateRecord:
    """One M-BEIR candidate-pool line."""

    did: str
    txt: str | None
    img_path: str | None
    modality: str
    src_content: str | None

    @property
    def dataset_id(self) -> int:
        """Dataset id encoded in the did prefix."""
        return int(self.did.split(":", 1)[0])


@dataclass(frozen=True, slots=True)
class QrelsEntry:
    """Positives of one query in one qrels file."""

    qid: str
    task_id: int
    positives: frozenset[str]


#: one part of an interleaved user turn: ``("text", words)`` or ``("image", path)``.
Segment = tuple[Literal["text", "image"], str]


@dataclass(frozen=True, slots=True)
class EncodeItem:
    """What the model encodes: text (instruction-prefixed for queries) and/or an image.

    ``img_path`` is relative to the data root. ``task_id`` selects the prompt template.
    ``segments``, when not empty, is the whole user turn in order (several images and texts
    interleaved: a story, a multi-turn dialogue); ``text`` and ``img_path`` are then None.
    """

    id: str
    task_id: int
    text: str | None
    img_path: str | None
    segments: tuple[Segment, ...] = ()

    def __post_init__(self) -> None:
        if self.segments and (self.text is not None or self.img_path is not None):
            raise ValueError(f"item {self.id}: an item with segments has no separate text or img_path")
        for kind, _ in self.segments:
            if kind not in ("text", "image"):
                raise ValueError(f"item {self.id}: segment kind must be 'text' or 'image', got {kind!r}")


@dataclass(frozen=True, slots=True)
class TrainSample:
    r"""One row of the M-BEIR-CoT training file (output of ``cot_build``).

    ``target`` is the assistant response the generation loss teaches, ending with the
    ``<|emb|>`` token: ``"<|emb|>"`` for z=0, ``"reasoning\nanswer<|emb|>"`` for z=1.
    ``embed_target`` (self-chain training, never in the file): a response ending with
    ``<|emb|>`` after which the query's InfoNCE embedding is pooled instead (the model's own
    chain); ``target`` then only carries the generation loss. None: pooled after ``target``.
    """

    qid: str
    task_id: int
    dataset_id: int
    z: int
    query: EncodeItem
    positive: EncodeItem
    target: str
    instruction: str = ""
    negatives: tuple[EncodeItem, ...] = field(default_factory=tuple)
    embed_target: str | None = None
