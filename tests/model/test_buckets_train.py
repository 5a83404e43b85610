"""Training on aspect buckets with tiny SD and SDXL models and photos of mixed aspects: every batch has
one shape, SDXL's time ids carry each photo's original size and crop, class priors are generated over
the same buckets, and a resumed run gives the same adapter bit for bit."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from components.config import PriorParams
from components.io import read_json
from components.pipeline import instance_buckets, run_caption, run_curate, run_prior, run_train
from components.prior import generate_priors, prior_inputs
from components.samples import write_mixed_aspect_photos

MIXED = [(160, 96), (96, 160), (300, 80)]  # with the sample's 6 square photos: 4 buckets at 64 px
BATCH = 2


def bucketed(cfg, model: str = "tiny-sd", **train):
    p = cfg.params
    params = p.model_copy(
        update={
            "curate": p.curate.model_copy(update={"aspect_buckets": "auto"}),
            "prior": p.prior.model_copy(update={"num_images": 6}),
            "train": p.train.model_copy(update={"batch_size": BATCH, **train}),
        }
    )
    return cfg.model_copy(update={"concept": cfg.concept.model_copy(update={"base_model": model}), "params": params})


def prepare(cfg, layout, concept_dir, model: str = "tiny-sd", **train):
    write_mixed_aspect_photos(concept_dir / "photos", MIXED)
    cfg = bucketed(cfg, model, **train)
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    run_prior(cfg, layout)
    return cfg


@contextmanager
def watch_unet():
    """Each U-Net call in grad mode (the training loop, not the caches or the priors): the noisy
    latents' shape and, for SDXL, the time ids (seen by the U-Net's own time-id projection)."""
    calls = []

    def on_start(module, args):
        if not torch.is_grad_enabled():
            return
        kind = type(module).__name__
        if kind == "UNet2DConditionModel":
            calls.append({"shape": tuple(args[0].shape), "time_ids": None})
        elif kind == "Timesteps" and calls and args[0].numel() == 6 * calls[-1]["shape"][0]:
            calls[-1]["time_ids"] = args[0].reshape(-1, 6).tolist()

    handle = torch.nn.modules.module.register_module_forward_pre_hook(on_start)
    try:
        yield calls
    finally:
        handle.remove()


def pixel_size(shape) -> tuple[int, int]:
    """(width, height) in pixels of latents shaped [b, C, h, w] (the tiny VAE downsamples by 8)."""
    return shape[3] * 8, shape[2] * 8


def test_batches_come_from_one_bucket_and_priors_follow_the_buckets(cfg, layout, concept_dir):
    cfg = prepare(cfg, layout, concept_dir, max_steps=8, checkpoint_every=100)
    buckets = dict(instance_buckets(layout))
    assert buckets == {(48, 80): 1, (64, 64): 6, (80, 48): 1, (128, 32): 1}

    prior = read_json(layout.prior / "manifest.json")
    assert prior["inputs"]["buckets"] == [[48, 80, 1], [64, 64, 3], [80, 48, 1], [128, 32, 1]]
    for image in prior["images"]:
        with Image.open(layout.prior / image["file"]) as img:
            assert img.size == tuple(image["size"])
    assert sorted(tuple(i["size"]) for i in prior["images"]) == sorted(
        [(48, 80), (64, 64), (64, 64), (64, 64), (80, 48), (128, 32)]
    )

    with watch_unet() as calls:
        run_train(cfg, layout)
    assert len(calls) == 8
    for call in calls:
        assert call["shape"][0] == 2 * BATCH, "instance rows and as many class rows, in one tensor"
        assert pixel_size(call["shape"]) in buckets
    assert len({c["shape"] for c in calls}) >= 2, "the buckets take turns"


def test_sdxl_time_ids_carry_each_photos_original_size_and_crop(cfg, layout, concept_dir):
    cfg = prepare(cfg, layout, concept_dir, "tiny-sdxl", max_steps=6, checkpoint_every=100)
    expected = {}  # bucket -> time ids (h, w, top, left, target h, target w) of its photos, both flips
    for e in read_json(layout.curated / "manifest.json")["entries"]:
        if e["status"] != "accepted":
            continue
        (width, height), (left, top, right, _), (bw, bh) = e["original_size"], e["crop_box"], e["bucket"]
        scale = bw / (right - left)
        for crop_left in (left, width - right):  # as cut, and mirrored by a flip
            ids = [height, width, round(top * scale), round(crop_left * scale), bh, bw]
            expected.setdefault((bw, bh), []).append(ids)

    with watch_unet() as calls:
        run_train(cfg, layout)
    assert len(calls) == 6 and len({c["shape"] for c in calls}) >= 2
    for call in calls:
        bucket = pixel_size(call["shape"])
        instance, generated = call["time_ids"][:BATCH], call["time_ids"][BATCH:]
        assert all(ids in expected[bucket] for ids in instance), (instance, expected[bucket])
        w, h = bucket
        assert all(ids == [h, w, 0, 0, h, w] for ids in generated), "class images: generated at the bucket, uncut"
    wide = [ids for ids in expected[(128, 32)] if ids[:2] == [80, 300]]
    assert wide and wide[0][2] == 1, "the 300x80 photo lost 2.5 px at the top: 1 at the bucket's scale"


def test_resume_is_bit_exact_with_buckets(cfg, layout, concept_dir):
    cfg = prepare(cfg, layout, concept_dir, max_steps=6, checkpoint_every=2)
    run_train(cfg, layout)
    uninterrupted = load_file(str(layout.adapter / "pytorch_lora_weights.safetensors"))
    for ckpt in layout.checkpoints.iterdir():  # "interrupted" after step 4
        if ckpt.name != "step-0000004":
            shutil.rmtree(ckpt)
    shutil.rmtree(layout.adapter)

    result = run_train(cfg, layout, resume="yes")

    assert result.resumed_from_step == 4
    resumed = load_file(str(layout.adapter / "pytorch_lora_weights.safetensors"))
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=0, atol=0)


def test_square_class_images_for_bucketed_photos_are_refused(cfg, layout, concept_dir):
    cfg = bucketed(cfg, max_steps=1)
    write_mixed_aspect_photos(concept_dir / "photos", MIXED)
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    square = cfg.params.prior.model_copy(update={"num_images": 2})
    generate_priors("tiny-sd", "robot", square, 64, layout.priors_root, layout.prior)
    with pytest.raises(ValueError, match=r"class images \(64x64\) cover no aspect bucket 48x80, 80x48, 128x32"):
        run_train(cfg, layout)


def test_square_photos_keep_the_square_prior_folder():
    params = PriorParams(num_images=4)
    square = prior_inputs("tiny-sd", "robot", params, 64)
    assert prior_inputs("tiny-sd", "robot", params, 64, [((64, 64), 5)]) == square, "same folder, reused"
    mixed = prior_inputs("tiny-sd", "robot", params, 64, [((64, 64), 3), ((96, 40), 1)])
    assert mixed["buckets"] == [[64, 64, 3], [96, 40, 1]] and mixed != square
