"""The bundled sample concept: a small toy robot drawn with PIL, deterministic from a seed.

Procedurally made, so it ships with no third-party licence (the project's own licence applies).
Each photo shows the same object at another position, size and background, as a person's
photos of one product would.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

BACKGROUNDS = [(235, 230, 220), (200, 220, 240), (210, 235, 205), (240, 215, 215), (225, 225, 235), (245, 240, 200)]


def draw_robot(size: int, rng: random.Random, background: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    scale = rng.uniform(0.45, 0.7) * size
    cx = rng.uniform(0.35, 0.65) * size
    cy = rng.uniform(0.45, 0.6) * size
    w, h = scale * 0.55, scale * 0.5
    # body: red box with a yellow stripe; head: teal box with two white eyes; antenna
    body = (cx - w / 2, cy - h / 4, cx + w / 2, cy + h * 0.75)
    d.rectangle(body, fill=(200, 40, 40), outline=(60, 10, 10), width=max(1, size // 64))
    d.rectangle((body[0], cy + h * 0.2, body[2], cy + h * 0.35), fill=(245, 200, 40))
    head = (cx - w * 0.35, cy - h * 0.8, cx + w * 0.35, cy - h / 4)
    d.rectangle(head, fill=(30, 150, 160), outline=(10, 60, 60), width=max(1, size // 64))
    r = max(1.5, w * 0.07)
    for ex in (cx - w * 0.15, cx + w * 0.15):
        d.ellipse((ex - r, cy - h * 0.55 - r, ex + r, cy - h * 0.55 + r), fill=(255, 255, 255))
    d.line((cx, head[1], cx, head[1] - h * 0.2), fill=(40, 40, 40), width=max(1, size // 48))
    d.ellipse((cx - r, head[1] - h * 0.2 - r, cx + r, head[1] - h * 0.2 + r), fill=(245, 200, 40))
    return img


def write_sample_photos(out_dir: Path, count: int = 6, size: int = 96, seed: int = 7) -> list[Path]:
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = out_dir / f"robot_{i + 1:02d}.jpg"
        draw_robot(size, rng, BACKGROUNDS[i % len(BACKGROUNDS)]).save(path, quality=95)
        paths.append(path)
    return paths


def write_mixed_aspect_photos(out_dir: Path, sizes: list[tuple[int, int]], seed: int = 11) -> list[Path]:
    """The sample robot in photos of other aspects: each (width, height) frame holds a robot drawn at
    its shorter side, placed at a random offset along the longer one."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (width, height) in enumerate(sizes):
        background = BACKGROUNDS[(i + 3) % len(BACKGROUNDS)]
        side = min(width, height)
        frame = Image.new("RGB", (width, height), background)
        frame.paste(draw_robot(side, rng, background), (rng.randint(0, width - side), rng.randint(0, height - side)))
        path = out_dir / f"robot_{width}x{height}_{i + 1:02d}.png"
        frame.save(path)
        paths.append(path)
    return paths


CONCEPT_YAML = """\
# The bundled sample concept: photos drawn by components/samples.py (project licence).
name: toy-robot
class_noun: robot
instance_token: sks
base_model: tiny-sd
photos: photos
overrides: {}
"""


def write_sample_concept(folder: Path) -> Path:
    write_sample_photos(folder / "photos")
    (folder / "concept.yaml").write_text(CONCEPT_YAML)
    return folder / "concept.yaml"


# The plumbing sample (toy-robot on tiny-sd) with every stage cut to seconds: the flow and e2e tests'
# settings and benchmarks/orchestration.py --fast, where orchestration, not stage work, is the run.
FAST_FLOW_PARAMS = {
    "concepts": ["toy-robot"],
    # The plumbing sample's base has random weights: nothing can be learned, so the gate's learning
    # check is off here; tests/quality holds the gate to it on the toy world.
    "promotion": {"min_clip_i_gain": -1.0},
    "prior": {"num_images": 4, "steps": 4, "batch_size": 4},
    "train": {"max_steps": 8, "batch_size": 1, "checkpoint_every": 4},
    "evaluate": {
        "seeds": [0, 1],
        "steps": 4,
        "prompts": ["a photo of {instance}", "{instance} on the beach"],
        "class_prompts": ["a photo of a {class_noun}"],
    },
}
