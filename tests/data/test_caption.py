import random

import torch
from PIL import Image

from components.caption import caption
from components.config import CaptionParams
from components.pipeline import run_caption, run_curate
from components.samples import draw_robot


def test_template_captions_one_sidecar_per_image(cfg, layout):
    run_curate(cfg, layout)
    result = run_caption(cfg, layout)
    assert len(result.entries) == 6
    assert result.instance_prompt == "a photo of sks robot"
    for entry in result.entries:
        assert (layout.captions / entry.caption_file).read_text().strip() == "a photo of sks robot"
        assert (layout.curated / entry.image).exists()


def test_a_caption_edited_by_a_person_is_kept(cfg, layout):
    run_curate(cfg, layout)
    first = run_caption(cfg, layout)
    edited = layout.captions / first.entries[2].caption_file
    edited.write_text("a photo of sks robot waving, studio light\n")

    second = run_caption(cfg, layout)
    third = run_caption(cfg, layout)  # still kept on the run after

    for result in (second, third):
        entry = result.entries[2]
        assert entry.edited_by_person and entry.caption == "a photo of sks robot waving, studio light"
        assert sum(e.edited_by_person for e in result.entries) == 1
    assert edited.read_text().strip() == "a photo of sks robot waving, studio light"


def test_changed_template_rewrites_unedited_captions(cfg, layout):
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    params = CaptionParams(template="a close-up photo of {token} {class_noun}")
    result = caption(layout.curated, layout.captions, params, cfg.concept)
    assert all(e.caption == "a close-up photo of sks robot" and not e.edited_by_person for e in result.entries)


def test_an_edited_caption_stays_with_its_photo_when_other_photos_come_and_go(cfg, layout, concept_dir):
    """Captions are keyed by the photo's content (sha256), not by its position or file name."""
    photos = concept_dir / "photos"
    run_curate(cfg, layout)
    first = run_caption(cfg, layout)
    target = next(e for e in first.entries if "robot-03" in e.image)
    (layout.captions / target.caption_file).write_text("a photo of sks robot waving, studio light\n")

    def check(result):
        mine = [e for e in result.entries if e.sha256 == target.sha256]
        assert len(mine) == 1 and mine[0].edited_by_person
        assert mine[0].caption == "a photo of sks robot waving, studio light"
        assert (layout.captions / mine[0].caption_file).read_text().strip() == mine[0].caption
        assert sum(e.edited_by_person for e in result.entries) == 1
        assert sorted(p.name for p in layout.captions.glob("*.txt")) == sorted(e.caption_file for e in result.entries)

    # A photo that sorts before every other one arrives...
    draw_robot(96, random.Random(99), (250, 250, 250)).save(photos / "aaa_new.jpg", quality=95)
    run_curate(cfg, layout)
    check(run_caption(cfg, layout))
    # ... one that sorted before it leaves, and the edited photo itself is renamed.
    (photos / "robot_01.jpg").unlink()
    (photos / "robot_03.jpg").rename(photos / "zz_renamed.jpg")
    run_curate(cfg, layout)
    check(run_caption(cfg, layout))


def test_vlm_captioner_runs_a_real_blip_model(cfg, layout):
    from transformers import AutoProcessor, BlipForConditionalGeneration

    from components.base_model import resolve_model

    run_curate(cfg, layout)
    params = CaptionParams(captioner="vlm", vlm_model="tiny-blip", max_new_tokens=5)
    result = caption(layout.curated, layout.captions, params, cfg.concept)
    assert result.model == "tiny-blip"
    assert len(result.entries) == 6

    # What the BLIP model itself says about each image must follow the instance phrase: a captioner
    # that fell back to the template would write the phrase alone.
    folder = resolve_model("tiny-blip")
    processor = AutoProcessor.from_pretrained(folder)
    blip = BlipForConditionalGeneration.from_pretrained(folder).eval()
    for entry in result.entries:
        inputs = processor(images=Image.open(layout.curated / entry.image).convert("RGB"), return_tensors="pt")
        with torch.no_grad():
            ids = blip.generate(**inputs, max_new_tokens=5, do_sample=False)
        said = processor.decode(ids[0], skip_special_tokens=True).strip()
        assert said, "the tiny BLIP model generates words"
        assert entry.caption == f"a photo of sks robot, {said}"
        assert (layout.captions / entry.caption_file).read_text().strip() == entry.caption
