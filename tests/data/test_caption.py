from components.caption import caption
from components.config import CaptionParams
from components.pipeline import run_caption, run_curate


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


def test_vlm_captioner_runs_a_real_blip_model(cfg, layout):
    run_curate(cfg, layout)
    params = CaptionParams(captioner="vlm", vlm_model="tiny-blip", max_new_tokens=5)
    result = caption(layout.curated, layout.captions, params, cfg.concept)
    assert result.model == "tiny-blip"
    assert len(result.entries) == 6
    for entry in result.entries:
        assert entry.caption.startswith("a photo of sks robot")
        assert (layout.captions / entry.caption_file).read_text().strip() == entry.caption
