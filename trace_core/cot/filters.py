"""The rule filter of M-BEIR-CoT (TRACE.md section 5.3), pure functions.

Rules, applied in this order; the first that fails names the drop. ``language`` comes right
after ``format``: a chain in another language is reported as such, not under a later rule it
also breaks (its keywords, lengths and n-grams mean nothing in an English filter).

``format``      exactly one well-formed ``<reasoning>`` then ``<answer>`` pair (:mod:`.parse`).
``language``    English: at least ``min_english_ratio`` of the letters are ASCII, the reasoning
                holds at least ``min_english_function_words`` English function words, and of
                the function words found in the chain (English ones and those of French,
                Spanish, German, Italian, Portuguese and Dutch, :data:`FOREIGN_FUNCTION_WORDS`)
                at least ``min_english_function_share`` are English.
``length``      reasoning in ``[reasoning_min_tokens, reasoning_max_tokens]`` and answer in
                ``[answer_min_tokens, answer_max_tokens]`` tokens (teacher tokenizer or the
                word-piece fallback of :mod:`.text`).
``repetition``  no word ``ngram_n``-gram occurs more than ``max_ngram_repeat`` times within
                the reasoning or within the answer.
``refusal``     no refusal or boilerplate phrase (:data:`REFUSAL_PATTERNS` plus
                ``extra_refusal_patterns``), case-insensitive.
``keyword``     the answer shares at least one salient keyword with the instructed query text
                or the ground-truth target text (skipped when both are missing).
``unchanged``   for an edit the answer differs from the source: from the source caption after
                normalisation when one is known (``source_txt``, M-BEIR-mini metadata); for a
                composed-retrieval query without one (real CIRR/FashionIQ records carry only
                image ids) the answer must not merely repeat the reasoning's first sentence,
                which the edit prompt asks to describe the source image.
``duplicate``   near-duplicate (query, answer) pairs: among records with the same normalised
                query text and query image, an answer whose word-bigram Jaccard similarity to
                an earlier kept answer is at least ``near_duplicate_threshold`` is dropped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from trace_core.config import CotCurateParams
from trace_core.cot.parse import Chain, parse_chain
from trace_core.cot.text import (
    FOREIGN_FUNCTION_WORDS,
    FUNCTION_WORDS,
    TokenCounter,
    jaccard,
    keywords,
    normalise,
    shingles,
    words,
)

RULES: tuple[str, ...] = ("format", "language", "length", "repetition", "refusal", "keyword", "unchanged", "duplicate")
EDIT_TASKS: frozenset[int] = frozenset({7})  # composed image retrieval: (image, text) -> image
SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s")
REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bas an ai\b",
    r"\blanguage model\b",
    r"\bi (?:can ?not|can't|cannot|am unable to|'m unable to|am not able to)\b",
    r"\b(?:can ?not|can't|unable to|impossible to|not possible to) (?:determine|tell|identify|answer|see)\b",
    r"\bi'?m sorry\b|\bi am sorry\b|\bsorry,",
    r"\bnot enough information\b|\binsufficient information\b",
    r"\bi don'?t know\b",
    r"^(?:sure|certainly|of course)\b",
    r"\bhere(?: is|'s) (?:the|a|my) (?:answer|description|reasoning)\b",
    r"\bas requested\b",
)


@dataclass(frozen=True)
class FilterInput:
    """One teacher output to filter (the ``cot-filter`` record fields)."""

    qid: str
    raw: str | None
    query_txt: str | None
    target_txt: str | None
    source_txt: str | None
    query_img_path: str | None = None
    task_id: int | None = None


@dataclass
class FilterResult:
    """Kept ``(record, chain)`` pairs and dropped ``(record, rule, detail)`` triples."""

    kept: list[tuple[FilterInput, Chain]] = field(default_factory=list)
    dropped: list[tuple[FilterInput, str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Drops per rule (every rule listed, zero included)."""
        c = Counter(rule for _, rule, _ in self.dropped)
        return {r: c.get(r, 0) for r in RULES}


def check_length(chain: Chain, cfg: CotCurateParams, count: TokenCounter) -> str:
    """Empty string when the lengths are in range, else the reason."""
    nr, na = count(chain.reasoning), count(chain.answer)
    if not cfg.reasoning_min_tokens <= nr <= cfg.reasoning_max_tokens:
        return f"reasoning has {nr} tokens, allowed {cfg.reasoning_min_tokens}-{cfg.reasoning_max_tokens}"
    if not cfg.answer_min_tokens <= na <= cfg.answer_max_tokens:
        return f"answer has {na} tokens, allowed {cfg.answer_min_tokens}-{cfg.answer_max_tokens}"
    return ""


def check_repetition(chain: Chain, cfg: CotCurateParams) -> str:
    """Empty string unless an n-gram repeats more than allowed within one field."""
    for name, text in (("reasoning", chain.reasoning), ("answer", chain.answer)):
        ws = words(text)
        grams = Counter(tuple(ws[i : i + cfg.ngram_n]) for i in range(len(ws) - cfg.ngram_n + 1))
        if grams:
            gram, n = grams.most_common(1)[0]
            if n > cfg.max_ngram_repeat:
                return f"{name} repeats '{' '.join(gram)}' {n} times (max {cfg.max_ngram_repeat})"
    return ""


def check_language(chain: Chain, cfg: CotCurateParams) -> str:
    """Empty string when the chain reads as English."""
    text = f"{chain.reasoning} {chain.answer}"
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "no letters"
    ratio = sum(ch.isascii() for ch in letters) / len(letters)
    if ratio < cfg.min_english_ratio:
        return f"ASCII letter ratio {ratio:.2f} < {cfg.min_english_ratio}"
    n_func = sum(w in FUNCTION_WORDS for w in words(chain.reasoning))
    if n_func < cfg.min_english_function_words:
        return f"reasoning has {n_func} English function words (< {cfg.min_english_function_words})"
    all_words = words(text)
    n_en = sum(w in FUNCTION_WORDS for w in all_words)
    n_foreign = sum(w in FOREIGN_FUNCTION_WORDS for w in all_words)
    share = n_en / (n_en + n_foreign) if n_en + n_foreign else 1.0
    if share < cfg.min_english_function_share:
        return (
            f"{n_en} of {n_en + n_foreign} function words are English "
            f"(share {share:.2f} < {cfg.min_english_function_share})"
        )
    return ""


def check_refusal(chain: Chain, cfg: CotCurateParams) -> str:
    """Empty string unless a refusal/boilerplate pattern matches either field."""
    patterns = (*REFUSAL_PATTERNS, *cfg.extra_refusal_patterns)
    for text in (chain.reasoning, chain.answer):
        for pat in patterns:
            m = re.search(pat, text.strip(), re.IGNORECASE)
            if m:
                return f"refusal/boilerplate phrase '{m.group(0)}'"
    return ""


def check_keyword(rec: FilterInput, chain: Chain, cfg: CotCurateParams) -> str:
    """Empty string when the answer shares a salient keyword with the query or target text."""
    ref = keywords(rec.query_txt, cfg.keyword_min_chars) | keywords(rec.target_txt, cfg.keyword_min_chars)
    if not ref:
        return ""
    if keywords(chain.answer, cfg.keyword_min_chars) & ref:
        return ""
    return "answer shares no salient keyword with the query or the target text"


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (the whole text when it has one sentence)."""
    return SENTENCE_END_RE.split(text.strip(), maxsplit=1)[0]


def check_unchanged(rec: FilterInput, chain: Chain) -> str:
    """Empty string unless an edit's answer restates its source (see the module docstring)."""
    answer = normalise(chain.answer)
    if rec.source_txt is not None:
        return "answer equals the source caption (edit not applied)" if answer == normalise(rec.source_txt) else ""
    if rec.task_id in EDIT_TASKS and answer and f" {answer} " in f" {normalise(first_sentence(chain.reasoning))} ":
        return "answer repeats the reasoning's description of the source image (edit not applied)"
    return ""


def record_rules(rec: FilterInput, cfg: CotCurateParams, count: TokenCounter) -> tuple[Chain | None, str, str]:
    """Apply the per-record rules; return ``(chain, "", "")`` or ``(None, rule, detail)``."""
    chain, why = parse_chain(rec.raw)
    if chain is None:
        return None, "format", why
    checks: tuple[tuple[str, Callable[[], str]], ...] = (
        ("language", lambda: check_language(chain, cfg)),
        ("length", lambda: check_length(chain, cfg, count)),
        ("repetition", lambda: check_repetition(chain, cfg)),
        ("refusal", lambda: check_refusal(chain, cfg)),
        ("keyword", lambda: check_keyword(rec, chain, cfg)),
        ("unchanged", lambda: check_unchanged(rec, chain)),
    )
    for rule, check in checks:
        detail = check()
        if detail:
            return None, rule, detail
    return chain, "", ""


def dedupe_key(rec: FilterInput) -> tuple[str, str]:
    """Records compete for the near-duplicate rule only within the same query."""
    return normalise(rec.query_txt or ""), rec.query_img_path or ""


def apply_rules(records: Iterable[FilterInput], cfg: CotCurateParams, count: TokenCounter) -> FilterResult:
    """Run the whole rule filter in input order (the first of near-duplicates is kept)."""
    out = FilterResult()
    seen: dict[tuple[str, str], list[tuple[str, set[str]]]] = {}
    for rec in records:
        chain, rule, detail = record_rules(rec, cfg, count)
        if chain is None:
            out.dropped.append((rec, rule, detail))
            continue
        bucket = seen.setdefault(dedupe_key(rec), [])
        sh = shingles(chain.answer)
        dup = next((qid for qid, other in bucket if jaccard(sh, other) >= cfg.near_duplicate_threshold), None)
        if dup is not None:
            out.dropped.append((rec, "duplicate", f"near-duplicate of {dup}"))
            continue
        bucket.append((rec.qid, sh))
        out.kept.append((rec, chain))
    return out


def input_from_dict(d: dict[str, Any]) -> FilterInput:
    """A :class:`FilterInput` from a record dict (extra keys ignored)."""
    return FilterInput(
        qid=str(d["qid"]),
        raw=d.get("raw"),
        query_txt=d.get("query_txt"),
        target_txt=d.get("target_txt"),
        source_txt=d.get("source_txt"),
        query_img_path=d.get("query_img_path"),
        task_id=d.get("task_id"),
    )
