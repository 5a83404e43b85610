"""Procedurally rendered, captioned images: objects that vary in shape, colour, pattern, size and
position on a coloured background. Deterministic from a seed; the caption states every attribute
that the image shows, so a text encoder can learn each one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 210),
    "yellow": (235, 205, 40),
    "purple": (140, 50, 170),
    "orange": (240, 130, 30),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
PATTERNS = ("plain", "striped", "dotted", "checkered")
SIZES = ("small", "large")
POSITIONS = ("left", "center", "right")


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str
    pattern: str
    size: str
    position: str
    background: str

    def caption(self, identifier: str | None = None, omit: frozenset[str] = frozenset()) -> str:
        """'a photo of a small red striped circle on the left on a blue background'; attributes named
        in ``omit`` are left unsaid (the shape always stays), as people leave things unsaid in prompts."""
        size = "" if "size" in omit else f" {self.size}"
        colour = "" if "colour" in omit else f" {self.colour}"
        pattern = "" if self.pattern == "plain" or "pattern" in omit else f" {self.pattern}"
        name = f" {identifier} {self.shape}" if identifier else f"{colour}{pattern} {self.shape}"
        where = "" if self.position == "center" or "position" in omit else f" on the {self.position}"
        background = "" if "background" in omit else f" on a {self.background} background"
        article = "an" if (size or name).lstrip()[0] in "aeiou" else "a"
        return f"a photo of {article}{size}{name}{where}{background}"

    @property
    def combo(self) -> tuple[str, str, str]:
        """The object's identity: colour, pattern and shape together."""
        return (self.colour, self.pattern, self.shape)


def random_spec(rng: random.Random, exclude: frozenset[tuple[str, str, str]] = frozenset()) -> ObjectSpec:
    while True:
        colour, background = rng.sample(list(COLOURS), 2)  # the object never vanishes into the background
        spec = ObjectSpec(
            shape=rng.choice(SHAPES),
            colour=colour,
            pattern=rng.choice(PATTERNS),
            size=rng.choice(SIZES),
            position=rng.choice(POSITIONS),
            background=background,
        )
        if spec.combo not in exclude:
            return spec


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "star":
        return [
            (
                cx + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
                cy - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5),
            )
            for i in range(10)
        ]
    if shape == "cross":
        t = r * 0.38
        return [
            (cx - t, cy - r),
            (cx + t, cy - r),
            (cx + t, cy - t),
            (cx + r, cy - t),
            (cx + r, cy + t),
            (cx + t, cy + t),
            (cx + t, cy + r),
            (cx - t, cy + r),
            (cx - t, cy + t),
            (cx - r, cy + t),
            (cx - r, cy - t),
            (cx - t, cy - t),
        ]
    return None  # circle


def _pattern_layer(size: int, pattern: str, colour, rng: random.Random) -> Image.Image:
    """The object's fill: its colour with the pattern drawn in a darker or lighter shade."""
    layer = Image.new("RGB", (size, size), colour)
    shade = tuple(int(c * 0.45) if sum(colour) > 300 else min(255, int(c * 0.5 + 140)) for c in colour)
    d = ImageDraw.Draw(layer)
    step = max(4, size // 6)  # coarse enough to survive the toy world's 32 px and its VAE
    offset = rng.randrange(step)
    if pattern == "striped":
        for x in range(-size, 2 * size, step):
            d.line([(x + offset, 0), (x + offset + size, size)], fill=shade, width=max(2, step // 2))
    elif pattern == "dotted":
        for y in range(offset, size, step):
            for x in range(offset, size, step):
                d.ellipse([x - step / 4, y - step / 4, x + step / 4, y + step / 4], fill=shade)
    elif pattern == "checkered":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2:
                    d.rectangle([x, y, x + step - 1, y + step - 1], fill=shade)
    return layer


def render(spec: ObjectSpec, size: int, rng: random.Random) -> Image.Image:
    """One image of the object; small random jitter in place and size, so no two are identical."""
    img = Image.new("RGB", (size, size), COLOURS[spec.background])
    r = size * (0.17 if spec.size == "small" else 0.3) * rng.uniform(0.9, 1.1)
    cx = size * {"left": 0.3, "center": 0.5, "right": 0.7}[spec.position] + rng.uniform(-0.04, 0.04) * size
    cy = size * 0.5 + rng.uniform(-0.08, 0.08) * size
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    outline = _outline(spec.shape, cx, cy, r)
    if outline is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(outline, fill=255)
    img.paste(_pattern_layer(size, spec.pattern, COLOURS[spec.colour], rng), (0, 0), mask)
    return img


OMITTABLE = ("size", "colour", "pattern", "position", "background")


def partial_caption(spec: ObjectSpec, rng: random.Random, p_omit: float = 0.3) -> str:
    """The caption with each attribute left out at random: teaches a model short prompts too."""
    return spec.caption(omit=frozenset(a for a in OMITTABLE if rng.random() < p_omit))


def dataset(count: int, seed: int, size: int = 64, exclude=frozenset()) -> list[tuple[Image.Image, str, ObjectSpec]]:
    """``count`` (image, caption, spec) triples, the same for the same arguments."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        spec = random_spec(rng, exclude)
        out.append((render(spec, size, rng), spec.caption(), spec))
    return out
