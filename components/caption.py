"""caption: one editable sidecar caption per curated image, plus the instance prompt.

Captioners: ``template`` ("a photo of {token} {class_noun}") or ``vlm``, a real vision-language model
through transformers (BLIP-class, from a local folder or hub id) whose caption is prefixed with the
instance phrase. A caption a person edited (file text differs from what conceptlab wrote) is kept.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from tqdm import tqdm

from components.config import CaptionParams, Concept
from components.curate import CurateResult
from components.io import StageResult, read_json, sha256_bytes


class CaptionEntry(StageResult):
    image: str
    caption_file: str
    caption: str
    generated: str
    edited_by_person: bool


class CaptionResult(StageResult):
    captioner: str
    model: str | None
    instance_prompt: str
    entries: list[CaptionEntry]


def template_caption(params: CaptionParams, concept: Concept) -> str:
    return params.template.format(token=concept.instance_token, class_noun=concept.class_noun)


def vlm_captions(images: list[Path], params: CaptionParams, concept: Concept) -> list[str]:
    import torch
    from transformers import AutoProcessor, BlipForConditionalGeneration

    from components.base_model import resolve_model

    folder = resolve_model(params.vlm_model)
    processor = AutoProcessor.from_pretrained(folder)
    model = BlipForConditionalGeneration.from_pretrained(folder).eval()
    captions = []
    for path in tqdm(images, desc="caption", unit="image", leave=False):
        inputs = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=params.max_new_tokens, do_sample=False)
        text = processor.decode(ids[0], skip_special_tokens=True).strip()
        # The identifier + class noun must lead the caption: that is the phrase DreamBooth binds.
        captions.append(f"a photo of {concept.instance_phrase}" + (f", {text}" if text else ""))
    return captions


def caption(curated_dir: Path, out_dir: Path, params: CaptionParams, concept: Concept) -> CaptionResult:
    manifest = CurateResult.read(curated_dir / "manifest.json")
    images = manifest.accepted_images(curated_dir)
    previous = _previous_generated(out_dir / "captions.json")
    if params.captioner == "template":
        generated = [template_caption(params, concept)] * len(images)
        model = None
    else:
        generated = vlm_captions(images, params, concept)
        model = params.vlm_model

    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for image, new_text in zip(images, generated, strict=True):
        sidecar = out_dir / f"{image.stem}.txt"
        text, edited = new_text, False
        if sidecar.exists():
            on_disk = sidecar.read_text(encoding="utf-8").strip()
            # Written or edited by a person: the file differs from what conceptlab generated last
            # time (or conceptlab never wrote it). Keep it.
            if on_disk and previous.get(sidecar.name) != sha256_bytes(on_disk.encode()):
                text, edited = on_disk, True
        if not edited:
            sidecar.write_text(text + "\n", encoding="utf-8")
        entries.append(
            CaptionEntry(
                image=str(image.relative_to(curated_dir)),
                caption_file=sidecar.name,
                caption=text,
                generated=new_text,
                edited_by_person=edited,
            )
        )
    keep = {e.caption_file for e in entries}
    for stale in out_dir.glob("*.txt"):
        if stale.name not in keep:
            stale.unlink()
    result = CaptionResult(
        captioner=params.captioner,
        model=model,
        instance_prompt=f"a photo of {concept.instance_phrase}",
        entries=entries,
    )
    result.write(out_dir / "captions.json")
    return result


def _previous_generated(record: Path) -> dict[str, str]:
    """sidecar name -> hash of the caption conceptlab generated for it on the previous run."""
    if not record.exists():
        return {}
    return {e["caption_file"]: sha256_bytes(e["generated"].encode()) for e in read_json(record)["entries"]}
