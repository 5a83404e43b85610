"""prior: class images for prior preservation, in a folder addressed by the hash of every input.

Any concept of the same class, base model and settings reuses the folder (nothing is generated
twice); changing any input (model content, prompt, seeds, sampler, steps, ..., and the code and
library versions that generate) gives a new folder, so stale images are never reused -- the
reference DreamBooth script only counts files. A folder is written under a temporary name and
renamed when complete, so an interrupted run is never reused.
Each concept gets its own view of the folder (hard links, no copies) for DVC to version.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

from tqdm import tqdm

from components.base_model import load_pipeline, model_identity
from components.buckets import Bucket, allocate
from components.config import PriorParams
from components.generation import generate
from components.io import StageResult, new_staging_dir, publish, sha256_file, sha256_json, slugify, write_json

# The libraries that turn a model and a prompt into pixels; a new version may draw other images.
GENERATING_LIBRARIES = ("torch", "diffusers", "transformers")


class PriorImage(StageResult):
    file: str
    seed: int
    size: tuple[int, int] | None = None  # width, height: its aspect bucket


class PriorResult(StageResult):
    folder: str
    key: str
    prompt: str
    inputs: dict
    images: list[PriorImage]
    reused: bool = False


def generation_code_version() -> dict[str, str]:
    """The code that decides the pixels besides the inputs: a hash of the source of this module and of
    the modules it loads the model and generates with (found from the functions it calls, so the set
    follows the code when it moves), and the versions of the libraries they run."""
    modules = sorted({__name__, load_pipeline.__module__, generate.__module__})
    sources = {m: sha256_file(Path(sys.modules[m].__file__)) for m in modules}
    return {"sources": sha256_json(sources)[:16], **{lib: version(lib) for lib in GENERATING_LIBRARIES}}


def prior_inputs(
    base_model: str,
    class_noun: str,
    params: PriorParams,
    resolution: int,
    buckets: list[tuple[Bucket, int]] | None = None,
) -> dict:
    """Everything that changes the class images; its hash names the folder. With aspect buckets (the
    instance photos per bucket), the images are spread over the same buckets in proportion."""
    inputs = {
        "code": generation_code_version(),
        "model": model_identity(base_model),
        "prompt": params.prompt.format(class_noun=class_noun),
        "negative_prompt": params.negative_prompt,
        "seeds": list(range(params.seed, params.seed + params.num_images)),
        "resolution": resolution,
        "scheduler": params.scheduler,
        "steps": params.steps,
        "guidance_scale": params.guidance_scale,
    }
    sizes = allocate(buckets, params.num_images) if buckets else []
    if sizes and sizes != [((resolution, resolution), params.num_images)]:  # all square: the square folder
        inputs["buckets"] = [[w, h, n] for (w, h), n in sizes]
    return inputs


def image_sizes(inputs: dict) -> list[tuple[int, int]]:
    """Each seed's image size (width, height), in seed order: bucket by bucket, or all square."""
    if "buckets" not in inputs:
        return [(inputs["resolution"], inputs["resolution"])] * len(inputs["seeds"])
    return [(w, h) for w, h, n in inputs["buckets"] for _ in range(n)]


def generate_priors(
    base_model: str,
    class_noun: str,
    params: PriorParams,
    resolution: int,
    priors_root: Path,
    out_dir: Path,
    buckets: list[tuple[Bucket, int]] | None = None,
) -> PriorResult:
    """Ensures the shared class-prior folder exists and links its images into ``out_dir``. ``buckets``:
    the instance photos per aspect bucket (None: square images at ``resolution``)."""
    inputs = prior_inputs(base_model, class_noun, params, resolution, buckets)
    key = sha256_json(inputs)[:16]
    folder = priors_root / f"{slugify(class_noun)}-{key}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        result = PriorResult.read(manifest).model_copy(update={"reused": True})
    else:
        result = _generate_folder(base_model, inputs, params, folder, key)
    _link_tree(folder, out_dir)
    write_json(out_dir / "manifest.json", result.model_dump(mode="json"))
    return result


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-links src's images into dst (copies across file systems)."""
    shutil.rmtree(dst, ignore_errors=True)
    (dst / "images").mkdir(parents=True)
    for image in (src / "images").iterdir():
        try:
            os.link(image, dst / "images" / image.name)
        except OSError:
            shutil.copy2(image, dst / "images" / image.name)


def _generate_folder(base_model, inputs, params, folder: Path, key: str) -> PriorResult:
    staging = new_staging_dir(folder)
    (staging / "images").mkdir()
    pipe = load_pipeline(base_model)
    seeds, sizes = inputs["seeds"], image_sizes(inputs)
    images = {}
    with tqdm(total=len(seeds), desc="class priors", unit="image", leave=False) as bar:
        for size in dict.fromkeys(sizes):  # one size at a time: a batch has one shape
            group = [seed for seed, s in zip(seeds, sizes, strict=True) if s == size]
            drawn = generate(pipe, [inputs["prompt"]] * len(group), group, params, size, bar.update)
            images |= zip(group, drawn, strict=True)
    entries = []
    for seed, size in zip(seeds, sizes, strict=True):
        image = images[seed]
        name = f"images/{seed:06d}.png"
        image.save(staging / name)
        entries.append(PriorImage(file=name, seed=seed, size=size))
    result = PriorResult(folder=folder.name, key=key, prompt=inputs["prompt"], inputs=inputs, images=entries)
    result.write(staging / "manifest.json")
    publish(staging, folder)
    return result
