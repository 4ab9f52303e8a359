r"""Text utilities of the CoT filters: token counting, normalisation, salient keywords.

Token counts use the teacher's tokenizer when one is given (any ``transformers`` tokenizer
directory, loaded lazily). Without one a documented **word-piece fallback** is used:

* the text is split by the regular expression ``\w+|[^\w\s]`` into words and single
  punctuation marks;
* every word longer than ``piece_chars`` characters (params ``cot_curate.fallback_piece_chars``,
  default 4) counts as ``ceil(len / piece_chars)`` pieces, each punctuation mark as one.

This approximates a BPE tokenizer on English (about 1.3 tokens per word) without loading one.

Salient keywords are lower-cased alphanumeric words of at least ``min_chars`` characters that
are not in :data:`STOPWORDS` (English function words plus the generic retrieval vocabulary of
M-BEIR instructions such as "retrieve" or "image"), with a trailing plural ``s`` removed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache

WORD_RE = re.compile(r"\w+|[^\w\s]")
ALNUM_RE = re.compile(r"[a-z0-9]+")

FUNCTION_WORDS: frozenset[str] = frozenset(
    """a an the and or but if then than so of in on at to for from by with without into onto over
    under above below between about as is are was were be been being it its this that these those
    there here which who whom whose what when where why how not no nor do does did has have had
    will would can could should may might must shall i you he she we they them his her their our
    your my me us him also only just very more most some any all each both other such same own
    too up down out off again once while during before after because until through""".split()
)
#: frequent function words of French, Spanish, German, Italian, Portuguese and Dutch that are
#: not English words (a teacher drifting out of English writes these; the language rule counts them).
FOREIGN_FUNCTION_WORDS: frozenset[str] = (
    frozenset(
        """le la les des du une et est sont dans avec pour sur par qui que ce cette ces il elle ils
    nous vous pas mais ou au aux leur sa ses se el los las unos unas y es del con para como pero
    su sus lo esta este estos der das und ist mit ein eine einer einen nicht auf zu dem sich auch
    wie oder sind ich della di che gli nel nella alla sono da em uma os het een en van niet op
    zijn""".split()
    )
    - FUNCTION_WORDS
)
RETRIEVAL_WORDS: frozenset[str] = frozenset(
    """retrieve find identify match matching matches given show shows shown provide provided
    image images picture pictures photo photos caption captions description describe describes
    described passage passages text texts query answer question questions corresponding
    similar following based using look looks like make want""".split()
)
STOPWORDS: frozenset[str] = FUNCTION_WORDS | RETRIEVAL_WORDS

TokenCounter = Callable[[str], int]


def word_pieces(text: str, piece_chars: int) -> int:
    """Fallback token count: words and punctuation; long words count ``ceil(len/piece_chars)``."""
    return sum(
        max(1, math.ceil(len(t) / piece_chars)) if t[0].isalnum() or t[0] == "_" else 1 for t in WORD_RE.findall(text)
    )


@lru_cache(maxsize=4)
def _hf_tokenizer(path: str):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def token_counter(tokenizer: str | None, piece_chars: int) -> TokenCounter:
    """A token-counting function: the teacher tokenizer at ``tokenizer`` or the fallback."""
    if tokenizer is None:
        return lambda text: word_pieces(text, piece_chars)
    tok = _hf_tokenizer(tokenizer)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def normalise(text: str) -> str:
    """Lower-case, punctuation removed, whitespace collapsed (for equality tests)."""
    return " ".join(ALNUM_RE.findall(text.lower()))


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words."""
    return ALNUM_RE.findall(text.lower())


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def keywords(text: str | None, min_chars: int) -> set[str]:
    """Salient keywords of a text (see the module docstring); empty for ``None``."""
    if not text:
        return set()
    return {_stem(w) for w in words(text) if len(w) >= min_chars and w not in STOPWORDS}


def jaccard(a: set[str], b: set[str]) -> float:
    """Jaccard similarity of two sets (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def shingles(text: str, n: int = 2) -> set[str]:
    """Word n-grams of the normalised text (the words themselves when shorter than n)."""
    ws = words(text)
    if len(ws) < n:
        return set(ws)
    return {" ".join(ws[i : i + n]) for i in range(len(ws) - n + 1)}
