"""Deterministic PIL rendering of M-BEIR-mini scenes (solid shapes on a plain background)."""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from trace_core.data.mini.scene import BACKGROUNDS, COLORS, POSITIONS, Scene, SceneObject

# Object radius as a fraction of a grid cell's side, per size.
RADIUS_FRACTION: dict[str, float] = {"small": 0.22, "large": 0.42}
STAR_INNER = 0.45  # inner/outer radius ratio of the five-pointed star
CROSS_HALF_WIDTH = 0.35  # half the bar width of the cross, in radii
GRID = 3  # POSITIONS is a 3x3 grid


@dataclass(frozen=True)
class RenderSpec:
    """How one image is drawn: side in pixels and the jitter of variant renders."""

    size: int
    jitter_px: int
    shade_jitter: int


def _points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "star":
        out = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * STAR_INNER
            ang = -math.pi / 2 + k * math.pi / 5
            out.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return out
    raise ValueError(f"unknown polygon shape {shape!r}")


def _shade(rgb: tuple[int, int, int], delta: int) -> tuple[int, int, int]:
    r, g, b = (max(0, min(255, c + delta)) for c in rgb)
    return r, g, b


def draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, cell: float, offset: tuple[int, int], delta: int) -> None:
    """Draw one object centred in its grid cell, shifted by ``offset`` and shaded by ``delta``."""
    col, row = POSITIONS[obj.position]
    cx, cy = (col + 0.5) * cell + offset[0], (row + 0.5) * cell + offset[1]
    r = RADIUS_FRACTION[obj.size] * cell
    fill = _shade(COLORS[obj.color], delta)
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif obj.shape == "square":
        s = 0.85 * r
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif obj.shape == "cross":
        w = CROSS_HALF_WIDTH * r
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    else:
        draw.polygon(_points(obj.shape, cx, cy, r), fill=fill)


def render_scene(scene: Scene, spec: RenderSpec, variant: int = 0) -> Image.Image:
    """Draw a scene; variant 0 is canonical, other variants shift and shade deterministically."""
    rng = random.Random(f"variant:{variant}")
    jitter = spec.jitter_px if variant else 0
    shade = spec.shade_jitter if variant else 0
    img = Image.new("RGB", (spec.size, spec.size), _shade(BACKGROUNDS[scene.background], rng.randint(-shade, shade)))
    draw = ImageDraw.Draw(img)
    cell = spec.size / GRID
    for obj in scene.objects:
        offset = (rng.randint(-jitter, jitter), rng.randint(-jitter, jitter))
        draw_object(draw, obj, cell, offset, rng.randint(-shade, shade))
    return img


def png_bytes(img: Image.Image) -> bytes:
    """PNG encoding (deterministic for a given Pillow version)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
