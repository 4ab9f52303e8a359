"""Retrieval gallery: a few test queries per task with their top-k candidates, as one HTML file.

``reports/gallery/index.html`` is self-contained (thumbnails embedded as ``data:`` URIs, CSS
inline, no script), so it opens offline and travels as one MLflow artifact. Per query it shows
the image and/or text, the instruction, the route the model took (direct, reasoned, forced),
the chain it generated, and the top-k candidates with their thumbnails or text, positives marked.

Rendering is pure (:func:`render_hits`, :func:`render_query`, :func:`render_page`): the hit list
of any search (e.g. ``trace search``) renders with :func:`render_hits` and :data:`CSS`. Collecting
the queries from the files of an evaluation is :func:`collect`.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from trace_core.data.instructions import Instructions, choose_index, parse_instructions
from trace_core.data.mbeir import (
    TestTask,
    instructions_file,
    iter_candidates,
    iter_queries,
    local_pool_file,
    qrels_file,
    query_file,
    read_qrels,
)
from trace_core.evaluation.metrics import RunEntry
from trace_core.io import iter_jsonl, write_text
from trace_core.types import CandidateRecord, QueryRecord

log = logging.getLogger(__name__)
THUMB_PX = 112

#: the stylesheet of every rendered fragment (inlined in the page's <head>).
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde6;padding-bottom:4px}
.note{color:#5a6475;font-size:13px;margin:0 0 16px}
.toc a{margin-right:10px;font-size:13px;white-space:nowrap}
.query{display:flex;gap:16px;background:#fff;border:1px solid #e1e5ec;border-radius:8px;padding:12px;margin:10px 0}
.qside{width:260px;flex:none;font-size:13px}
.qside img{width:112px;height:112px;object-fit:cover;border-radius:4px;border:1px solid #ccd}
.qtext{font-weight:600;margin:6px 0}.instr{color:#5a6475;font-style:italic;margin:4px 0}
.route{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;color:#fff}
.route-direct{background:#0072B2}.route-reasoned{background:#009E73}.route-forced{background:#D55E00}
.chain{white-space:pre-wrap;background:#f3f5f8;border-radius:4px;padding:6px;font-size:12px;margin-top:6px;
max-height:140px;overflow:auto}
ol.hits{display:flex;gap:8px;list-style:none;padding:0;margin:0;flex-wrap:wrap}
ol.hits li{width:132px;border:2px solid #e1e5ec;border-radius:6px;padding:6px;font-size:12px;background:#fff}
ol.hits li.pos{border-color:#009E73;background:#eefaf4}
ol.hits img{width:112px;height:112px;object-fit:cover;border-radius:4px;display:block}
.rank{font-weight:700}.did{color:#5a6475;font-size:11px}.score{color:#5a6475;font-size:11px;float:right}
.badge{color:#fff;background:#009E73;border-radius:8px;padding:0 6px;font-size:11px;margin-left:4px}
.ctext{margin-top:4px;max-height:80px;overflow:hidden}
.miss{color:#D55E00;font-size:12px;margin-top:6px}.hit{color:#009E73;font-size:12px;margin-top:6px}
"""


@dataclass(frozen=True)
class Hit:
    """One retrieved candidate: rank (1-based), id, score, content and whether it is a positive."""

    rank: int
    did: str
    score: float
    text: str | None
    image: str | None  # an <img> src: a data: URI or a relative path
    positive: bool


@dataclass(frozen=True)
class GalleryQuery:
    """One query of the gallery with its routing and its hit list."""

    qid: str
    text: str | None
    image: str | None
    instruction: str
    route: str
    chain: str
    hits: tuple[Hit, ...]
    n_positives: int


# --- rendering (pure) -------------------------------------------------------------------------
def _esc(text: str | None) -> str:
    return html.escape(text or "")


def render_hits(hits: Sequence[Hit]) -> str:
    """One hit list as an ``<ol class="hits">``: rank, score, thumbnail and/or text, positives marked."""
    items = []
    for h in hits:
        img = f'<img src="{_esc(h.image)}" alt="{_esc(h.did)}">' if h.image else ""
        text = f'<div class="ctext">{_esc(h.text)}</div>' if h.text else ""
        badge = '<span class="badge">positive</span>' if h.positive else ""
        items.append(
            f'<li class="{"pos" if h.positive else "neg"}"><span class="rank">#{h.rank}</span>{badge}'
            f'<span class="score">{h.score:.3f}</span><div class="did">{_esc(h.did)}</div>{img}{text}</li>'
        )
    return '<ol class="hits">' + "".join(items) + "</ol>"


def render_query(q: GalleryQuery) -> str:
    """A query card: image, instruction, text, route, chain, then its hit list and whether it hit."""
    img = f'<img src="{_esc(q.image)}" alt="query image">' if q.image else ""
    chain = f'<div class="chain">{_esc(q.chain)}</div>' if q.chain else ""
    found = [h.rank for h in q.hits if h.positive]
    verdict = (
        f'<div class="hit">positive at rank {found[0]}</div>'
        if found
        else f'<div class="miss">no positive in the top {len(q.hits)} ({q.n_positives} positive(s) in the pool)</div>'
    )
    return (
        f'<div class="query"><div class="qside"><div class="did">{_esc(q.qid)}</div>{img}'
        f'<div class="instr">{_esc(q.instruction)}</div><div class="qtext">{_esc(q.text)}</div>'
        f'<span class="route route-{_esc(q.route)}">{_esc(q.route)}</span>{chain}{verdict}</div>'
        f"<div>{render_hits(q.hits)}</div></div>"
    )


def render_page(title: str, note: str, sections: Mapping[str, Sequence[GalleryQuery]]) -> str:
    """The whole self-contained page: title, note, a table of contents and one section per task."""
    anchors = {name: f"t{i}" for i, name in enumerate(sections)}
    toc = " ".join(f'<a href="#{anchors[n]}">{_esc(n)}</a>' for n in sections)
    body = "".join(
        f'<h2 id="{anchors[name]}">{_esc(name)}</h2>' + "".join(render_query(q) for q in queries)
        for name, queries in sections.items()
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{_esc(title)}</h1><p class=note>{_esc(note)}</p>"
        f'<div class="toc">{toc}</div>{body}</body></html>\n'
    )


# --- collecting (reads files) -------------------------------------------------------------------
def thumbnail_uri(path: Path, size: int = THUMB_PX) -> str | None:
    """A JPEG thumbnail of an image file as a ``data:`` URI (None when it cannot be read)."""
    from PIL import Image

    try:
        with Image.open(path) as src:
            im = src.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
    except (OSError, ValueError):
        log.warning("gallery: cannot read image %s", path)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def top_hits(entries: Iterable[RunEntry], k: int) -> dict[str, list[RunEntry]]:
    """The first ``k`` run entries of every query, by rank."""
    out: dict[str, list[RunEntry]] = {}
    for e in entries:
        out.setdefault(e.qid, []).append(e)
    return {q: sorted(es, key=lambda e: e.rank)[:k] for q, es in out.items()}


def pick_queries(qids: Sequence[str], n: int, hits: AbstractSet[str] = frozenset()) -> list[str]:
    """``n`` query ids, half of them (rounded up) among ``hits`` when there are any, in file order.

    Each group is sampled evenly over the file (first, ..., last), so the page shows both what the
    model finds and what it misses; a group with too few ids leaves its places to the other.
    """
    if n <= 0 or not qids:
        return []
    found = [q for q in qids if q in hits]
    missed = [q for q in qids if q not in hits]
    want_found = min(len(found), max((n + 1) // 2, n - len(missed)))
    chosen = set(_spread(found, want_found)) | set(_spread(missed, min(len(missed), n - want_found)))
    return [q for q in qids if q in chosen]


def _spread(items: Sequence[str], n: int) -> list[str]:
    if n <= 0:
        return []
    if n >= len(items):
        return list(items)
    step = (len(items) - 1) / max(n - 1, 1)
    return [items[round(i * step)] for i in range(n)]


def _candidates(pool: Path, wanted: set[str]) -> dict[str, CandidateRecord]:
    return {c.did: c for c in iter_candidates(pool) if c.did in wanted}


def task_queries(
    task: TestTask,
    data_root: Path,
    entries: Iterable[RunEntry],
    positives: Mapping[str, frozenset[str]],
    routing: Mapping[str, Mapping[str, str]],
    instructions: Instructions | None,
    seed: int,
    n: int,
    k: int = 5,
) -> list[GalleryQuery]:
    """The gallery cards of one task: ``n`` queries spread over the file, each with its top ``k``."""
    queries: dict[str, QueryRecord] = {q.qid: q for q in iter_queries(query_file(data_root, "test", task.stem))}
    hits = top_hits(entries, k)
    found = {q for q, es in hits.items() if any(e.did in positives.get(q, ()) for e in es)}
    chosen = pick_queries([q for q in queries if q in hits], n, found)
    cands = _candidates(local_pool_file(data_root, task.stem), {e.did for q in chosen for e in hits[q]})
    cards = []
    for qid in chosen:
        q, pos = queries[qid], positives.get(qid, frozenset())
        instruction = chosen_instruction(q, instructions, seed)
        row = routing.get(qid, {})
        hit_list = []
        for e in hits[qid]:
            c = cands.get(e.did)
            img = thumbnail_uri(data_root / c.img_path) if c and c.img_path else None
            hit_list.append(Hit(e.rank, e.did, e.score, c.txt if c else None, img, e.did in pos))
        qimg = thumbnail_uri(data_root / q.query_img_path) if q.query_img_path else None
        route, chain = row.get("route", "?"), row.get("chain", "")
        cards.append(GalleryQuery(qid, q.query_txt, qimg, instruction, route, chain, tuple(hit_list), len(pos)))
    return cards


def chosen_instruction(q: QueryRecord, instructions: Instructions | None, seed: int) -> str:
    """The instruction export prefixed the query with (same deterministic choice), or ""."""
    options = instructions.for_query(q) if instructions else ()
    return options[choose_index(q.qid, len(options), seed)] if options else ""


def read_routing(path: Path) -> dict[str, dict[str, dict[str, str]]]:
    """``routing.jsonl`` of export as ``task -> qid -> {"route", "chain"}`` (empty if absent)."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    if path.is_file():
        for _, o in iter_jsonl(path):
            row = {"route": str(o.get("route", "?")), "chain": str(o.get("chain", ""))}
            out.setdefault(str(o.get("task")), {})[str(o.get("qid"))] = row
    return out


def load_instructions(data_root: Path) -> Instructions | None:
    """The dataset's instructions, or None when the file is absent."""
    path = instructions_file(data_root)
    return parse_instructions(path) if path.is_file() else None


def collect(
    data_root: Path,
    tasks: Sequence[TestTask],
    entries: Mapping[str, Sequence[RunEntry]],
    routing_file: Path,
    seed: int,
    n: int,
    k: int = 5,
) -> dict[str, list[GalleryQuery]]:
    """Gallery sections (``"NN. label"`` -> cards) of the evaluated tasks, from the data and run entries."""
    routing = read_routing(routing_file)
    instructions = load_instructions(data_root)
    sections = {}
    for task in tasks:
        qrels = read_qrels(qrels_file(data_root, "test", task.stem))
        positives = {q: e.positives for q, e in qrels.items()}
        cards = task_queries(
            task, data_root, entries.get(task.stem, ()), positives, routing.get(task.stem, {}), instructions, seed, n, k
        )
        sections[f"{task.column:02d}. {task.label} ({task.stem})"] = cards
    return sections


def write_gallery(path: Path, sections: Mapping[str, Sequence[GalleryQuery]], note: str) -> Path:
    """Render and write the page atomically."""
    write_text(path, render_page("TRACE retrieval gallery", note, sections))
    return path
