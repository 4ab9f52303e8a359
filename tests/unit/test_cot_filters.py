"""Accept and reject cases for every rule of the CoT rule filter, and the chain parser."""

from __future__ import annotations

import pytest

from trace_core.config import CotCurateParams
from trace_core.cot.filters import RULES, FilterInput, apply_rules, record_rules
from trace_core.cot.parse import parse_chain, parse_label, parse_verdict
from trace_core.cot.text import keywords, normalise, token_counter, word_pieces

CFG = CotCurateParams()
COUNT = token_counter(None, CFG.fallback_piece_chars)
GOOD_REASONING = (
    "The source image shows a small red circle at the top left on a white background. The request is to make "
    "the circle green, so only its colour changes while the position and size stay the same."
)
GOOD_ANSWER = "A small green circle at the top left on a white background."


def chain(reasoning: str = GOOD_REASONING, answer: str = GOOD_ANSWER) -> str:
    return f"<reasoning>{reasoning}</reasoning><answer>{answer}</answer>"


def rec(
    raw: str | None,
    qid: str = "8:1",
    query: str | None = "Make the red circle green.",
    target: str | None = GOOD_ANSWER,
    source: str | None = None,
    img: str | None = "a.png",
) -> FilterInput:
    return FilterInput(qid, raw, query, target, source, img)


def rule_of(r: FilterInput, cfg: CotCurateParams = CFG) -> str:
    return record_rules(r, cfg, COUNT)[1]


def test_good_chain_passes_every_rule():
    kept, rule, detail = record_rules(
        rec(chain(), source="A small red circle at the top left on a white background."), CFG, COUNT
    )
    assert rule == "" and detail == ""
    assert kept is not None and kept.answer == GOOD_ANSWER


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "no tags at all",
        f"<answer>{GOOD_ANSWER}</answer><reasoning>{GOOD_REASONING}</reasoning>",  # wrong order
        chain() + chain(),  # two pairs
        f"<reasoning>{GOOD_REASONING}</reasoning>",  # missing answer
        f"Sure. {chain()}",  # text outside the pair
        f"<reasoning>{GOOD_REASONING}<answer>x</answer></reasoning><answer>{GOOD_ANSWER}</answer>",
        "<reasoning>  </reasoning><answer>x y</answer>",  # empty reasoning
    ],
)
def test_format_rejects(raw):
    assert rule_of(rec(raw)) == "format"


def test_format_accepts_surrounding_whitespace():
    assert rule_of(rec("\n  " + chain() + "\n")) == ""
    assert parse_chain("<reasoning> a </reasoning>\n<answer> b </answer>")[0] is not None


def test_length_rules():
    assert rule_of(rec(chain(reasoning="Too short to count."))) == "length"
    long_reasoning = " ".join(f"word{i} is here" for i in range(200))
    assert rule_of(rec(chain(reasoning=long_reasoning))) == "length"
    assert rule_of(rec(chain(answer="Red"))) == "length"
    assert rule_of(rec(chain(answer=" ".join(["green circle"] * 40)))) == "length"
    tight = CFG.model_copy(update={"answer_min_tokens": 1})
    assert rule_of(rec(chain(answer="Red")), tight) == ""


def test_fallback_word_pieces():
    assert word_pieces("a cat", 4) == 2
    assert word_pieces("extraordinary!", 4) == 5  # ceil(13/4)=4 pieces + '!'
    assert word_pieces("", 4) == 0


def test_repetition_rule():
    loop = GOOD_REASONING + " " + " ".join(["the red circle is"] * 4)
    assert rule_of(rec(chain(reasoning=loop))) == "repetition"
    three = GOOD_REASONING + " " + " ".join(["the red circle is"] * 3)
    assert rule_of(rec(chain(reasoning=three))) == ""  # three repeats are allowed (max 3)


def test_language_rule():
    chinese = "源图像显示左上角有一个红色的小圆圈，背景是白色的。要求把圆圈变成绿色，位置和大小不变。" * 2
    assert rule_of(rec(chain(reasoning=chinese))) in ("language", "length")
    mixed = GOOD_REASONING + " 源图像显示左上角有一个红色的小圆圈背景是白色的要求把圆圈变成绿色位置和大小不变"
    assert rule_of(rec(chain(reasoning=mixed))) == "language"
    no_function_words = " ".join(["circle green red small large square white background"] * 3)
    assert rule_of(rec(chain(reasoning=no_function_words))) == "language"


@pytest.mark.parametrize(
    "reasoning",
    [
        "As an AI, I cannot see images, but the query asks for a green circle at the top left of the picture.",
        "I'm sorry, but the image is unclear; it seems to show a red circle at the top left on white background.",
        "It is impossible to determine the entity from this picture, although there is a red circle in the corner.",
        "Sure, here is the answer: the source shows a small red circle at the top left, which should become green.",
    ],
)
def test_refusal_rule_rejects(reasoning):
    assert rule_of(rec(chain(reasoning=reasoning))) == "refusal"


def test_refusal_extra_patterns():
    cfg = CFG.model_copy(update={"extra_refusal_patterns": [r"\bthe request is\b"]})
    assert rule_of(rec(chain()), cfg) == "refusal"


def test_keyword_rule():
    unrelated = "Totally unrelated words about mountains and rivers."
    assert rule_of(rec(chain(answer=unrelated))) == "keyword"
    # a keyword of the instruction alone is enough
    assert rule_of(rec(chain(answer="Something green."), target=None)) == ""
    # the target text alone is enough
    assert rule_of(rec(chain(answer="A lovely white background."), query=None)) == ""
    # nothing to compare with: the rule is skipped
    assert rule_of(rec(chain(answer=unrelated), query=None, target=None)) == ""


def test_keywords_drop_stopwords_and_retrieval_words():
    assert keywords("Retrieve the image of the red circles", 3) == {"red", "circle"}


def test_unchanged_rule():
    source = "A small red circle at the top left on a white background."
    same = chain(answer="a small red circle, at the top left on a white background")
    assert rule_of(rec(same, target="A small green circle.", source=source)) == "unchanged"
    assert rule_of(rec(same, target="A small green circle.", source=None)) == ""
    assert normalise("A  Red, circle.") == "a red circle"


def test_duplicate_rule_within_same_query_only():
    a = rec(chain(), qid="8:1")
    b = rec(chain(answer=GOOD_ANSWER.replace(".", "!")), qid="8:2")  # same query, same answer
    c = rec(chain(), qid="8:3", img="b.png")  # other query image
    d = rec(chain(answer="A large green circle at the bottom right on a black background."), qid="8:4")
    res = apply_rules([a, b, c, d], CFG, COUNT)
    assert [r.qid for r, _ in res.kept] == ["8:1", "8:3", "8:4"]
    assert [(r.qid, rule) for r, rule, _ in res.dropped] == [("8:2", "duplicate")]
    assert res.dropped[0][2] == "near-duplicate of 8:1"
    assert set(res.counts()) == set(RULES) and res.counts()["duplicate"] == 1


def test_parse_label_and_verdict():
    assert parse_label("<label>complex</label>") == 1
    assert parse_label(" <label> Simple </label>") == 0
    assert parse_label("complex") is None
    v = parse_verdict("<decision>consistent</decision><confidence>0.82</confidence>")
    assert (v.decision, v.confidence, v.error) == ("consistent", 0.82, None)
    assert parse_verdict("<decision>consistent</decision>").decision == "unparsed"
    assert parse_verdict("<decision>consistent</decision><confidence>1.5</confidence>").error
