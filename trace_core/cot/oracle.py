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
from typing import Any

from trace_core.cot.parse import format_chain, format_verdict
from trace_core.cot.text import keywords, words

COMPLEX_KINDS = frozenset({"edit", "knowledge"})
REQUIRED: dict[str, tuple[str, ...]] = {
    "scene": ("scene", "caption"),
    "news": ("scene", "caption"),
    "item": ("object", "description"),
    "edit": ("source", "source_caption", "modification", "change", "target", "target_caption"),
    "knowledge": ("entity", "scene", "question", "answer", "passage"),
}
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")


class OracleError(ValueError):
    """Metadata missing or not in the M-BEIR-mini schema."""


def load_meta(meta: str | None) -> dict[str, Any]:
    """Parse and check ``query_src_content``; raise :class:`OracleError` with the reason."""
    if meta is None:
        raise OracleError("oracle needs query_src_content metadata (got null)")
    try:
        obj = json.loads(meta)
    except json.JSONDecodeError as err:
        raise OracleError(f"query_src_content is not JSON ({err.msg})") from None
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if kind not in REQUIRED:
        raise OracleError(f"unsupported metadata kind {kind!r}")
    missing = [k for k in REQUIRED[kind] if k not in obj]
    if missing:
        raise OracleError(f"{kind} metadata lacks {', '.join(missing)}")
    checked: dict[str, Any] = obj
    return checked


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


def object_phrase(obj: dict[str, Any], with_position: bool = True) -> str:
    """``"small red circle at the top left"``."""
    base = f"{obj.get('size', '')} {obj.get('color', '')} {obj.get('shape', 'object')}".split()
    text = " ".join(base)
    return f"{text} at the {obj['position']}" if with_position and obj.get("position") else text


def scene_phrase(scene: dict[str, Any]) -> str:
    """All objects of a scene and its background in one phrase."""
    objs = [f"a {object_phrase(o)}" for o in scene.get("objects", [])]
    listed = ", ".join(objs[:-1]) + (" and " if len(objs) > 1 else "") + (objs[-1] if objs else "no objects")
    bg = scene.get("background")
    return f"{listed} on a {bg} background" if bg else listed


def edit_chain(m: dict[str, Any], qid: str, seed: int) -> tuple[str, str]:
    """(reasoning, answer) of a composed edit."""
    ch, objs = m["change"], m["source"].get("objects", [])
    idx = int(ch.get("object", 0))
    changed = objs[idx] if 0 <= idx < len(objs) else {}
    others = [
        f"the {o.get('color', '')} {o.get('shape', 'object')} ({o.get('position', '')})"
        for i, o in enumerate(objs)
        if i != idx
    ]
    attr = ch.get("attribute", "attribute")
    kept_attrs = [f"{a} {changed[a]}" for a in ("shape", "color", "size", "position") if a != attr and a in changed]
    src = pick(
        qid, seed, "src", ("The source image shows", "The query image contains", "In the reference image there is")
    )
    req = pick(qid, seed, "req", ("The requested change", "The modification", "The instruction"))
    inv = pick(qid, seed, "inv", ("Everything else stays the same", "The rest is unchanged", "What remains invariant"))
    parts = [
        f"{src} {lower_first(m['source_caption'])}.",
        f"{req} is '{lower_first(m['modification'])}': the {attr} of the {object_phrase(changed, False)} "
        f"goes from {ch.get('from')} to {ch.get('to')}.",
        f"{inv}: " + ", ".join([*others, f"the {m['source'].get('background', 'plain')} background"]) + ".",
    ]
    if kept_attrs:
        parts.append(f"The edited object keeps its {', '.join(kept_attrs)}.")
    return " ".join(parts), sentence(m["target_caption"])


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


def knowledge_chain(m: dict[str, Any], qid: str, seed: int, max_words: int) -> tuple[str, str]:
    """(reasoning, answer) of a knowledge question."""
    see = pick(qid, seed, "see", ("The image shows", "In the picture there is", "The query image depicts"))
    ident = pick(qid, seed, "id", ("which identifies the entity as", "so the entity in question is", "which points to"))
    asks = pick(qid, seed, "ask", ("The question asks", "What is asked is", "The query wants to know"))
    reasoning = (
        f"{see} {scene_phrase(m['scene'])}, {ident} {m['entity']}. "
        f"{asks} '{lower_first(m['question'])}' about {m['entity']}, and the answer is {m['answer']}. "
        f"The passage about {m['entity']} states this."
    )
    facts = passage_facts(m["passage"], str(m["answer"]), max(4, max_words - len(str(m["entity"]).split())))
    return reasoning, f"{m['entity']}: {facts}"


def caption_chain(m: dict[str, Any], qid: str, seed: int) -> tuple[str, str]:
    """(reasoning, answer) of a plain caption-matching query (scene, news or item)."""
    look = pick(qid, seed, "look", ("The target should show", "The matching content depicts", "We are looking for"))
    if m["kind"] == "item":
        desc, caption = f"a single {object_phrase(m['object'])}", m["description"]
    else:
        desc, caption = scene_phrase(m["scene"]), m["caption"]
    reasoning = f"{look} {desc}. The caption names each object with its colour, size and position."
    return reasoning, sentence(caption)


def oracle_chain(meta: str | None, qid: str, seed: int, max_words: int) -> str:
    """The teacher output for a query, in the ``<reasoning>..<answer>..`` format."""
    m = load_meta(meta)
    if m["kind"] == "edit":
        r, a = edit_chain(m, qid, seed)
    elif m["kind"] == "knowledge":
        r, a = knowledge_chain(m, qid, seed, max_words)
    else:
        r, a = caption_chain(m, qid, seed)
    return format_chain(r, a)


def oracle_label(meta: str | None) -> str:
    """Assessor output: complex for edits and knowledge questions, simple otherwise."""
    kind = load_meta(meta)["kind"]
    return f"<label>{'complex' if kind in COMPLEX_KINDS else 'simple'}</label>"


def expected_target(m: dict[str, Any]) -> tuple[str, list[str]]:
    """(expected answer text, words the answer must contain) recomputed from metadata."""
    if m["kind"] == "edit":
        return m["target_caption"], words(str(m["change"].get("to", "")))
    if m["kind"] == "knowledge":
        return f"{m['entity']} {m['answer']}", words(str(m["entity"]))
    text = m["description"] if m["kind"] == "item" else m["caption"]
    return text, []


def oracle_verdict(meta: str | None, answer: str, min_chars: int) -> str:
    """Verifier output: consistent iff the critical words appear; confidence = keyword recall."""
    m = load_meta(meta)
    expected, critical = expected_target(m)
    have = set(words(answer))
    want = keywords(expected, min_chars)
    conf = len(want & keywords(answer, min_chars)) / len(want) if want else 0.0
    ok = all(w in have for w in critical)
    return format_verdict("consistent" if ok else "inconsistent", conf)
