"""The evaluation report as one self-contained HTML file (report.html, next to report.md).

Rendered from the same EvalResult as report.md, with the grid and every sample inline as base64
data URIs, so the one file opens anywhere (MLflow's artifact view, a mail attachment, a browser).
Each number carries its exact value in ``data-value`` (what metrics.json holds) and shows 4 decimals.
No timestamps or absolute paths: the same inputs give the same bytes (DVC and the tests compare them).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import Environment, StrictUndefined

if TYPE_CHECKING:
    from components.config import Concept
    from components.evaluate import EvalResult

PAIRED = ("clip_i", "clip_t", "diversity", "class_clip_i", "class_diversity")

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Evaluation: {{ concept.name }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { image-rendering: pixelated; }
.samples img { width: 128px; height: 128px; }
.grid { max-width: 100%; }
code { background: #f3f3f3; padding: 0 0.2rem; }
</style>
</head>
<body>
<h1>Evaluation: {{ concept.name }} (<code>{{ concept.instance_phrase }}</code>)</h1>
<p>Base model <code>{{ s.base_model.name }}</code> (sha256 {{ s.base_model.sha256[:12] }}), CLIP model
<code>{{ clip.name }}</code> (sha256 {{ clip.sha256[:12] }}). Same prompts and seeds for both rows:
{{ s.prompts | length }} concept prompts and {{ s.class_prompts | length }} class prompts x seeds {{ s.seeds }},
{{ s.scheduler }} sampler, {{ s.steps }} steps, guidance {{ s.guidance_scale }}, {{ s.resolution }} px;
{{ s.instance_images }} accepted photos.</p>

<h2>Base model vs adapter</h2>
<table id="paired">
<tr><th>metric</th><th>base</th><th>adapter</th><th>change</th></tr>
{% for row in paired %}<tr><td>{{ row.name }}</td>
<td data-base="{{ row.name }}" data-value="{{ row.base | exact }}">{{ "%.4f" | format(row.base) }}</td>
<td data-adapter="{{ row.name }}" data-value="{{ row.adapter | exact }}">{{ "%.4f" | format(row.adapter) }}</td>
<td>{{ "%+.4f" | format(row.adapter - row.base) }}</td></tr>
{% endfor %}</table>
<p>Prior drift (class-only prompts, base vs adapter at the same seeds):
<strong>{{ "%.4f" | format(metrics.prior_drift) }}</strong>.
Real instance images among themselves: CLIP-I {{ "%.4f" | format(metrics.real_images_clip_i) }}.</p>

<h2>Metrics (metrics.json)</h2>
<table id="metrics">
<tr><th>metric</th><th>value</th></tr>
{% for name, value in metrics.items() %}<tr><td>{{ name }}</td>
<td data-metric="{{ name }}" data-value="{{ value | exact }}">{{ "%.4f" | format(value) }}</td></tr>
{% endfor %}</table>

<h2>Grid</h2>
<img class="grid" id="grid" alt="photos, base and adapter" src="{{ grid }}">
<p>The concept's photos on top, then the base model and the adapter; each column is one prompt and seed,
identical for both rows, so any difference between them is the adapter's doing.</p>

<h2>Every sample</h2>
<table class="samples">
<tr><th>prompt</th><th>seed</th><th>base</th><th>adapter</th></tr>
{% for row in samples %}<tr><td>{{ row.prompt }}</td><td>{{ row.seed }}</td>
<td><img alt="base, seed {{ row.seed }}" src="{{ row.base }}"></td>
<td><img alt="adapter, seed {{ row.seed }}" src="{{ row.adapter }}"></td></tr>
{% endfor %}</table>

<h2>Formulas</h2>
<p>Raw cosines of <code>{{ clip.name }}</code> embeddings.</p>
<ul>
{% for name, text in formulas.items() %}<li><code>{{ name }}</code>: {{ text }}</li>
{% endfor %}</ul>
<p>Adapter sha256 <code>{{ adapter_sha256 }}</code>.</p>
</body>
</html>
"""


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def render_html_report(
    result: EvalResult,
    concept: Concept,
    grid: Path,
    samples: list[tuple[str, int, Path, Path]],
) -> str:
    """``samples``: (prompt, seed, base PNG, adapter PNG) per generated pair, in generation order."""
    env = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["exact"] = repr  # the shortest text that reads back as the same float
    return env.from_string(TEMPLATE).render(
        concept=concept,
        s=result.settings,
        clip=result.clip_model,
        metrics=result.metrics,
        paired=[{"name": n, "base": result.base[n], "adapter": result.adapter[n]} for n in PAIRED],
        grid=data_uri(grid),
        samples=[{"prompt": p, "seed": seed, "base": data_uri(b), "adapter": data_uri(a)} for p, seed, b, a in samples],
        formulas=result.formulas,
        adapter_sha256=result.adapter_sha256,
    )
