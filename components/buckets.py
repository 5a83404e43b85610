"""Aspect-ratio buckets: training sizes of about the base model's pixel area in several shapes, so a
photo keeps (nearly) its own aspect instead of being cut to a square.

Curate gives each photo the bucket nearest its aspect and cuts only the sliver that differs; training
draws each batch from one bucket; the class priors are generated over the same buckets. Sizes are
(width, height) in pixels. Pure Python: curate imports this without torch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

Bucket = tuple[int, int]  # width, height

SQUARE = "square"
AUTO = "auto"
MAX_ASPECT = 4.0  # SDXL's and Flux's usual lists stop at 1:4 / 4:1 (512 x 2048 at 1024 px)


def bucket_step(resolution: int) -> int:
    """Side granularity: 64 px at 1024 (SDXL's and Flux's lists), resolution / 16 in general, in
    multiples of 16 (the VAE's 8 x the 2x2 latent patches of Flux and SD3); 8 below 64 px, where 16
    would leave hardly any shapes (the 32 px toy world: its VAE's factor)."""
    if resolution < 64:
        return 8
    return max(16, resolution // 16 // 16 * 16)


def auto_buckets(resolution: int) -> list[Bucket]:
    """The usual bucket list scaled to ``resolution``: for each shorter side from resolution / 2 to
    resolution (in steps of bucket_step), the longest multiple of the step whose area is at most
    resolution², in both orientations; sorted from tallest to widest."""
    step = bucket_step(resolution)
    area = resolution * resolution
    found: set[Bucket] = set()
    for short in range(max(step, resolution // 2 // step * step), resolution + 1, step):
        long = area // short // step * step
        if long < short or long / short > MAX_ASPECT:
            continue
        found |= {(short, long), (long, short)}
    return sorted(found, key=aspect)


def aspect(size: Bucket) -> float:
    return size[0] / size[1]


def resolve_buckets(setting: str | Sequence[Sequence[int]], resolution: int) -> list[Bucket]:
    """The bucket list a ``curate.aspect_buckets`` setting means at ``resolution``."""
    if setting == SQUARE:
        return [(resolution, resolution)]
    if setting == AUTO:
        return auto_buckets(resolution)
    return sorted({(int(w), int(h)) for w, h in setting}, key=aspect)


def nearest_bucket(size: tuple[int, int], buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect is nearest the photo's (on a log scale: 2:1 and 1:2 are as far from
    1:1); on a tie, the earlier one in the list."""
    target = math.log(aspect(size))
    return min(buckets, key=lambda b: abs(math.log(aspect(b)) - target))


def crop_box(size: tuple[int, int], bucket: Bucket) -> tuple[float, float, float, float]:
    """The largest centred part of a photo of ``size`` with the bucket's aspect (left, top, right,
    bottom, in the photo's pixels): the minimal crop before resizing to the bucket."""
    width, height = size
    bw, bh = bucket
    if width * bh > height * bw:  # wider than the bucket: cut the sides
        kept = height * bw / bh
        left = (width - kept) / 2
        return (left, 0.0, left + kept, float(height))
    kept = width * bh / bw  # taller (or the same): cut top and bottom
    top = (height - kept) / 2
    return (0.0, top, float(width), top + kept)


def bucket_counts(buckets: Sequence[Bucket]) -> list[tuple[Bucket, int]]:
    """How many images each bucket holds, ordered from tallest to widest."""
    return sorted(Counter(tuple(b) for b in buckets).items(), key=lambda item: aspect(item[0]))


def allocate(counts: Sequence[tuple[Bucket, int]], total: int) -> list[tuple[Bucket, int]]:
    """``total`` images spread over the buckets in proportion to ``counts`` (highest averages: each next
    image goes to the bucket with the most photos per image so far), at least one in every bucket, so
    every training batch finds class images of its shape."""
    if total < len(counts):
        raise ValueError(
            f"prior.num_images is {total} but the photos fall in {len(counts)} aspect buckets; "
            f"set prior.num_images to at least {len(counts)} (every bucket needs class images)"
        )
    given = [1] * len(counts)
    for _ in range(total - len(counts)):
        best = max(range(len(counts)), key=lambda i: (counts[i][1] / given[i], -i))
        given[best] += 1
    return [(bucket, n) for (bucket, _), n in zip(counts, given, strict=True)]
