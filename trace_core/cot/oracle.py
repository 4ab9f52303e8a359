"""Exact chains, routing labels and verdicts from M-BEIR-mini metadata (pure functions).

The metadata is the ``query_src_content`` JSON of a query (``docs/schema``: kinds ``scene``,
``item``, ``news``, ``edit``, ``knowledge``). Chains follow the paper's format: for an edit the
reasoning states the source, the requested change and what stays the same, and the answer is
the target caption; for a knowledge question the reasoning names the entity and what the
question asks, and the answer gives the entity with the key facts of its passage. Wording
varies deterministically per query id (seeded) so near-duplicate filtering keeps them.
"""

from __future__ import annotations

import hashlib
import json
import re

from trace_core.cot.parse import format_chain, format_verdict
from trace_core.cot.text import keywords, words
from trace_core.data.mini.scene import (
    EditPayload,
    ItemPayload,
    KnowledgePayload,
    NewsPayload,
    Payload,
    Scene,
    SceneObject,
    ScenePayload,
    payload_from_json,
)

SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
QueryPayload = ScenePayload | NewsPayload | ItemPayload | EditPayload | KnowledgePayload


class OracleError(ValueError):
    """Metadata missing or not in the M-BEIR-mini schema."""


def load_meta(meta: str | None) -> QueryPayload:
    """Parse ``query_src_content`` into its typed M-BEIR-mini payload; :class:`OracleError` says why not."""
    if meta is None:
        raise OracleError("oracle needs query_src_content metadata (got null)")
    try:
        payload: Payload = payload_from_json(meta)
    except json.JSONDecodeError as err:
        raise OracleError(f"query_src_content is not JSON ({err.msg})") from None
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise OracleError(f"query_src_content is not M-BEIR-mini metadata ({type(err).__name__}: {err})") from None
    if not isinstance(payload, (ScenePayload, NewsPayload, ItemPayload, EditPayload, KnowledgePayload)):
        raise OracleError(f"unsupported metadata kind {payload.kind!r} for a query")
    return payload


def pick(qid: str, seed: int, salt: str, options: tuple[str, ...]) -> str:
    """Deterministic choice among wordings, a hash of (seed, qid, salt)."""
    h = hashlib.sha256(f"{seed}:{qid}:{salt}".encode()).digest()
    return options[int.from_bytes(h[:4], "big") % len(options)]


def sentence(text: str) -> str:
    """Strip, upper-case the first letter, end with a period."""
    t = text.strip()
    if not t:
        return t
    t = t[0].upper() + t[1:]
    return t if t.endswith((".", "!", "?")) else t + "."


def lower_first(text: str) -> str:
    """Lower-case the first letter and drop a final period (to embed a caption in a sentence)."""
    t = text.strip().rstrip(".")
    return t[:1].lower() + t[1:]


def object_phrase(obj: SceneObject, with_position: bool = True) -> str:
    """``"small red circle at the top left"``."""
    text = f"{obj.size} {obj.color} {obj.shape}"
    return f"{text} at the {obj.position}" if with_position else text


def scene_phrase(scene: Scene) -> str:
    """All objects of a scene and its background in one phrase."""
    objs = [f"a {object_phrase(o)}" for o in scene.objects]
    listed = ", ".join(objs[:-1]) + (" and " if len(objs) > 1 else "") + (objs[-1] if objs else "no objects")
    return f"{listed} on a {scene.background} background" if scene.background else listed


def edit_chain(m: EditPayload, qid: str, seed: int) -> tuple[str, str]:
    """(reasoning, answer) of a composed edit."""
    ch, objs = m.change, m.source.objects
    if not 0 <= ch.object < len(objs):
        raise OracleError(f"edit changes object {ch.object} of a scene with {len(objs)} objects")
    changed = objs[ch.object]
    others = [f"the {o.color} {o.shape} ({o.position})" for i, o in enumerate(objs) if i != ch.object]
    attr = ch.attribute
    kept_attrs = [f"{a} {getattr(changed, a)}" for a in ("shape", "color", "size", "position") if a != attr]
    src = pick(
        qid, seed, "src", ("The source image shows", "The query image contains", "In the reference image there is")
    )
    req = pick(qid, seed, "req", ("The requested change", "The modification", "The instruction"))
    inv = pick(qid, seed, "inv", ("Everything else stays the same", "The rest is unchanged", "What remains invariant"))
    parts = [
        f"{src} {lower_first(m.source_caption)}.",
        f"{req} is '{lower_first(m.modification)}': the {attr} of the {object_phrase(changed, False)} "
        f"goes from {ch.from_} to {ch.to}.",
        f"{inv}: " + ", ".join([*others, f"the {m.source.background} background"]) + ".",
    ]
    if kept_attrs:
        parts.append(f"The edited object keeps its {', '.join(kept_attrs)}.")
    return " ".join(parts), sentence(m.target_caption)


def passage_facts(passage: str, answer: str, max_words: int) -> str:
    """Passage sentences, those holding the answer first, within ``max_words`` words."""
    sents = [s for s in SENTENCE_RE.split(passage.strip()) if s]
    ordered = [s for s in sents if answer.lower() in s.lower()] + [s for s in sents if answer.lower() not in s.lower()]
    out: list[str] = []
    budget = max_words
    for s in ordered:
        n = len(s.split())
        if n > budget:
            if not out:
                out.append(" ".join(s.split()[:budget]).rstrip(",;:") + ".")
            break
        out.append(s)
        budget -= n
    return " ".join(out)


def knowledge_chain(m: KnowledgePayload, qid: str, seed: int, max_words: int) -> tuple[str, str]:
    """(reasoning, answer) of a knowledge question."""
    see = pick(qid, seed, "see", ("The image shows", "In the picture there is", "The query image depicts"))
    ident = pick(qid, seed, "id", ("which identifies the entity as", "so the entity in question is", "which points to"))
    asks = pick(qid, seed, "ask", ("The question asks", "What is asked is", "The query wants to know"))
    reasoning = (
        f"{see} {scene_phrase(m.scene)}, {ident} {m.entity}. "
        f"{asks} '{lower_first(m.question)}' about {m.entity}, and the answer is {m.answer}. "
        f"The passage about {m.entity} states this."
    )
    facts = passage_facts(m.passage, m.answer, max(4, max_words - len(m.entity.split())))
    return reasoning, f"{m.entity}: {facts}"


def caption_chain(m: ScenePayload | NewsPayload | ItemPayload, qid: str, seed: int) -> tuple[str, str]:
    """(reasoning, answer) of a plain caption-matching query (scene, news or item)."""
    look = pick(qid, seed, "look", ("The target should show", "The matching content depicts", "We are looking for"))
    if isinstance(m, ItemPayload):
        desc, caption = f"a single {object_phrase(m.object)}", m.description
    else:
        desc, caption = scene_phrase(m.scene), m.caption
    reasoning = f"{look} {desc}. The caption names each object with its colour, size and position."
    return reasoning, sentence(caption)


def oracle_chain(meta: str | None, qid: str, seed: int, max_words: int) -> str:
    """The teacher output for a query, in the ``<reasoning>..<answer>..`` format."""
    m = load_meta(meta)
    if isinstance(m, EditPayload):
        r, a = edit_chain(m, qid, seed)
    elif isinstance(m, KnowledgePayload):
        r, a = knowledge_chain(m, qid, seed, max_words)
    else:
        r, a = caption_chain(m, qid, seed)
    return format_chain(r, a)


def oracle_label(meta: str | None) -> str:
    """Assessor output: complex for edits and knowledge questions, simple otherwise."""
    complex_ = isinstance(load_meta(meta), (EditPayload, KnowledgePayload))
    return f"<label>{'complex' if complex_ else 'simple'}</label>"


def expected_target(m: QueryPayload) -> tuple[str, list[str]]:
    """(expected answer text, words the answer must contain) recomputed from metadata."""
    if isinstance(m, EditPayload):
        return m.target_caption, words(m.change.to)
    if isinstance(m, KnowledgePayload):
        return f"{m.entity} {m.answer}", words(m.entity)
    return (m.description if isinstance(m, ItemPayload) else m.caption), []


def oracle_verdict(meta: str | None, answer: str, min_chars: int) -> str:
    """Verifier output: consistent iff the critical words appear; confidence = keyword recall."""
    m = load_meta(meta)
    expected, critical = expected_target(m)
    have = set(words(answer))
    want = keywords(expected, min_chars)
    conf = len(want & keywords(answer, min_chars)) / len(want) if want else 0.0
    ok = all(w in have for w in critical)
    return format_verdict("consistent" if ok else "inconsistent", conf)
