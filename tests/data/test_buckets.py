"""Aspect-ratio buckets in curate: the bucket lists, nearest-aspect assignment, the minimal crop, what
the manifest records, and the square default left exactly as it was."""

import json

import pytest
from PIL import Image, ImageOps

from components.buckets import allocate, auto_buckets, bucket_step, crop_box, nearest_bucket, resolve_buckets
from components.config import ConfigError, CurateParams, load_params
from components.curate import curate
from components.pipeline import run_curate
from components.samples import write_mixed_aspect_photos, write_sample_photos

PARAMS = CurateParams(min_side=64, min_images=1)
MIXED = [(160, 96), (96, 160), (220, 100), (120, 100), (300, 80)]


def test_auto_buckets_at_1024_are_sdxl_and_flux_sizes():
    buckets = auto_buckets(1024)
    assert bucket_step(1024) == 64
    assert {(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344)} <= set(buckets)
    assert buckets[0] == (512, 2048) and buckets[-1] == (2048, 512), "aspects from 1:4 to 4:1"
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert 0.95 * 1024**2 <= w * h <= 1024**2, f"{w}x{h}: about the base model's pixel area, never more"
        assert (h, w) in buckets, "each shape in both orientations"
    assert [w / h for w, h in buckets] == sorted(w / h for w, h in buckets)


def test_auto_buckets_at_the_toy_worlds_32_px_are_multiples_of_8():
    assert auto_buckets(32) == [(16, 64), (24, 40), (32, 32), (40, 24), (64, 16)]
    # From 64 px on, multiples of 16: even latents, as Flux's and SD3's 2x2 patches need.
    assert auto_buckets(64) == [(32, 128), (48, 80), (64, 64), (80, 48), (128, 32)]
    assert all(w % 16 == 0 and h % 16 == 0 and w * h <= 128 * 128 for w, h in auto_buckets(128))


def test_each_photo_gets_the_bucket_nearest_its_aspect():
    buckets = auto_buckets(1024)
    assert nearest_bucket((3000, 2000), buckets) == (1216, 832)  # 3:2 -> 1.46 (1.75 is further)
    assert nearest_bucket((2000, 3000), buckets) == (832, 1216)
    assert nearest_bucket((500, 500), buckets) == (1024, 1024)
    assert nearest_bucket((1920, 1080), buckets) == (1344, 768)  # 16:9 -> 1.75
    assert nearest_bucket((6000, 500), buckets) == (2048, 512), "beyond 4:1: the widest bucket"
    assert resolve_buckets("square", 64) == [(64, 64)]
    assert resolve_buckets([[64, 48], [48, 64], [64, 48]], 64) == [(48, 64), (64, 48)]


def test_the_crop_is_the_largest_centred_part_with_the_buckets_aspect():
    assert crop_box((300, 120), (80, 40)) == (30.0, 0.0, 270.0, 120.0)  # 2:1 keeps 240 of 300 px
    assert crop_box((100, 300), (40, 80)) == (0.0, 50.0, 100.0, 250.0)
    assert crop_box((160, 96), (80, 48)) == (0.0, 0.0, 160.0, 96.0), "same aspect: nothing is cut"


def test_curate_with_auto_buckets_keeps_each_photos_aspect_and_records_it(tmp_path):
    src = tmp_path / "photos"
    write_mixed_aspect_photos(src, MIXED)
    Image.new("RGB", (40, 200), "red").save(src / "thin.png")  # too small: still listed, with its reason
    (src / "notes.txt").write_text("not a photo")

    result = curate(str(src), tmp_path / "out", PARAMS.model_copy(update={"aspect_buckets": "auto"}), 64)

    assert result.buckets == auto_buckets(64)
    accepted = [e for e in result.entries if e.status == "accepted"]
    assert len(accepted) == len(MIXED)
    for e in accepted:
        assert e.bucket == nearest_bucket(e.original_size, auto_buckets(64))
        assert e.crop_box == pytest.approx(crop_box(e.original_size, e.bucket))
        with Image.open(tmp_path / "out" / e.output) as img:
            assert img.size == e.bucket
    by_size = {e.original_size: e for e in accepted}
    assert by_size[(160, 96)].bucket == (80, 48) and by_size[(160, 96)].crop_box == (0.0, 0.0, 160.0, 96.0)
    assert by_size[(96, 160)].bucket == (48, 80)
    assert by_size[(220, 100)].bucket == (80, 48)
    assert by_size[(220, 100)].crop_box == pytest.approx((80 / 3, 0, 580 / 3, 100)), "2.2:1 into 5:3: 53 px cut"
    assert by_size[(120, 100)].bucket == (64, 64)
    assert by_size[(300, 80)].bucket == (128, 32) and by_size[(300, 80)].crop_box == pytest.approx((0, 2.5, 300, 77.5))
    reasons = {e.source: e.reason for e in result.entries if e.status == "rejected"}
    assert reasons["thin.png"].startswith("too small") and reasons["notes.txt"].startswith("not an image")
    saved = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {tuple(e["bucket"]) for e in saved["entries"] if e["status"] == "accepted"} == {e.bucket for e in accepted}


def test_a_bucket_list_of_its_own_and_padding(tmp_path):
    src = tmp_path / "photos"
    write_mixed_aspect_photos(src, MIXED[:3])
    params = PARAMS.model_copy(update={"aspect_buckets": [(64, 64), (96, 48)], "crop": "pad"})
    result = curate(str(src), tmp_path / "out", params, 64)
    buckets = {e.original_size: e.bucket for e in result.entries}
    assert buckets == {(160, 96): (96, 48), (96, 160): (64, 64), (220, 100): (96, 48)}
    assert all(e.crop_box is None for e in result.entries), "padding cuts nothing"
    tall = next(e for e in result.entries if e.original_size == (96, 160))
    with Image.open(tmp_path / "out" / tall.output) as img:
        assert img.size == (64, 64) and img.getpixel((0, 32)) == (255, 255, 255), "white bars at the sides"


def test_square_is_the_default_and_unchanged(tmp_path):
    assert CurateParams().aspect_buckets == "square"
    src = tmp_path / "photos"
    write_mixed_aspect_photos(src, MIXED[:2])
    write_sample_photos(src, count=2)
    result = curate(str(src), tmp_path / "out", PARAMS, 64)
    assert result.buckets == [(64, 64)]
    for e in result.entries:
        with Image.open(src / e.source) as photo:
            expected = ImageOps.fit(photo.convert("RGB"), (64, 64), method=Image.Resampling.LANCZOS)
        with Image.open(tmp_path / "out" / e.output) as img:
            assert img.tobytes() == expected.tobytes(), "the centre square, as before buckets"
        assert e.bucket == (64, 64)
        width, height = e.original_size
        side = min(width, height)
        assert e.crop_box == ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)


def test_run_curate_writes_the_photos_per_bucket_for_the_prior(cfg, layout, concept_dir):
    write_mixed_aspect_photos(concept_dir / "photos", MIXED[:3])
    curate_params = cfg.params.curate.model_copy(update={"aspect_buckets": "auto"})
    params = cfg.params.model_copy(update={"curate": curate_params, "resolution": 64})  # no model to build
    run_curate(cfg.model_copy(update={"params": params}), layout)
    counts = json.loads(layout.buckets.read_text())["buckets"]
    assert counts == [[48, 80, 1], [64, 64, 6], [80, 48, 2]]  # 6 square sample robots


def test_bad_bucket_settings_name_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("curate: {aspect_buckets: [[60, 64]]}\n")
    with pytest.raises(ConfigError, match=r"curate.aspect_buckets.*multiples of 8"):
        load_params(path)
    path.write_text("curate: {aspect_buckets: wide}\n")
    with pytest.raises(ConfigError, match="curate.aspect_buckets"):
        load_params(path)
    assert load_params(None).curate.aspect_buckets == "square"


def test_priors_spread_over_the_buckets_in_proportion():
    counts = [((48, 80), 3), ((64, 64), 1), ((80, 48), 2)]
    assert allocate(counts, 6) == [((48, 80), 3), ((64, 64), 1), ((80, 48), 2)]
    spread = allocate(counts, 16)
    assert sum(n for _, n in spread) == 16 and [n for _, n in spread] == [8, 3, 5]
    assert allocate(counts, 3) == [((48, 80), 1), ((64, 64), 1), ((80, 48), 1)], "every bucket gets one"
    with pytest.raises(ValueError, match="prior.num_images is 2 .* 3 aspect buckets"):
        allocate(counts, 2)
