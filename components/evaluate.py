"""evaluate: the adapter against its base model on identical (prompt, seed) pairs.

Concept prompts ("{instance} in the jungle") measure CLIP-T and CLIP-I; class-only prompts measure
prior drift (how far the adapter moved generic members of the class away from the base model).
Outputs: metrics.json (numbers + every setting used), samples, grid.png (rows: photos, base, adapter;
columns: each prompt at its first two seeds), report.md and report.html (the same report, images inline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw
from pydantic import BaseModel

from components.base_model import load_pipeline, model_identity, resolve_model
from components.base_samples import base_samples_inputs, read_base_samples, store_base_samples
from components.clip_scores import ClipScorer, clip_i, clip_t, diversity, paired_drift
from components.config import Concept, EvalParams
from components.generation import generate
from components.io import ADAPTER_FILE, StageResult, new_staging_dir, publish, sha256_file
from components.languages import check_prompt_languages, clip_languages
from components.report_html import PAIRED, render_html_report

FORMULAS = {
    "clip_t": "mean over generated images of cos(CLIP_text(prompt without the identifier), CLIP_image(image))",
    "clip_i": "mean over generated images and real instance images of cos(CLIP_image(gen), CLIP_image(real))",
    "diversity": "mean over prompts of mean pairwise (1 - cos) between CLIP image embeddings across seeds",
    "prior_drift": "mean over class-prompt (prompt, seed) pairs of 1 - cos(CLIP_image(base), CLIP_image(adapter))",
    "class_clip_i": "clip_i of the class-prompt images: how much generic class members look like the instance "
    "(DreamBooth's PRES, with CLIP in place of DINO)",
    "class_diversity": "diversity of the class-prompt images",
}


class SampleScores(BaseModel):
    """One (prompt, seed) pair's scores, base and adapter made from it: what the gate's intervals are
    estimated from. Concept prompts: clip_i, clip_t, base_clip_i, base_clip_t; class prompts: prior_drift."""

    kind: Literal["concept", "class"]
    prompt: str
    seed: int
    scores: dict[str, float]


class EvalResult(StageResult):
    metrics: dict[str, float]
    base: dict[str, float]
    adapter: dict[str, float]
    settings: dict
    clip_model: dict[str, str]
    formulas: dict[str, str]
    adapter_sha256: str
    samples: list[SampleScores] = []


def scored_prompt(template: str, concept: Concept) -> str:
    """The text CLIP-T scores an image against: its prompt with the class noun in place of the instance
    phrase, as CLIP does not know the identifier ("a photo of sks robot" -> "a photo of robot")."""
    return template.format(instance=concept.class_noun, class_noun=concept.class_noun)


def _pairs(prompts: list[str], seeds: list[int]) -> tuple[list[str], list[int], list[list[int]]]:
    flat_p, flat_s, groups = [], [], []
    for prompt in prompts:
        groups.append(list(range(len(flat_p), len(flat_p) + len(seeds))))
        flat_p += [prompt] * len(seeds)
        flat_s += list(seeds)
    return flat_p, flat_s, groups


def evaluate(
    base_model: str,
    adapter_dir: Path,
    instance_images: list[Path],
    concept: Concept,
    params: EvalParams,
    resolution: int,
    out_dir: Path,
    base_samples_root: Path | None = None,
) -> EvalResult:
    """``base_samples_root``: where the base model's images are kept between evaluations
    (components/base_samples.py); None draws them every time."""
    concept_prompts = [
        p.format(instance=concept.instance_phrase, class_noun=concept.class_noun) for p in params.prompts
    ]
    scored_texts = [scored_prompt(p, concept) for p in params.prompts]
    class_prompts = [p.format(class_noun=concept.class_noun) for p in params.class_prompts]
    # Before any image is made: a CLIP that cannot read the prompts' language refuses here.
    languages = clip_languages(resolve_model(params.clip_model))
    check_prompt_languages(params.clip_model, languages, scored_texts + class_prompts, concept.name)
    c_prompts, c_seeds, c_groups = _pairs(concept_prompts, params.seeds)
    k_prompts, k_seeds, k_groups = _pairs(class_prompts, params.seeds)
    prompts, seeds = c_prompts + k_prompts, c_seeds + k_seeds

    base_identity = model_identity(base_model)
    pipe = load_pipeline(base_model)
    base_images, base_reused = _base_images(pipe, base_identity, prompts, seeds, params, resolution, base_samples_root)
    pipe.load_lora_weights(adapter_dir)
    adapter_images = generate(pipe, prompts, seeds, params, resolution)
    del pipe

    scorer = ClipScorer.load(params.clip_model)
    real = scorer.image_files(instance_images)
    texts = scorer.texts(_pairs(scored_texts, params.seeds)[0])
    n = len(c_prompts)
    scores = {}
    embeddings = {}
    for label, images in (("base", base_images), ("adapter", adapter_images)):
        emb = scorer.images(images)
        embeddings[label] = emb
        scores[label] = {
            "clip_t": clip_t(texts, emb[:n]),
            "clip_i": clip_i(emb[:n], real),
            "diversity": diversity(emb[:n], c_groups),
            "class_clip_i": clip_i(emb[n:], real),
            "class_diversity": diversity(emb[n:], k_groups),
        }
    drift = paired_drift(embeddings["base"][n:], embeddings["adapter"][n:])
    per_pair = sample_scores(prompts, seeds, n, texts, real, embeddings)
    metrics = {
        "clip_i": scores["adapter"]["clip_i"],
        "clip_t": scores["adapter"]["clip_t"],
        "diversity": scores["adapter"]["diversity"],
        "clip_i_gain": scores["adapter"]["clip_i"] - scores["base"]["clip_i"],
        "clip_t_change": scores["adapter"]["clip_t"] - scores["base"]["clip_t"],
        "prior_drift": drift,
        "class_clip_i_gain": scores["adapter"]["class_clip_i"] - scores["base"]["class_clip_i"],
        "real_images_clip_i": clip_i(real, real),
    }
    staging = new_staging_dir(out_dir)
    (staging / "samples").mkdir()
    sample_files = {"base": [], "adapter": []}
    for label, images in (("base", base_images), ("adapter", adapter_images)):
        for i, (img, seed) in enumerate(zip(images, seeds, strict=True)):
            sample_files[label].append(staging / "samples" / f"{label}-{i:03d}-seed{seed}.png")
            img.save(sample_files[label][-1])
    # Two seeds per prompt: enough to tell a learned concept from one lucky sample.
    per_prompt = min(2, len(params.seeds))
    grid_columns = [i for g in c_groups + [[j + n for j in g] for g in k_groups] for i in g[:per_prompt]]
    make_grid(
        [base_images[i] for i in grid_columns],
        [adapter_images[i] for i in grid_columns],
        [f"{prompts[i]} (seed {seeds[i]})" for i in grid_columns],
        photos=[Image.open(p).convert("RGB") for p in instance_images[: len(grid_columns)]],
    ).save(staging / "grid.png")
    settings = {
        **params.model_dump(mode="json"),
        "resolution": resolution,
        "base_model": base_identity,
        "instance_images": len(instance_images),
        "generated_prompts": prompts,
        "base_images_reused": base_reused,
    }
    result = EvalResult(
        metrics=metrics,
        base=scores["base"],
        adapter=scores["adapter"],
        settings=settings,
        clip_model=scorer.identity(),
        formulas=FORMULAS,
        adapter_sha256=sha256_file(adapter_dir / ADAPTER_FILE),
        samples=per_pair,
    )
    result.write(staging / "metrics.json")
    (staging / "report.md").write_text(render_report(result, concept), encoding="utf-8")
    samples = list(zip(prompts, seeds, sample_files["base"], sample_files["adapter"], strict=True))
    html = render_html_report(result, concept, staging / "grid.png", samples)
    (staging / "report.html").write_text(html, encoding="utf-8")
    publish(staging, out_dir)
    return result


def _base_images(pipe, base_identity, prompts, seeds, params, resolution, root) -> tuple[list[Image.Image], bool]:
    """The base model's images at the pairs, read back from ``root`` where drawn before; and whether they were."""
    if root is None:
        return generate(pipe, prompts, seeds, params, resolution), False
    device = f"{pipe.device.type} {pipe.dtype}"
    inputs = base_samples_inputs(base_identity, prompts, seeds, params, resolution, device)
    images = read_base_samples(root, inputs)
    if images is not None:
        return images, True
    images = generate(pipe, prompts, seeds, params, resolution)
    store_base_samples(root, inputs, images)
    return images, False


def sample_scores(prompts, seeds, n, texts, real, embeddings) -> list[SampleScores]:
    """Per (prompt, seed): the terms whose means are clip_i, clip_t (adapter and base) and prior_drift."""
    base, adapter = embeddings["base"], embeddings["adapter"]
    per_image = {
        "clip_i": (adapter[:n] @ real.T).mean(-1),
        "clip_t": (texts * adapter[:n]).sum(-1),
        "base_clip_i": (base[:n] @ real.T).mean(-1),
        "base_clip_t": (texts * base[:n]).sum(-1),
    }
    drift = 1 - (base[n:] * adapter[n:]).sum(-1)
    return [
        SampleScores(
            kind="concept" if i < n else "class",
            prompt=prompts[i],
            seed=int(seeds[i]),
            scores={k: float(v[i]) for k, v in per_image.items()} if i < n else {"prior_drift": float(drift[i - n])},
        )
        for i in range(len(prompts))
    ]


def make_grid(
    base: list[Image.Image],
    adapter: list[Image.Image],
    labels: list[str],
    photos: list[Image.Image] = (),
    cell: int = 96,
) -> Image.Image:
    """Rows: the real photos (if given), then base and adapter, one column per (prompt, seed), each
    prompt written above its column; pixels scaled up without smoothing, so small images stay sharp."""
    import textwrap

    line, margin = 11, 60
    wrapped = [textwrap.wrap(label, width=cell // 6) for label in labels]
    header = line * max((len(w) for w in wrapped), default=1) + 4
    rows = [("photos", list(photos))] if photos else []
    rows += [("base", base), ("adapter", adapter)]
    grid = Image.new("RGB", (margin + cell * max(len(base), len(photos)), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (name, images) in enumerate(rows):
        draw.text((6, header + r * cell + cell // 2 - 6), name, fill="black")
        for col, img in enumerate(images):
            grid.paste(img.resize((cell, cell), Image.Resampling.NEAREST), (margin + col * cell, header + r * cell))
    for col, lines in enumerate(wrapped):
        for i, text in enumerate(lines):
            draw.text((margin + col * cell + 2, 2 + i * line), text, fill="black")
    return grid


def render_report(result: EvalResult, concept: Concept) -> str:
    rows = "\n".join(
        f"| {name} | {result.base[name]:.4f} | {result.adapter[name]:.4f} | {result.adapter[name] - result.base[name]:+.4f} |"
        for name in PAIRED
    )
    s = result.settings
    return (
        f"""# Evaluation: {concept.name} ({concept.instance_phrase})

Base model `{s["base_model"]["name"]}` (sha256 {s["base_model"]["sha256"][:12]}), CLIP model
`{result.clip_model["name"]}` (sha256 {result.clip_model["sha256"][:12]}). Same prompts and seeds
for both rows: {len(s["prompts"])} concept prompts and {len(s["class_prompts"])} class prompts x seeds
{s["seeds"]}, {s["scheduler"]} sampler, {s["steps"]} steps, guidance {s["guidance_scale"]}, {s["resolution"]} px.

| metric | base | adapter | change |
|---|---|---|---|
{rows}

Prior drift (class-only prompts, base vs adapter at the same seeds): **{result.metrics["prior_drift"]:.4f}**.
Real instance images among themselves: CLIP-I {result.metrics["real_images_clip_i"]:.4f}.

![photos, base and adapter](grid.png)

Grid: the concept's photos on top, then the base model and the adapter; each column is one prompt
and seed, identical for both rows, so any difference between them is the adapter's doing.

Formulas: raw cosines of `{result.clip_model["name"]}` embeddings.
"""
        + "\n".join(f"- {k}: {v}" for k, v in result.formulas.items())
        + "\n"
    )
