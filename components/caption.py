"""caption: one editable sidecar caption per curated image, plus the instance prompt.

Captioners: ``template`` ("a photo of {token} {class_noun}") or ``vlm``, a real vision-language model
through transformers (BLIP-class, from a local folder or hub id) whose caption is prefixed with the
instance phrase. A caption a person edited (file text differs from what conceptlab wrote) is kept,
attached to its photo by content (the photo's sha256 in the curate manifest), not by file name or
position: adding, removing or renaming other photos never moves or drops it.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from tqdm import tqdm

from components.config import CaptionParams, Concept
from components.curate import CurateResult
from components.io import StageResult, read_json


class CaptionEntry(StageResult):
    image: str
    sha256: str  # the photo's, from the curate manifest: what an edited caption stays attached to
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
    photos = [e for e in manifest.entries if e.status == "accepted" and e.output]
    images = [curated_dir / e.output for e in photos]
    if params.captioner == "template":
        generated = [template_caption(params, concept)] * len(images)
        model = None
    else:
        generated = vlm_captions(images, params, concept)
        model = params.vlm_model

    out_dir.mkdir(parents=True, exist_ok=True)
    edits, written = _person_edits(out_dir)  # read before anything is written or removed
    entries = []
    for photo, image, new_text in zip(photos, images, generated, strict=True):
        sidecar = out_dir / f"{image.stem}.txt"
        text = edits.get(photo.sha256)
        if text is None and sidecar.name not in written and sidecar.exists():
            text = sidecar.read_text(encoding="utf-8").strip() or None  # a person wrote it before any run
        edited = text is not None
        wanted = text if edited else new_text
        if not sidecar.exists() or sidecar.read_text(encoding="utf-8").strip() != wanted:
            sidecar.write_text(wanted + "\n", encoding="utf-8")  # a new name for an edit, or a new caption
        entries.append(
            CaptionEntry(
                image=str(image.relative_to(curated_dir)),
                sha256=photo.sha256,
                caption_file=sidecar.name,
                caption=wanted,
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


def _person_edits(out_dir: Path) -> tuple[dict[str, str], set[str]]:
    """Captions a person edited since the previous run, by photo sha256, and every sidecar name
    conceptlab wrote. A sidecar is edited when its text differs from what conceptlab generated for it."""
    record = out_dir / "captions.json"
    if not record.exists():
        return {}, set()
    edits, written = {}, set()
    for e in read_json(record)["entries"]:
        written.add(e["caption_file"])
        sidecar = out_dir / e["caption_file"]
        on_disk = sidecar.read_text(encoding="utf-8").strip() if sidecar.exists() else ""
        if on_disk and on_disk != e["generated"].strip() and e.get("sha256"):
            edits[e["sha256"]] = on_disk
    return edits, written
