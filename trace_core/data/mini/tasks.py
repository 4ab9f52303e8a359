"""Recipes of the 16 M-BEIR-mini tasks: one query, its positives and its hard distractors.

Each recipe is a pure function of a seeded ``random.Random``; :mod:`trace_core.data.mini.generate`
assigns ids, assembles pools and writes files. Candidates are identified by a content key
within their owner dataset, so the same content always gets the same did.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from trace_core.config import MiniParams
from trace_core.data.mini.scene import (
    CATEGORIES,
    EDIS_TAILS,
    FACTS,
    ITEM_BACKGROUND,
    NEWS_LEADS,
    SYLLABLES,
    EditPayload,
    ItemPayload,
    KnowledgePayload,
    NewsPayload,
    PassagePayload,
    Payload,
    Scene,
    ScenePayload,
    apply_change,
    article,
    cirr_modification,
    fashioniq_modification,
    item_description,
    news_caption,
    news_headline,
    random_change,
    random_object,
    random_scene,
    scene_caption,
    scene_caption_alt,
)


@dataclass(frozen=True)
class ImageSpec:
    """An image to render: owner dataset (its image folder), scene and rendering variant."""

    dataset_id: int
    scene: Scene
    variant: int


@dataclass(frozen=True)
class CandSpec:
    """A candidate before it has a did; ``key`` identifies its content within ``dataset_id``."""

    dataset_id: int
    key: str
    txt: str | None
    image: ImageSpec | None
    payload: Payload

    @property
    def modality(self) -> str:
        """M-BEIR modality string."""
        return "image,text" if self.txt is not None and self.image else ("text" if self.txt is not None else "image")


@dataclass(frozen=True)
class QuerySpec:
    """A query before it has a qid."""

    dataset_id: int
    task_id: int
    txt: str | None
    image: ImageSpec | None
    payload: Payload
    positives: tuple[CandSpec, ...]
    distractors: tuple[CandSpec, ...]


@dataclass(frozen=True)
class Entity:
    """A named entity with a distinctive scene (its picture) and a passage about it."""

    name: str
    category: str
    scene: Scene
    facts: tuple[tuple[str, str], ...]
    owner: int

    @property
    def emblem(self) -> tuple[str, str]:
        """(colour, shape) of the first object, the one the passage names."""
        return self.scene.objects[0].color, self.scene.objects[0].shape

    @property
    def passage(self) -> str:
        """Wiki-style passage: name, category, emblem and every fact."""
        color, shape = self.emblem
        facts = "; ".join(f"its {k} is {v}" for k, v in self.facts)
        head = f"{self.name} is {article(self.category)} {self.category}"
        return f"{head} whose emblem is {article(color)} {color} {shape}. {facts[0].upper()}{facts[1:]}."


@dataclass(frozen=True)
class RecipeContext:
    """Everything a recipe reads besides its random generator."""

    params: MiniParams
    split: str
    entities: dict[int, tuple[Entity, ...]]


Recipe = Callable[[RecipeContext, random.Random, int], QuerySpec]
Filler = Callable[[RecipeContext, random.Random, int], CandSpec]


# --- entities -----------------------------------------------------------------------------------
def make_names(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct capitalised names made of two or three syllables."""
    combos = [*itertools.product(SYLLABLES, repeat=2), *itertools.product(SYLLABLES, repeat=3)]
    if n > len(combos):
        raise ValueError(f"at most {len(combos)} entity names available, {n} requested")
    return ["".join(c).capitalize() for c in rng.sample(combos, n)]


def make_entities(params: MiniParams, seed: int) -> dict[int, tuple[Entity, ...]]:
    """Entities of WebQA (2), OVEN (5) and InfoSeek (6); some InfoSeek entities are OVEN's."""
    rng = random.Random(f"{seed}:entities")
    n, shared = params.n_entities, round(params.cross_dataset_fraction * params.n_entities)
    names = iter(make_names(rng, 3 * n - shared))
    seen: set[str] = set()
    lo, hi = max(2, params.min_objects), max(2, params.max_objects)

    def entity(owner: int) -> Entity:
        while (scene := random_scene(rng, lo, hi)).key() in seen:
            pass
        seen.add(scene.key())
        facts = tuple((k, rng.choice(v)) for k, v in FACTS.items())
        return Entity(next(names), rng.choice(CATEGORIES), scene, facts, owner)

    webqa = tuple(entity(2) for _ in range(n))
    oven = tuple(entity(5) for _ in range(n))
    infoseek = oven[:shared] + tuple(entity(6) for _ in range(n - shared))
    return {2: webqa, 5: oven, 6: infoseek}


# --- candidate constructors ----------------------------------------------------------------------
def image_cand(ds: int, scene: Scene, payload: Payload, variant: int = 0) -> CandSpec:
    """Image-only candidate."""
    return CandSpec(ds, f"img:{variant}:{scene.key()}", None, ImageSpec(ds, scene, variant), payload)


def text_cand(ds: int, text: str, payload: Payload) -> CandSpec:
    """Text-only candidate."""
    return CandSpec(ds, f"txt:{text}", text, None, payload)


def it_cand(ds: int, text: str, scene: Scene, payload: Payload) -> CandSpec:
    """Image+text candidate (canonical rendering)."""
    return CandSpec(ds, f"it:{text}:{scene.key()}", text, ImageSpec(ds, scene, 0), payload)


def changed_scenes(rng: random.Random, scene: Scene, k: int, attributes: tuple[str, ...] | None = None) -> list[Scene]:
    """Up to ``k`` distinct hard distractors: the scene with one attribute changed."""
    out: dict[str, Scene] = {}
    for _ in range(8 * k):
        if len(out) >= k:
            break
        change = random_change(rng, scene) if attributes is None else random_change(rng, scene, attributes)
        other = apply_change(scene, change)
        if other.key() != scene.key():
            out.setdefault(other.key(), other)
    return list(out.values())


def _scene(ctx: RecipeContext, rng: random.Random) -> Scene:
    return random_scene(rng, ctx.params.min_objects, ctx.params.max_objects)


def _item(rng: random.Random) -> Scene:
    return Scene.make([random_object(rng, set(), set())], ITEM_BACKGROUND)


def _variant(ctx: RecipeContext, rng: random.Random) -> int:
    return rng.randint(1, ctx.params.query_variants)


# --- caption-matching recipes (solvable directly) ------------------------------------------------
def _scene_text(ds: int, scene: Scene, lead: str, tail: str) -> tuple[str, Payload]:
    if ds == 0:
        caption = news_caption(scene, lead)
        return caption, NewsPayload(scene, caption)
    if ds == 3:
        caption = news_headline(scene, tail)
        return caption, NewsPayload(scene, caption)
    if ds == 1:
        description = item_description(scene.objects[0])
        return description, ItemPayload(scene.objects[0], description)
    caption = scene_caption(scene)
    return caption, ScenePayload(scene, caption)


def text_to_image(ds: int) -> Recipe:
    """t->i (VisualNews, MSCOCO, Fashion200K): caption -> image; distractors change one attribute."""

    def recipe(ctx: RecipeContext, rng: random.Random, i: int) -> QuerySpec:
        scene = _item(rng) if ds == 1 else _scene(ctx, rng)
        lead = rng.choice(NEWS_LEADS)
        txt, payload = _scene_text(ds, scene, lead, "")
        distract = [
            image_cand(ds, s, _scene_text(ds, s, lead, "")[1])
            for s in changed_scenes(rng, scene, ctx.params.distractors_per_query)
        ]
        return QuerySpec(ds, 0, txt, None, payload, (image_cand(ds, scene, payload),), tuple(distract))

    return recipe


def image_to_text(ds: int) -> Recipe:
    """i->t (VisualNews, MSCOCO, Fashion200K): image -> caption(s); MSCOCO has two positives."""

    def recipe(ctx: RecipeContext, rng: random.Random, i: int) -> QuerySpec:
        scene = _item(rng) if ds == 1 else _scene(ctx, rng)
        lead = rng.choice(NEWS_LEADS)
        txt, payload = _scene_text(ds, scene, lead, "")
        positives = [text_cand(ds, txt, payload)]
        if ds == 9:
            alt = scene_caption_alt(scene)
            positives.append(text_cand(ds, alt, ScenePayload(scene, alt)))
        distract = []
        for s in changed_scenes(rng, scene, ctx.params.distractors_per_query):
            t, p = _scene_text(ds, s, lead, "")
            distract.append(text_cand(ds, t, p))
        return QuerySpec(ds, 3, None, ImageSpec(ds, scene, 0), payload, tuple(positives), tuple(distract))

    return recipe


def edis(ctx: RecipeContext, rng: random.Random, i: int) -> QuerySpec:
    """t->(i,t) EDIS: news caption -> image with a headline."""
    scene, lead, tail = _scene(ctx, rng), rng.choice(NEWS_LEADS), rng.choice(EDIS_TAILS)
    caption = news_caption(scene, lead)

    def cand(s: Scene) -> CandSpec:
        headline, payload = _scene_text(3, s, lead, tail)
        return it_cand(3, headline, s, payload)

    distract = [cand(s) for s in changed_scenes(rng, scene, ctx.params.distractors_per_query)]
    return QuerySpec(3, 2, caption, None, NewsPayload(scene, caption), (cand(scene),), tuple(distract))


def nights(ctx: RecipeContext, rng: random.Random, i: int) -> QuerySpec:
    """i->i NIGHTS: a jittered rendering -> another rendering of the same scene."""
    scene = _scene(ctx, rng)
    qv = _variant(ctx, rng)
    pv = qv % ctx.params.query_variants + 1
    caption = scene_caption(scene)

    def cand(s: Scene) -> CandSpec:
        return image_cand(4, s, ScenePayload(s, scene_caption(s), pv), pv)

    distract = [cand(s) for s in changed_scenes(rng, scene, ctx.params.distractors_per_query)]
    payload = ScenePayload(scene, caption, qv)
    return QuerySpec(4, 4, None, ImageSpec(4, scene, qv), payload, (cand(scene),), tuple(distract))


# --- knowledge recipes (benefit from naming the entity) ------------------------------------------
def _pick_entity(ctx: RecipeContext, rng: random.Random, ds: int, i: int) -> Entity:
    ents = ctx.entities[ds]
    return ents[i % len(ents)] if ctx.split == "train" else rng.choice(ents)


def entity_cand(e: Entity, with_image: bool) -> CandSpec:
    """The entity's passage candidate (text, or text + canonical picture), owned by ``e.owner``."""
    if with_image:
        return it_cand(e.owner, e.passage, e.scene, PassagePayload(e.name, e.passage, e.scene))
    return text_cand(e.owner, e.passage, PassagePayload(e.name, e.passage))


def _entity_distractors(ctx: RecipeContext, rng: random.Random, e: Entity, ds: int, with_image: bool) -> list[CandSpec]:
    pool = [o for o in ctx.entities[ds] if o.name != e.name]
    same = [o for o in pool if o.emblem == e.emblem] or [o for o in pool if o.category == e.category]
    rng.shuffle(same)
    return [entity_cand(o, with_image) for o in same[: ctx.params.distractors_per_query]]


def _question(ds: int, e: Entity, rng: random.Random) -> tuple[str, str]:
    fact, value = rng.choice(e.facts)
    if ds == 5:
        return rng.choice(
            ("What is this?", f"Which {e.category} is shown here?", "Name the thing in this image.")
        ), e.name
    if ds == 6:
        return f"What is the {fact} of this {e.category}?", value
    if rng.random() < 0.5:
        return f"What is the {fact} of {e.name}?", value
    color, shape = e.emblem
    return f"Which {e.category} is {e.name}, the one with {article(color)} {color} {shape} emblem?", e.name


def knowledge(ds: int, task_id: int) -> Recipe:
    """(i,t)->t / (i,t)->(i,t) for OVEN and InfoSeek; t->t / t->(i,t) for WebQA."""
    with_image = task_id in (2, 8)

    def recipe(ctx: RecipeContext, rng: random.Random, i: int) -> QuerySpec:
        e = _pick_entity(ctx, rng, ds, i)
        question, answer = _question(ds, e, rng)
        variant = 0 if ds == 2 else _variant(ctx, rng)
        payload = KnowledgePayload(e.name, e.scene, question, answer, e.passage, e.category, variant)
        image = None if ds == 2 else ImageSpec(e.owner, e.scene, variant)
        distract = _entity_distractors(ctx, rng, e, ds, with_image)
        return QuerySpec(ds, task_id, question, image, payload, (entity_cand(e, with_image),), tuple(distract))

    return recipe


# --- composed-edit recipes (benefit from describing the target) ----------------------------------
def composed(ds: int) -> Recipe:
    """(i,t)->i CIRR (scenes) and FashionIQ (items): source image + modification -> target image."""

    def recipe(ctx: RecipeContext, rng: random.Random, i: int) -> QuerySpec:
        source = _item(rng) if ds == 7 else _scene(ctx, rng)
        change = random_change(rng, source)
        target = apply_change(source, change)
        text = fashioniq_modification(change) if ds == 7 else cirr_modification(source, change)

        def describe(s: Scene) -> str:
            return item_description(s.objects[0]) if ds == 7 else scene_caption(s)

        payload = EditPayload(source, describe(source), text, change, target, describe(target))
        alts = [s for s in changed_scenes(rng, source, 4 * ctx.params.distractors_per_query, (change.attribute,))]
        alts = [s for s in alts if s.key() != target.key()][: max(0, ctx.params.distractors_per_query - 1)]
        distract = [image_cand(ds, s, ScenePayload(s, describe(s))) for s in [source, *alts]]
        pos = image_cand(ds, target, ScenePayload(target, describe(target)))
        return QuerySpec(ds, 7, text, ImageSpec(ds, source, 0), payload, (pos,), tuple(distract))

    return recipe


# --- fillers: extra pool candidates of the task's kind -------------------------------------------
def filler(ds: int, task_id: int) -> Filler:
    """Random pool padding: a fresh query's positive (entities in order for knowledge tasks)."""
    recipe = RECIPES[(ds, task_id)]

    def fill(ctx: RecipeContext, rng: random.Random, i: int) -> CandSpec:
        if ds in (2, 5, 6):
            ents = ctx.entities[ds]
            return entity_cand(ents[i % len(ents)], task_id in (2, 8))
        return recipe(ctx, rng, i).positives[0]

    return fill


RECIPES: dict[tuple[int, int], Recipe] = {
    (0, 0): text_to_image(0),
    (9, 0): text_to_image(9),
    (1, 0): text_to_image(1),
    (2, 1): knowledge(2, 1),
    (3, 2): edis,
    (2, 2): knowledge(2, 2),
    (0, 3): image_to_text(0),
    (9, 3): image_to_text(9),
    (1, 3): image_to_text(1),
    (4, 4): nights,
    (5, 6): knowledge(5, 6),
    (6, 6): knowledge(6, 6),
    (7, 7): composed(7),
    (8, 7): composed(8),
    (5, 8): knowledge(5, 8),
    (6, 8): knowledge(6, 8),
}
