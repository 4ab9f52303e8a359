"""Scenes of M-BEIR-mini: closed vocabularies, structured metadata and the caption functions.

The payload dataclasses are the contract between the generator (:mod:`trace_core.data.mini.generate`)
and the oracle teacher/verifier: each serialises to the JSON stored in
``query_src_content`` / ``src_content`` (``json.dumps(..., sort_keys=True)``) and parses back
with :func:`payload_from_json`. Captions are pure functions of the structure, so a chain of
thought written from the metadata names the target exactly.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from typing import Any, Literal

# --- closed vocabularies (registries) -------------------------------------------------------
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (240, 140, 30),
    "pink": (240, 120, 180),
    "brown": (130, 80, 40),
}
SIZES: tuple[str, ...] = ("small", "large")
# position name -> (column, row) on a 3x3 grid
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "center": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "gray": (150, 150, 150),
    "black": (20, 20, 20),
}
ITEM_BACKGROUND = "white"
ATTRIBUTES: tuple[str, ...] = ("color", "shape", "size", "position")
NEWS_LEADS: tuple[str, ...] = (
    "Officials unveiled",
    "Reporters photographed",
    "Visitors admired",
    "Crowds gathered around",
    "The committee presented",
)
EDIS_TAILS: tuple[str, ...] = ("seen at the exhibition", "shown at the fair", "on display downtown")
CATEGORIES: tuple[str, ...] = ("city", "river", "festival", "ship", "mountain", "guild", "library", "bridge")
FACTS: dict[str, tuple[str, ...]] = {
    "home region": ("north", "south", "east", "west", "highlands", "lowlands", "coast", "valley"),
    "patron animal": ("otter", "heron", "lynx", "badger", "falcon", "salmon", "stag", "wren"),
    "founding century": ("12th", "13th", "14th", "15th", "16th", "17th", "18th", "19th"),
}
SYLLABLES: tuple[str, ...] = (
    "zor", "bel", "ka", "mi", "tra", "lun", "vo", "rin", "sel", "dra",
    "qua", "fen", "os", "tal", "mer", "ix", "pol", "gan", "shi", "ru",
)  # fmt: skip

Size = Literal["small", "large"]


# --- structure --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SceneObject:
    """One solid shape: what it is, its colour, its size and its grid cell."""

    shape: str
    color: str
    size: str
    position: str

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"shape": self.shape, "color": self.color, "size": self.size, "position": self.position}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneObject:
        """Inverse of :meth:`to_dict`."""
        return cls(str(d["shape"]), str(d["color"]), str(d["size"]), str(d["position"]))


def _position_order(obj: SceneObject) -> tuple[int, int]:
    col, row = POSITIONS[obj.position]
    return row, col


@dataclass(frozen=True, slots=True)
class Scene:
    """A few objects on a plain background; objects are kept in reading order (row, column)."""

    objects: tuple[SceneObject, ...]
    background: str

    @classmethod
    def make(cls, objects: list[SceneObject] | tuple[SceneObject, ...], background: str) -> Scene:
        """Build a scene with its objects in canonical (reading) order."""
        return cls(tuple(sorted(objects, key=_position_order)), background)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"objects": [o.to_dict() for o in self.objects], "background": self.background}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scene:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(SceneObject.from_dict(o) for o in d["objects"]), str(d["background"]))

    def key(self) -> str:
        """Canonical identity string (equal scenes give equal keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)


# --- captions -------------------------------------------------------------------------------------
def article(word: str) -> str:
    """``"a"`` or ``"an"`` for the word that follows."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def object_phrase(obj: SceneObject) -> str:
    """``"a large red circle at the top left"``."""
    return f"a {obj.size} {obj.color} {obj.shape} at the {obj.position}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_caption(scene: Scene) -> str:
    """Plain caption that determines the scene exactly (MSCOCO-like)."""
    text = _join([object_phrase(o) for o in scene.objects]) + f" on a {scene.background} background"
    return text[0].upper() + text[1:] + "."


def scene_caption_alt(scene: Scene) -> str:
    """A second wording of :func:`scene_caption` (MSCOCO images have several captions)."""
    return f"There is {_join([object_phrase(o) for o in scene.objects])}, all on a {scene.background} background."


def news_caption(scene: Scene, lead: str) -> str:
    """News-style caption (VisualNews/EDIS-like): a lead phrase, then the exact content."""
    return f"{lead} {_join([object_phrase(o) for o in scene.objects])}, pictured against a {scene.background} backdrop."


def news_headline(scene: Scene, tail: str) -> str:
    """Short headline of an EDIS-like candidate: content first, then a tail phrase."""
    body = _join([f"{o.size} {o.color} {o.shape} ({o.position})" for o in scene.objects])
    return f"{body[0].upper()}{body[1:]} on {scene.background}, {tail}."


def item_description(obj: SceneObject) -> str:
    """Attribute description of a single item (Fashion200K-like)."""
    return f"{obj.color} {obj.shape} print, {obj.size}, placed at the {obj.position}"


def object_ref(obj: SceneObject) -> str:
    """Unique reference of an object inside its scene: ``"the red circle"``."""
    return f"the {obj.color} {obj.shape}"


# --- payloads (the schema of query_src_content / src_content) ------------------------------------
@dataclass(frozen=True, slots=True)
class Change:
    """One attribute change of object ``object`` (index in the source scene's objects)."""

    object: int
    attribute: str
    from_: str
    to: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``from`` is a keyword, hence ``from_`` in Python)."""
        return {"object": self.object, "attribute": self.attribute, "from": self.from_, "to": self.to}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Change:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["object"]), str(d["attribute"]), str(d["from"]), str(d["to"]))


@dataclass(frozen=True, slots=True)
class ScenePayload:
    """Captioned scene (MSCOCO-, NIGHTS-like); ``variant`` selects the rendering jitter."""

    scene: Scene
    caption: str
    variant: int = 0
    kind: str = field(default="scene", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "scene": self.scene.to_dict(), "caption": self.caption, "variant": self.variant}


@dataclass(frozen=True, slots=True)
class NewsPayload:
    """News-style captioned scene (VisualNews-, EDIS-like)."""

    scene: Scene
    caption: str
    kind: str = field(default="news", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "scene": self.scene.to_dict(), "caption": self.caption}


@dataclass(frozen=True, slots=True)
class ItemPayload:
    """Single fashion-like item with its attribute description."""

    object: SceneObject
    description: str
    kind: str = field(default="item", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "object": self.object.to_dict(), "description": self.description}


@dataclass(frozen=True, slots=True)
class EditPayload:
    """Composed query: source scene + modification text -> target scene."""

    source: Scene
    source_caption: str
    modification: str
    change: Change
    target: Scene
    target_caption: str
    kind: str = field(default="edit", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "source": self.source.to_dict(),
            "source_caption": self.source_caption,
            "modification": self.modification,
            "change": self.change.to_dict(),
            "target": self.target.to_dict(),
            "target_caption": self.target_caption,
        }


@dataclass(frozen=True, slots=True)
class KnowledgePayload:
    """Knowledge query about an entity (OVEN-, InfoSeek-, WebQA-like)."""

    entity: str
    scene: Scene
    question: str
    answer: str
    passage: str
    category: str = ""
    variant: int = 0
    kind: str = field(default="knowledge", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "entity": self.entity,
            "scene": self.scene.to_dict(),
            "question": self.question,
            "answer": self.answer,
            "passage": self.passage,
            "category": self.category,
            "variant": self.variant,
        }


@dataclass(frozen=True, slots=True)
class PassagePayload:
    """Wiki-style passage of an entity; ``scene`` is set when the candidate carries its image."""

    entity: str
    passage: str
    scene: Scene | None = None
    kind: str = field(default="passage", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        out: dict[str, Any] = {"kind": self.kind, "entity": self.entity, "passage": self.passage}
        if self.scene is not None:
            out["scene"] = self.scene.to_dict()
        return out


Payload = ScenePayload | NewsPayload | ItemPayload | EditPayload | KnowledgePayload | PassagePayload


def to_json(payload: Payload) -> str:
    """Serialise a payload as stored in ``query_src_content`` / ``src_content``."""
    return json.dumps(payload.to_dict(), sort_keys=True)


def payload_from_json(text: str) -> Payload:
    """Parse a ``src_content`` JSON string back into its payload dataclass."""
    d = json.loads(text)
    kind = d.get("kind")
    if kind == "scene":
        return ScenePayload(Scene.from_dict(d["scene"]), d["caption"], int(d.get("variant", 0)))
    if kind == "news":
        return NewsPayload(Scene.from_dict(d["scene"]), d["caption"])
    if kind == "item":
        return ItemPayload(SceneObject.from_dict(d["object"]), d["description"])
    if kind == "edit":
        src, tgt = Scene.from_dict(d["source"]), Scene.from_dict(d["target"])
        change = Change.from_dict(d["change"])
        return EditPayload(src, d["source_caption"], d["modification"], change, tgt, d["target_caption"])
    if kind == "knowledge":
        scene = Scene.from_dict(d["scene"])
        fields_ = (d["entity"], scene, d["question"], d["answer"], d["passage"])
        return KnowledgePayload(*fields_, category=d.get("category", ""), variant=int(d.get("variant", 0)))
    if kind == "passage":
        scene_d = d.get("scene")
        return PassagePayload(d["entity"], d["passage"], Scene.from_dict(scene_d) if scene_d else None)
    raise ValueError(f"unknown src_content kind {kind!r}")


# --- random structure ----------------------------------------------------------------------------
def random_object(rng: random.Random, taken: set[str], used_pairs: set[tuple[str, str]]) -> SceneObject:
    """An object on a free cell whose (colour, shape) pair is not used yet in the scene."""
    position = rng.choice([p for p in POSITIONS if p not in taken])
    while True:
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        if (color, shape) not in used_pairs:
            return SceneObject(shape, color, rng.choice(SIZES), position)


def random_scene(rng: random.Random, min_objects: int, max_objects: int, background: str | None = None) -> Scene:
    """A scene of ``min_objects..max_objects`` objects with unique (colour, shape) pairs."""
    n = rng.randint(min_objects, max_objects)
    objects: list[SceneObject] = []
    for _ in range(n):
        obj = random_object(rng, {o.position for o in objects}, {(o.color, o.shape) for o in objects})
        objects.append(obj)
    return Scene.make(objects, background or rng.choice(list(BACKGROUNDS)))


def _alternatives(scene: Scene, index: int, attribute: str) -> list[str]:
    obj = scene.objects[index]
    others = [o for i, o in enumerate(scene.objects) if i != index]
    if attribute == "color":
        return [c for c in COLORS if c != obj.color and all((c, obj.shape) != (o.color, o.shape) for o in others)]
    if attribute == "shape":
        return [s for s in SHAPES if s != obj.shape and all((obj.color, s) != (o.color, o.shape) for o in others)]
    if attribute == "size":
        return [s for s in SIZES if s != obj.size]
    return [p for p in POSITIONS if p != obj.position and all(p != o.position for o in others)]


def apply_change(scene: Scene, change: Change) -> Scene:
    """The scene after one attribute change (objects re-sorted into reading order)."""
    objects = list(scene.objects)
    objects[change.object] = replace(objects[change.object], **{change.attribute: change.to})
    return Scene.make(objects, scene.background)


def random_change(rng: random.Random, scene: Scene, attributes: tuple[str, ...] = ATTRIBUTES) -> Change:
    """A random single-attribute change of one object that keeps object references unique."""
    while True:
        index = rng.randrange(len(scene.objects))
        attribute = rng.choice(attributes)
        options = _alternatives(scene, index, attribute)
        if options:
            current = getattr(scene.objects[index], attribute)
            return Change(index, attribute, current, rng.choice(options))


def cirr_modification(scene: Scene, change: Change) -> str:
    """CIRR-like modification text: ``"make the red circle green"``."""
    ref = object_ref(scene.objects[change.object])
    if change.attribute == "shape":
        return f"turn {ref} into a {change.to}"
    if change.attribute == "position":
        return f"move {ref} to the {change.to}"
    return f"make {ref} {change.to}"


def fashioniq_modification(change: Change) -> str:
    """FashionIQ-like relative caption: ``"is green instead of red"``."""
    if change.attribute == "shape":
        return f"has a {change.to} print instead of a {change.from_}"
    if change.attribute == "position":
        return f"has the print at the {change.to} instead of the {change.from_}"
    return f"is {change.to} instead of {change.from_}"
