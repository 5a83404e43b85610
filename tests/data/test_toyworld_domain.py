"""The toy world's images are deterministic and show what their captions say."""

import random

import numpy as np

from components.toyworld.domain import COLOURS, ObjectSpec, dataset, render


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = dataset(6, seed=3), dataset(6, seed=3), dataset(6, seed=4)
    assert [x[1] for x in a] == [x[1] for x in b]
    assert all(np.array_equal(np.asarray(x[0]), np.asarray(y[0])) for x, y in zip(a, b, strict=True))
    assert [x[1] for x in a] != [x[1] for x in c]


def test_image_shows_the_captioned_colours_and_position():
    spec = ObjectSpec("square", "red", "plain", "large", "left", "blue")
    img = np.asarray(render(spec, 64, random.Random(0))).astype(int)
    assert spec.caption() == "a photo of a large red square on the left on a blue background"
    obj_x = 64 * 0.3
    assert np.abs(img[32, int(obj_x)] - COLOURS["red"]).max() < 10, "object colour at its position"
    assert np.abs(img[2, 62] - COLOURS["blue"]).max() < 10, "background colour in the corner"
    assert np.abs(img[32, 58] - COLOURS["blue"]).max() < 10, "nothing on the right"


def test_patterns_add_a_second_shade_and_plain_does_not():
    rng = random.Random(0)
    plain = np.asarray(render(ObjectSpec("circle", "green", "plain", "large", "center", "white"), 64, rng))
    striped = np.asarray(render(ObjectSpec("circle", "green", "striped", "large", "center", "white"), 64, rng))
    centre = (slice(24, 40), slice(24, 40))
    assert len({tuple(p) for p in plain[centre].reshape(-1, 3)}) == 1
    assert len({tuple(p) for p in striped[centre].reshape(-1, 3)}) >= 2


def test_held_out_combinations_never_appear():
    held_out = frozenset({("purple", "checkered", "star"), ("orange", "striped", "triangle")})
    specs = [s for _, _, s in dataset(400, seed=0, exclude=held_out)]
    assert not any(s.combo in held_out for s in specs)
    assert {s.shape for s in specs} >= {"star", "triangle"} and {s.colour for s in specs} >= {"purple", "orange"}
    assert all(s.colour != s.background for s in specs)


def test_identifier_caption_replaces_the_attributes_it_stands_for():
    spec = ObjectSpec("star", "purple", "checkered", "small", "center", "white")
    assert spec.caption("sks") == "a photo of a small sks star on a white background"
