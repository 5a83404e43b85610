"""/playground: a prompt, a seed and a concept version (or two concepts with weights) -> the base
model's picture and the adapter's at the same seed, drawn by components.generate (the code behind
`conceptlab generate`): the same adapter cache, the same base loaded once per process, the same checks.

The form is a GET: a result page's address is the recipe for its pictures, to share or reload.
The app adds its own bounds on top of generate's (this runs on a shared server; one picture at a time).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shlex
from dataclasses import dataclass

from fastapi import FastAPI, Request

log = logging.getLogger("conceptlab.ui")

PLAYGROUND_LIMITS = {"steps": (1, 100), "side": (8, 1024), "seed": (0, 2**32 - 1), "prompt_chars": 500}


class PlaygroundError(ValueError):
    """Input the person can fix; shown on the page above the form."""


@dataclass
class Form:
    prompt: str = ""
    seed: str = "0"
    steps: str = ""
    guidance: str = ""
    size: str = ""
    concept: str = ""
    weight: str = "1.0"
    concept2: str = ""
    weight2: str = "1.0"


def _int(label: str, text: str, lo: int, hi: int, default: int | None = None) -> int | None:
    text = text.strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise PlaygroundError(f"{label} {text!r}: give a whole number from {lo} to {hi}") from None
    if not lo <= value <= hi:
        raise PlaygroundError(f"{label} {value}: choose {lo} to {hi}")
    return value


def _float(label: str, text: str, default: float | None = None) -> float | None:
    text = text.strip()
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise PlaygroundError(f"{label} {text!r}: give a number") from None


@dataclass
class Request_:
    prompt: str
    seed: int
    steps: int | None
    guidance: float | None
    size: int | None
    concepts: list[tuple[str, float]]


def parse(form: Form) -> Request_:
    """The form's text as typed values, with the app's bounds; generate.validate checks the rest."""
    prompt = form.prompt.strip()
    if not prompt:
        raise PlaygroundError("prompt: empty; write what the picture should show, e.g. 'a photo of a sks triangle'")
    if len(prompt) > PLAYGROUND_LIMITS["prompt_chars"]:
        raise PlaygroundError(f"prompt: {len(prompt)} characters; at most {PLAYGROUND_LIMITS['prompt_chars']} here")
    concepts = [(c.strip(), w) for c, w in ((form.concept, form.weight), (form.concept2, form.weight2)) if c.strip()]
    if not concepts:
        raise PlaygroundError("concept: choose one (NAME, NAME@challenger or NAME/VERSION)")
    return Request_(
        prompt=prompt,
        seed=_int("seed", form.seed, *PLAYGROUND_LIMITS["seed"], default=0),
        steps=_int("steps", form.steps, *PLAYGROUND_LIMITS["steps"]),
        guidance=_float("guidance", form.guidance),
        size=_int("size", form.size, *PLAYGROUND_LIMITS["side"]),
        concepts=[(c, _float(f"weight of {c}", w, 1.0)) for c, w in concepts],
    )


def data_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def cli_command(req: Request_, steps: int, guidance: float, size: int, tracking_uri: str) -> str:
    """The `conceptlab generate` line that draws the adapter picture again."""
    args = ["uv", "run", "conceptlab", "generate", "--prompt", req.prompt, "--seed", str(req.seed)]
    for spec, weight in req.concepts:
        args += ["--concept", spec if len(req.concepts) == 1 and weight == 1.0 else f"{spec}:{weight:g}"]
    args += ["--steps", str(steps), "--guidance", f"{guidance:g}", "--width", str(size), "--height", str(size)]
    args += ["--tracking-uri", tracking_uri]
    return shlex.join(args)


def run(req: Request_, tracking_uri: str) -> dict:
    """Resolves the concepts, loads their base once, and draws base and adapter(s) at the same seed."""
    from components import generate as gen

    adapters = [(gen.resolve_adapter(spec, tracking_uri), weight) for spec, weight in req.concepts]
    first = adapters[0][0]
    defaults = {**gen.DEFAULTS, **first.eval_settings}  # the version's evaluation settings, if recorded
    steps = req.steps or int(defaults["steps"])
    guidance = req.guidance if req.guidance is not None else float(defaults["guidance"])
    sampler = defaults.get("sampler", gen.DEFAULTS["sampler"])
    pipe = gen.load_base(first.base_model)
    common = dict(prompts=[req.prompt], seeds=[req.seed], steps=steps, guidance=guidance, sampler=sampler)
    if req.size:
        common.update(width=req.size, height=req.size)
    with_adapters = gen.generate(pipe, adapters, **common)  # validates everything before drawing
    base = gen.generate(pipe, [], **common)
    settings = with_adapters.settings
    return {
        "base": data_uri(base.images[0].image),
        "adapter": data_uri(with_adapters.images[0].image),
        "adapters": settings["adapters"],
        "settings": json.dumps(settings, indent=2),
        "seconds": base.seconds + with_adapters.seconds,
        "size": settings["width"],
        "steps": steps,
        "guidance": guidance,
        "command": cli_command(req, steps, guidance, settings["width"], tracking_uri),
    }


def add_playground(app: FastAPI, settings, page, client) -> None:
    from components.ui import registry

    @app.get("/playground")
    def playground(request: Request):
        q = request.query_params
        form = Form(**{k: q[k] for k in Form.__dataclass_fields__ if k in q})
        choices = _choices(client())
        if not q.get("concept") and choices:
            form.concept = choices[0][0]
        if not form.prompt and "go" not in q:  # a first visit: a prompt that names the concept
            form.prompt = _instance_prompt(client(), form.concept)
        result, error = None, None
        if "go" in q:
            from components.generate import GenerationError

            try:
                result = run(parse(form), settings.tracking_uri)
            except (PlaygroundError, GenerationError) as exc:
                error = str(exc)
            except Exception as exc:  # a broken store or model: say so on the page, keep serving
                log.exception("playground generation failed")
                error = f"generation failed ({type(exc).__name__}): {exc}"
        return page(
            request,
            "playground.html",
            status=400 if error else 200,
            form=form,
            choices=choices,
            result=result,
            error=error,
            limits=PLAYGROUND_LIMITS,
        )

    def _choices(c) -> list[tuple[str, str]]:
        """(spec, label) for every concept's aliases and versions, champion first."""
        out = []
        for concept in registry.concepts(c):
            for alias, number in (("champion", concept.champion), ("challenger", concept.challenger)):
                if number:
                    spec = concept.name if alias == "champion" else f"{concept.name}@{alias}"
                    out.append((spec, f"{concept.name} @{alias} (v{number})"))
            out += [(f"{concept.name}/{v.version}", f"{concept.name} v{v.version}") for v in reversed(concept.versions)]
        return out

    def _instance_prompt(c, spec: str) -> str:
        name = spec.split("@")[0].split("/")[0]
        try:
            return registry.instance_prompt(c, name)
        except Exception:  # an unknown name: the person writes the prompt
            return ""
