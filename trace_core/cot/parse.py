"""Parsing of teacher outputs: chains, assessor labels and verifier verdicts.

A chain is well formed when the text holds exactly one ``<reasoning>...</reasoning>``
followed by exactly one ``<answer>...</answer>``, both non-empty, with nothing but
whitespace outside the two elements and no other tag of either kind inside them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CHAIN_RE = re.compile(r"\s*<reasoning>(.*?)</reasoning>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
LABEL_RE = re.compile(r"<label>\s*(simple|complex)\s*</label>", re.IGNORECASE)
DECISION_RE = re.compile(r"<decision>\s*(consistent|inconsistent)\s*</decision>", re.IGNORECASE)
CONFIDENCE_RE = re.compile(r"<confidence>\s*([0-9]*\.?[0-9]+)\s*</confidence>", re.IGNORECASE)


@dataclass(frozen=True)
class Chain:
    """A parsed chain of thought (tags stripped, surrounding whitespace removed)."""

    reasoning: str
    answer: str


@dataclass(frozen=True)
class Verdict:
    """A verifier's judgement of one chain; ``error`` set when it could not be obtained."""

    decision: str
    confidence: float
    error: str | None = None


def parse_chain(raw: str | None) -> tuple[Chain | None, str]:
    """Parse a chain; return ``(chain, "")`` or ``(None, reason)``."""
    if raw is None or not raw.strip():
        return None, "empty output"
    counts = {t: raw.count(t) for t in TAGS}
    if any(c != 1 for c in counts.values()):
        found = ", ".join(f"{t} x{c}" for t, c in counts.items() if c != 1)
        return None, f"need exactly one reasoning/answer pair ({found})"
    m = CHAIN_RE.fullmatch(raw)
    if m is None:
        return None, "tags out of order or text outside the reasoning/answer pair"
    reasoning, answer = m.group(1).strip(), m.group(2).strip()
    if not reasoning or not answer:
        return None, "empty reasoning or answer"
    return Chain(reasoning, answer), ""


def format_chain(reasoning: str, answer: str) -> str:
    """The teacher output format ``<reasoning>...</reasoning><answer>...</answer>``."""
    return f"<reasoning>{reasoning}</reasoning><answer>{answer}</answer>"


def parse_label(raw: str | None) -> int | None:
    """Assessor label: ``<label>complex</label>`` -> 1, ``simple`` -> 0, else ``None``."""
    m = LABEL_RE.search(raw or "")
    if m is None:
        return None
    return 1 if m.group(1).lower() == "complex" else 0


def parse_verdict(raw: str | None) -> Verdict:
    """Verifier output ``<decision>..</decision><confidence>x</confidence>`` as a :class:`Verdict`."""
    d, c = DECISION_RE.search(raw or ""), CONFIDENCE_RE.search(raw or "")
    if d is None or c is None:
        return Verdict("unparsed", 0.0, "verifier output lacks <decision> or <confidence>")
    conf = float(c.group(1))
    if not 0.0 <= conf <= 1.0:
        return Verdict("unparsed", 0.0, f"confidence {conf} outside [0, 1]")
    return Verdict(d.group(1).lower(), conf)


def format_verdict(decision: str, confidence: float) -> str:
    """The verifier output format."""
    return f"<decision>{decision}</decision><confidence>{confidence:.3f}</confidence>"
