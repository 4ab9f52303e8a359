r"""UniIR's text normalisation of query and candidate text (``data.normalize_text``).

UniIR (``format_string`` in its data utilities) normalises every text it embeds, and LamRA
does the same for candidates. The rule, applied in this order:

1. carriage returns (``\r``) are removed everywhere;
2. surrounding whitespace is stripped;
3. double quotes at either end are stripped (quotes inside the text stay; whitespace that a
   stripped quote uncovers is kept, exactly as UniIR does);
4. the first character is upper-cased;
5. a period is appended unless the text already ends with ``.``, ``?`` or ``!``.

An empty result stays empty. Query text with an instruction is built as UniIR builds it: the
prompt is normalised on its own, then ``"<prompt> <query_txt>"`` is normalised as a whole
(an image-only query thus gets the normalised prompt alone). ``none`` embeds raw text: the
instruction and the query text are joined by one space and stripped, nothing else.
"""

from __future__ import annotations

from typing import Literal

TextNorm = Literal["uniir", "none"]
SENTENCE_END: tuple[str, ...] = (".", "?", "!")


def uniir_format(text: str | None) -> str:
    """UniIR's normalisation of one text (see the module docstring); ``None`` gives ``""``."""
    s = (text or "").replace("\r", "").strip().strip('"')
    if not s:
        return s
    s = s[:1].upper() + s[1:]
    return s if s.endswith(SENTENCE_END) else s + "."


def normalize(text: str | None, mode: TextNorm) -> str | None:
    """A candidate's (or an uninstructed query's) text as encoded; ``None`` stays ``None``.

    Under ``uniir`` a text that normalises to nothing becomes ``None`` (the item has no text).
    """
    if text is None or mode == "none":
        return text
    return uniir_format(text) or None


def instructed(prompt: str, query_txt: str | None, mode: TextNorm) -> str:
    """``"<prompt> <query_txt>"`` as encoded (the prompt alone for an image-only query)."""
    if mode == "none":
        return f"{prompt} {query_txt or ''}".strip()
    return uniir_format(f"{uniir_format(prompt)} {query_txt or ''}")
