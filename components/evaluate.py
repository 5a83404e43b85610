"""evaluate: the adapter against its base model on identical (prompt, seed) pairs.

Concept prompts ("{instance} in the jungle") measure CLIP-T and CLIP-I; class-only prompts measure
prior drift (how far the adapter moved generic members of the class away from the base model).
Outputs: metrics.json (numbers + every setting used), samples, grid.png (base row vs adapter row)
and report.md.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from components.base_model import load_pipeline, model_identity
from components.clip_scores import ClipScorer, clip_i, clip_t, diversity, paired_drift
from components.config import Concept, EvalParams
from components.generation import generate
from components.io import ADAPTER_FILE, StageResult, new_staging_dir, publish, sha256_file

FORMULAS = {
    "clip_t": "mean over generated images of cos(CLIP_text(prompt without the identifier), CLIP_image(image))",
    "clip_i": "mean over generated images and real instance images of cos(CLIP_image(gen), CLIP_image(real))",
    "diversity": "mean over prompts of mean pairwise (1 - cos) between CLIP image embeddings across seeds",
    "prior_drift": "mean over class-prompt (prompt, seed) pairs of 1 - cos(CLIP_image(base), CLIP_image(adapter))",
}


class EvalResult(StageResult):
    metrics: dict[str, float]
    base: dict[str, float]
    adapter: dict[str, float]
    settings: dict
    clip_model: dict[str, str]
    formulas: dict[str, str]
    adapter_sha256: str


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
) -> EvalResult:
    concept_prompts = [
        p.format(instance=concept.instance_phrase, class_noun=concept.class_noun) for p in params.prompts
    ]
    # CLIP does not know the identifier: score against the prompt with the class noun alone.
    scored_texts = [p.format(instance=concept.class_noun, class_noun=concept.class_noun) for p in params.prompts]
    class_prompts = [p.format(class_noun=concept.class_noun) for p in params.class_prompts]
    c_prompts, c_seeds, c_groups = _pairs(concept_prompts, params.seeds)
    k_prompts, k_seeds, _ = _pairs(class_prompts, params.seeds)
    prompts, seeds = c_prompts + k_prompts, c_seeds + k_seeds

    pipe = load_pipeline(base_model)
    base_images = generate(pipe, prompts, seeds, params, resolution)
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
        }
    drift = paired_drift(embeddings["base"][n:], embeddings["adapter"][n:])
    metrics = {
        "clip_i": scores["adapter"]["clip_i"],
        "clip_t": scores["adapter"]["clip_t"],
        "diversity": scores["adapter"]["diversity"],
        "clip_i_gain": scores["adapter"]["clip_i"] - scores["base"]["clip_i"],
        "clip_t_change": scores["adapter"]["clip_t"] - scores["base"]["clip_t"],
        "prior_drift": drift,
        "real_images_clip_i": clip_i(real, real),
    }
    staging = new_staging_dir(out_dir)
    (staging / "samples").mkdir()
    for label, images in (("base", base_images), ("adapter", adapter_images)):
        for i, (img, seed) in enumerate(zip(images, seeds, strict=True)):
            img.save(staging / "samples" / f"{label}-{i:03d}-seed{seed}.png")
    grid_columns = [g[0] for g in c_groups] + list(range(n, len(prompts), len(params.seeds)))
    make_grid(
        [base_images[i] for i in grid_columns],
        [adapter_images[i] for i in grid_columns],
        [prompts[i] for i in grid_columns],
    ).save(staging / "grid.png")
    settings = {
        **params.model_dump(mode="json"),
        "resolution": resolution,
        "base_model": model_identity(base_model),
        "instance_images": len(instance_images),
        "generated_prompts": prompts,
    }
    result = EvalResult(
        metrics=metrics,
        base=scores["base"],
        adapter=scores["adapter"],
        settings=settings,
        clip_model=scorer.identity(),
        formulas=FORMULAS,
        adapter_sha256=sha256_file(adapter_dir / ADAPTER_FILE),
    )
    result.write(staging / "metrics.json")
    (staging / "report.md").write_text(render_report(result, concept), encoding="utf-8")
    publish(staging, out_dir)
    return result


def make_grid(base: list[Image.Image], adapter: list[Image.Image], labels: list[str], cell: int = 128) -> Image.Image:
    """Two rows (base, adapter), one column per prompt, the prompt written above each column."""
    header, margin = 28, 70
    grid = Image.new("RGB", (margin + cell * len(base), header + 2 * cell), "white")
    draw = ImageDraw.Draw(grid)
    for row, (name, images) in enumerate((("base", base), ("adapter", adapter))):
        draw.text((6, header + row * cell + cell // 2 - 6), name, fill="black")
        for col, img in enumerate(images):
            grid.paste(img.resize((cell, cell), Image.Resampling.NEAREST), (margin + col * cell, header + row * cell))
    for col, label in enumerate(labels):
        draw.text((margin + col * cell + 2, 2), label[:22], fill="black")
        draw.text((margin + col * cell + 2, 14), label[22:44], fill="black")
    return grid


def render_report(result: EvalResult, concept: Concept) -> str:
    rows = "\n".join(
        f"| {name} | {result.base[name]:.4f} | {result.adapter[name]:.4f} | {result.adapter[name] - result.base[name]:+.4f} |"
        for name in ("clip_i", "clip_t", "diversity")
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

![base vs adapter](grid.png)

Formulas: raw cosines of `{result.clip_model["name"]}` embeddings.
"""
        + "\n".join(f"- {k}: {v}" for k, v in result.formulas.items())
        + "\n"
    )
