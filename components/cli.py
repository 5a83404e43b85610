"""`conceptlab` command line: one subcommand per stage, `run` for the whole chain, `demo`, `models`.

Each command is a thin shell over components.pipeline; errors that a person can fix (bad config,
too few photos, missing model, diverged training) are printed as one clear message, exit code 2.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from components import pipeline
from components.base_model import models_dir
from components.config import ConfigError, ResolvedConfig, load_config, load_params
from components.environment import apply_embedded_defaults
from components.errors import (
    CheckpointMismatch,
    ModelNotAvailable,
    NotEnoughImages,
    TrainingDiverged,
    UnsupportedModel,
)
from components.io import ADAPTER_FILE
from components.layout import ConceptLayout

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def _defaults() -> None:
    """Embedded/offline defaults for Prefect and MLflow (components.environment); and quiet libraries:
    their chatter (MLflow INFO lines, load reports) hides the stage summaries a person reads."""
    apply_embedded_defaults()
    _record_timing()
    for var in ("MLFLOW_LOGGING_LEVEL", "TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(var, "WARNING" if var.startswith("MLFLOW") else "error")


def _record_timing() -> None:
    """With $CONCEPTLAB_TIMINGS set (benchmarks/orchestration.py), the command appends its process's
    start-up (interpreter and this module's imports) and its own run time to that file at exit."""
    path = os.environ.get("CONCEPTLAB_TIMINGS")
    if not path:
        return
    import atexit
    import json
    import sys

    import psutil  # the process's real start: interpreter start-up included

    ready = time.time()
    started = psutil.Process().create_time()

    def write() -> None:
        line = {"part": f"cli.{sys.argv[1] if len(sys.argv) > 1 else ''}", "startup": round(ready - started, 3)}
        line |= {"seconds": round(time.time() - ready, 3), "pid": os.getpid()}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    atexit.register(write)


models_app = typer.Typer(help="Build and list the embedded tiny models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
flow_app = typer.Typer(
    help="Run the Prefect flows (DVC repro + MLflow registry) in a repository.", no_args_is_help=True
)
app.add_typer(flow_app, name="flow")
toyworld_app = typer.Typer(help="The toy world: its pretrained base model, domain CLIP and concept tasks.")
app.add_typer(toyworld_app, name="toyworld")
RepoOpt = Annotated[Path, typer.Option(help="the conceptlab git + DVC repository")]
console = Console(stderr=True, soft_wrap=True)

USER_ERRORS = (
    ConfigError,
    NotEnoughImages,
    ModelNotAvailable,
    UnsupportedModel,
    CheckpointMismatch,
    TrainingDiverged,
    FileNotFoundError,
)

ConceptArg = Annotated[Path, typer.Argument(help="the concept's YAML file", exists=False)]
ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="stage defaults (params.yaml)")]
WorkOpt = Annotated[Path, typer.Option("--work-dir", "-w", help="where stage outputs go")]


def _setup(concept: Path, params: Path, work_dir: Path) -> tuple[ResolvedConfig, ConceptLayout]:
    cfg = load_config(concept, params)
    return cfg, ConceptLayout(work_dir, cfg.concept.name)


def _guard(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except USER_ERRORS as exc:
        console.print("[bold red]error:[/]", escape(str(exc)), soft_wrap=True)
        raise typer.Exit(2) from exc


@app.command()
def curate(concept: ConceptArg, params: ParamsOpt = Path("params.yaml"), work_dir: WorkOpt = Path("work")):
    """Photos -> normalised images + manifest.json (every input listed, rejections with reasons)."""
    cfg, layout = _guard(_setup, concept, params, work_dir)
    result = _guard(pipeline.run_curate, cfg, layout)
    console.print(f"curate: {result.accepted} accepted, {result.rejected} rejected -> {layout.curated}")
    for e in result.entries:
        if e.status == "rejected":
            console.print("  [yellow]rejected[/]", escape(f"{e.source}: {e.reason}"), soft_wrap=True)


@app.command()
def caption(concept: ConceptArg, params: ParamsOpt = Path("params.yaml"), work_dir: WorkOpt = Path("work")):
    """One editable sidecar caption per image; captions a person edited are kept."""
    cfg, layout = _guard(_setup, concept, params, work_dir)
    result = _guard(pipeline.run_caption, cfg, layout)
    edited = sum(e.edited_by_person for e in result.entries)
    console.print(f"caption: {len(result.entries)} captions ({edited} edited by a person) -> {layout.captions}")


@app.command()
def prior(concept: ConceptArg, params: ParamsOpt = Path("params.yaml"), work_dir: WorkOpt = Path("work")):
    """Class-prior images in a folder keyed by the hash of every input (shared across concepts)."""
    cfg, layout = _guard(_setup, concept, params, work_dir)
    result = _guard(pipeline.run_prior, cfg, layout)
    verb = "reused" if result.reused else "generated"
    console.print(f"prior: {verb} {len(result.images)} class images in {layout.priors_root / result.folder}")


@app.command()
def train(
    concept: ConceptArg,
    params: ParamsOpt = Path("params.yaml"),
    work_dir: WorkOpt = Path("work"),
    resume: Annotated[bool, typer.Option(help="continue from the latest checkpoint (error if it is stale)")] = False,
    auto_resume: Annotated[
        bool, typer.Option(help="continue from the latest checkpoint if it matches these inputs, else start over")
    ] = False,
):
    """DreamBooth + LoRA training; checkpoints every N steps, --resume continues exactly.
    With train.num_processes > 1 it launches that many processes (data parallel)."""
    mode = "yes" if resume else ("auto" if auto_resume else "no")
    cfg, layout = _guard(_setup, concept, params, work_dir)
    if _launches(cfg):
        _launch_train(cfg, layout, mode, params)  # its main process prints the summary
        return
    result = _guard(pipeline.run_train, cfg, layout, resume=mode)
    if os.environ.get("RANK", "0") == "0":
        console.print(
            f"train: {result.steps} steps, final loss {result.final_loss:.4f}, adapter {result.adapter_bytes} bytes "
            f"-> {layout.adapter / result.adapter_file}"
        )


def _train_here_or_launched(cfg: ResolvedConfig, layout: ConceptLayout, mode: str, params: Path):
    if _launches(cfg):
        return _launch_train(cfg, layout, mode, params)
    return pipeline.run_train(cfg, layout, resume=mode)


def _launches(cfg: ResolvedConfig) -> bool:
    """Whether this command launches train.num_processes processes rather than training itself."""
    from components.train_launch import inside_launch

    return cfg.params.train.num_processes > 1 and not inside_launch()


def _launch_train(cfg: ResolvedConfig, layout: ConceptLayout, mode: str, params: Path):
    """Runs train.num_processes processes of `conceptlab train`; what their main process wrote."""
    from components.train import TrainResult
    from components.train_launch import launch

    n = cfg.params.train.num_processes
    args = ["train", str(cfg.concept_file), "--params", str(params), "--work-dir", str(layout.work_dir)]
    args += {"yes": ["--resume"], "auto": ["--auto-resume"], "no": []}[mode]
    code = _guard(launch, n, args)
    if code != 0:
        console.print(
            f"[bold red]error:[/] training in {n} processes failed (launcher exit code {code}): a process "
            f"raised or was stopped, see its error above; the others were stopped. No adapter was written "
            f"to {escape(str(layout.adapter))}; checkpoints so far are in {escape(str(layout.checkpoints))} "
            "(run again with --resume to continue from the latest).",
            soft_wrap=True,
        )
        raise typer.Exit(code)
    return TrainResult.read(layout.adapter / "train.json")


@app.command()
def evaluate(concept: ConceptArg, params: ParamsOpt = Path("params.yaml"), work_dir: WorkOpt = Path("work")):
    """CLIP-T / CLIP-I / prior drift of adapter vs base on the same prompts and seeds."""
    cfg, layout = _guard(_setup, concept, params, work_dir)
    result = _guard(pipeline.run_evaluate, cfg, layout)
    _metrics_table(result.base, result.adapter, result.metrics)
    console.print(f"report: {layout.evaluation / 'report.md'} and {layout.evaluation / 'report.html'} (images inline)")


@app.command()
def register(concept: ConceptArg, params: ParamsOpt = Path("params.yaml"), work_dir: WorkOpt = Path("work")):
    """Log to MLflow and register the adapter as a model version with alias `challenger`."""
    cfg, layout = _guard(_setup, concept, params, work_dir)
    result = _guard(pipeline.run_register, cfg, layout)
    verb = "registered" if result.created else "already registered as"
    console.print(f"register: {verb} {result.model_name} v{result.version} @{result.alias} (run {result.run_id})")


@app.command()
def run(
    concept: ConceptArg,
    params: ParamsOpt = Path("params.yaml"),
    work_dir: WorkOpt = Path("work"),
    resume: Annotated[bool, typer.Option(help="resume training from the latest checkpoint")] = False,
):
    """Every stage in order: curate, caption, prior, train, evaluate, register."""
    _run_chain(concept, params, work_dir, resume)


def _run_chain(concept: Path, params: Path, work_dir: Path, resume: bool) -> None:
    cfg, layout = _guard(_setup, concept, params, work_dir)
    steps = [
        ("curate", lambda: pipeline.run_curate(cfg, layout)),
        ("caption", lambda: pipeline.run_caption(cfg, layout)),
        ("prior", lambda: pipeline.run_prior(cfg, layout) if cfg.params.train.with_prior_preservation else None),
        ("train", lambda: _train_here_or_launched(cfg, layout, "yes" if resume else "no", params)),
        ("evaluate", lambda: pipeline.run_evaluate(cfg, layout)),
        ("register", lambda: pipeline.run_register(cfg, layout)),
    ]
    timings, results = [], {}
    for name, step in steps:
        started = time.time()
        with console.status(f"{name}..."):
            results[name] = _guard(step)
        timings.append((name, time.time() - started))
        console.print(f"[green]done[/] {name} in {timings[-1][1]:.1f} s")
    ev, reg = results["evaluate"], results["register"]
    _metrics_table(ev.base, ev.adapter, ev.metrics)
    console.print(f"adapter:  {layout.adapter / ADAPTER_FILE}")
    console.print(
        f"report:   {layout.evaluation / 'report.html'} (also report.md; grid: {layout.evaluation / 'grid.png'})"
    )
    console.print(f"registry: {reg.model_uri} = {reg.model_name} v{reg.version}, run {reg.run_id}")
    console.print(f"MLflow UI: mlflow ui --backend-store-uri {reg.tracking_uri}")
    console.print(f"total {sum(t for _, t in timings):.1f} s")


@app.command()
def demo(
    concept: Annotated[
        str | None, typer.Option(help="concept folder under concepts/ (default: the first in params.yaml)")
    ] = None,
    repo: Annotated[Path, typer.Option(help="the conceptlab git + DVC repository")] = Path("."),
):
    """A sample concept through the Prefect flows train-concept and promote (DVC + MLflow)."""
    from flows.demo import run_demo
    from flows.dvc_repo import DvcError

    listed = load_params(repo / "params.yaml").concepts
    concept = concept or (listed[0] if listed else "toy-purple-triangle")
    if not (repo / "concepts" / concept / "concept.yaml").exists():
        console.print(
            f"[bold red]error:[/] {repo / 'concepts' / concept / 'concept.yaml'} not found; "
            "name a folder under concepts/ with --concept"
        )
        raise typer.Exit(2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never downloads anything
    try:
        result = _guard(run_demo, repo.resolve(), concept, log=console.print)
    except DvcError as exc:
        console.print("[bold red]error:[/]", escape(str(exc)), soft_wrap=True)
        raise typer.Exit(2) from exc
    trained, verdict = result["trained"], result["verdict"]
    reg = trained["registration"]
    console.print(
        f"DVC ran: {', '.join(trained['ran']) or 'nothing'}; skipped: {', '.join(trained['skipped']) or 'nothing'}"
    )
    console.print(f"DVC remote: {result['remote']} ({'pushed' if result['pushed'] else 'up to date'})")
    console.print(f"registry: {reg['model_name']} v{reg['version']} @challenger, run {reg['run_id']}")
    outcome = (
        "promoted to @champion" if verdict["promoted"] else ("already @champion" if verdict["passed"] else "refused")
    )
    console.print(f"gate vs {verdict['reference']}: {outcome}")
    for check in verdict["checks"]:
        console.print(f"  {'pass' if check['passed'] else 'FAIL'} {check['detail']}")
    layout = ConceptLayout(repo / "work", concept)
    console.print(f"adapter:  {layout.adapter / ADAPTER_FILE}")
    console.print(
        f"report:   {layout.evaluation / 'report.html'} (also report.md; grid: {layout.evaluation / 'grid.png'})"
    )
    console.print(f"MLflow UI:  uv run mlflow ui --backend-store-uri {reg['tracking_uri']}")
    console.print("Prefect UI: uv run prefect server start   (then open http://127.0.0.1:4200)")
    console.print(f"flows took {result['seconds']:.1f} s")


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0 to share it on the network)")] = "127.0.0.1",
    port: int = 8765,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, else params.yaml)")
    ] = None,
    repo: RepoOpt = Path("."),
    allow_promotion: Annotated[
        bool, typer.Option(help="allow moving `champion` by hand (recorded with the user's name and time)")
    ] = False,
    promoter: Annotated[
        list[str] | None,
        typer.Option(
            "--promoter",
            help="repeatable: with --allow-promotion, only these users (named by the authenticating proxy's "
            "X-Forwarded-User header) may move champion",
        ),
    ] = None,
):
    """A web app for the team: concepts, versions, gate verdicts, and a playground."""
    import uvicorn

    from components.register import resolve_tracking_uri
    from components.ui.app import Settings, create_app

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    uri = uri or resolve_tracking_uri(_guard(load_params, repo / "params.yaml").registry.tracking_uri, repo)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():  # MLflow would create it
        console.print(
            f"[bold red]error:[/] no MLflow store at {uri}: run `uv run conceptlab demo` first, or name your "
            "registry with --tracking-uri / MLFLOW_TRACKING_URI"
        )
        raise typer.Exit(2)
    app_ = create_app(
        Settings(
            tracking_uri=uri, allow_promotion=allow_promotion, repo=repo.resolve(), promoters=tuple(promoter or ())
        )
    )
    mode = "promotion by hand ON" if allow_promotion else "read-only"
    console.print(f"conceptlab ui on http://{host}:{port}  (registry {uri}; {mode})")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command("generate")
def generate_cmd(
    prompt: Annotated[list[str] | None, typer.Option("--prompt", help="repeatable; each prompt at each seed")] = None,
    concept: Annotated[
        list[str] | None,
        typer.Option(
            "--concept",
            help="repeatable: NAME (its champion), NAME@alias, NAME/VERSION or an adapter folder, "
            "optionally :WEIGHT (a:0.8); none: the base model alone",
        ),
    ] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="repeatable (default 0)")] = None,
    steps: Annotated[int | None, typer.Option(help="default: the version's evaluation steps, else 25")] = None,
    guidance: Annotated[float | None, typer.Option(help="default: the version's evaluation guidance, else 7.5")] = None,
    width: Annotated[int | None, typer.Option(help="default: the base model's native size")] = None,
    height: Annotated[int | None, typer.Option(help="default: the base model's native size")] = None,
    sampler: Annotated[str | None, typer.Option(help="ddim, euler, dpmpp_2m, ... (the family's list)")] = None,
    negative_prompt: Annotated[str, typer.Option(help="what the picture should not show")] = "",
    fuse: Annotated[bool, typer.Option(help="merge the adapters into the base weights for this run (faster)")] = False,
    out: Annotated[Path | None, typer.Option(help="folder for the PNGs and settings.json")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow registry (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    ] = None,
    base_model: Annotated[str | None, typer.Option(help="where the base model is, if not where it was")] = None,
    settings: Annotated[
        Path | None, typer.Option(help="a settings.json written by generate: draw the same pictures again")
    ] = None,
):
    """Pictures of one or more registered concepts (weights combine them) with every setting saved."""
    from components.generate import GenerationError
    from components.generate_cli import run_generate

    try:
        run_generate(
            console,
            prompts=prompt or [],
            concepts=concept or [],
            seeds=seed or [0],
            steps=steps,
            guidance=guidance,
            width=width,
            height=height,
            sampler=sampler,
            negative_prompt=negative_prompt,
            fuse=fuse,
            out=out,
            tracking_uri=tracking_uri,
            base_model=base_model,
            settings_file=settings,
        )
    except (GenerationError, *USER_ERRORS) as exc:
        console.print("[bold red]error:[/]", escape(str(exc)), soft_wrap=True)
        raise typer.Exit(2) from exc


@app.command("plan")
def plan_cmd(
    concept: Annotated[Path | None, typer.Option(help="a concept folder or YAML: its base model and params")] = None,
    shape: Annotated[str | None, typer.Option(help="a named model shape: flux.1-dev, sdxl, sd15, sd3")] = None,
    params: ParamsOpt = Path("params.yaml"),
    resolution: Annotated[int | None, typer.Option(help="default: the concept's, or the shape's native size")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default: the concept's train.rank, else 16)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="default: the concept's train.batch_size, else 1")] = None,
    prior: Annotated[bool, typer.Option(help="--shape: with prior preservation (twice the rows)")] = False,
    gpu: Annotated[str, typer.Option(help="GPU kind for s/step: h100, h200, a100, l40s, rtx4090, rtx3090")] = "h100",
    gpu_memory: Annotated[float | None, typer.Option(help="GiB on the GPU: mark what fits")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the estimates here")] = None,
):
    """Estimated peak GPU memory and s/step of every memory option (nothing is loaded: a meta-device trace)."""
    from components.plan_cli import concept_report, report_table, shape_report, write_report

    if (concept is None) == (shape is None):
        console.print("[bold red]error:[/] give one of --concept or --shape")
        raise typer.Exit(2)
    if concept is not None:
        report = _guard(
            concept_report, concept, params, gpu, gpu_memory, resolution=resolution, rank=rank, batch_size=batch_size
        )
    else:
        report = _guard(shape_report, shape, resolution, rank, batch_size, prior, gpu, gpu_memory)
    Console(soft_wrap=False, width=200).print(report_table(report))
    if json_path is not None:
        write_report(report, json_path)
        console.print(f"wrote {json_path}")


@flow_app.command("train-concept")
def flow_train_concept(concept: str, repo: RepoOpt = Path("."), push: bool = True, commit: bool = True):
    """dvc repro the concept, push to the DVC remote, commit dvc.lock, register as challenger."""
    from flows.train_concept import train_concept

    if concept not in _guard(load_params, repo / "params.yaml").concepts:
        # The flow commits dvc.lock: a concept it runs must be in the committed params.yaml too.
        console.print(
            f"[bold red]error:[/] {concept} is not listed in {repo / 'params.yaml'} `concepts` (dvc.yaml runs "
            "each stage for the listed concepts): add it there and commit params.yaml, "
            f"or try it first with `conceptlab demo --concept {concept}`, which adds it"
        )
        raise typer.Exit(2)

    result = train_concept(concept, repo=str(repo), push_outputs=push, commit_lock=commit)
    console.print(f"ran: {result['ran'] or 'nothing'}; registered v{result['registration']['version']}")


@flow_app.command("promote")
def flow_promote(concept: str, repo: RepoOpt = Path(".")):
    """The promotion gate: challenger vs champion (or base); moves `champion` only if it passes."""
    from flows.promote import promote

    verdict = promote(concept, repo=str(repo))
    console.print(
        f"v{verdict['challenger_version']} vs {verdict['reference']}: "
        f"{'promoted' if verdict['promoted'] else 'passed' if verdict['passed'] else 'refused'}"
    )


@flow_app.command("retrain")
def flow_retrain(repo: RepoOpt = Path(".")):
    """Retrain and gate every listed concept whose data or params changed (or has no champion), one
    after another in this checkout (the deployed nightly retrain fans out one run per concept)."""
    from flows.retrain import retrain

    state = retrain(repo=str(repo), return_state=True)
    results = state.result(raise_on_failure=False)  # the outcomes, or the exception that stopped retrain
    for concept, result in (results if isinstance(results, dict) else {}).items():
        console.print(f"{concept}: {result['outcome']} ({result['why']})")
    if not state.is_completed():
        console.print(f"[bold red]error:[/] {state.message}")
        raise typer.Exit(1)


@models_app.command("build")
def models_build(names: Annotated[list[str] | None, typer.Argument(help="default: all")] = None):
    """Build the tiny models (fixed seeds) into $CONCEPTLAB_MODELS_DIR (~/.cache/conceptlab/models)."""
    from components.tiny_models import TINY_MODEL_NAMES, ensure_tiny_model

    for name in names or TINY_MODEL_NAMES:
        console.print(f"{name}: {ensure_tiny_model(name, models_dir())}")


@toyworld_app.command("build")
def toyworld_build(
    out: Annotated[Path, typer.Option(help="where toyworld-sd/ and toyworld-clip/ are written")] = Path("models"),
    seed: int = 0,
    preset: Annotated[str, typer.Option(help="full (about an hour on 2 cores) or smoke (seconds)")] = "full",
    base: Annotated[
        str,
        typer.Option(
            help="sd: VAE, CLIP and toyworld-sd; flux: toyworld-flux, taiyi: toyworld-taiyi and toyworld-clip-zh "
            "(both on the VAE and CLIP already in --out)"
        ),
    ] = "sd",
):
    """Train the toy world's VAE, domain CLIP and Stable Diffusion from a seed (or, with --base flux or
    taiyi, its Flux or Chinese Taiyi-layout model on the same VAE); measure them."""
    from components.toyworld.build import PRESETS, build_world
    from components.toyworld.build_flux import FLUX_PRESETS, build_flux_world
    from components.toyworld.build_taiyi import TAIYI_PRESETS, build_taiyi_world

    builders = {
        "sd": (PRESETS, build_world),
        "flux": (FLUX_PRESETS, build_flux_world),
        "taiyi": (TAIYI_PRESETS, build_taiyi_world),
    }
    if base not in builders:
        raise typer.BadParameter(f"--base {base!r}: choose one of {', '.join(builders)}")
    presets, build = builders[base]
    if preset not in presets:
        raise typer.BadParameter(f"--preset {preset!r}: choose one of {', '.join(presets)}")
    report = build(out, presets[preset].model_copy(update={"seed": seed}), log=console.print)
    console.print_json(data={k: report[k] for k in ("seconds", "weights_bytes", "metrics")})


@toyworld_app.command("photos")
def toyworld_photos(concepts_dir: Path = Path("concepts"), count: int = 6, seed: int = 0):
    """Render each concept task's instance photos into concepts/<task>/photos/."""
    from components.toyworld.tasks import CONCEPT_TASKS, write_photos

    for task in CONCEPT_TASKS:
        paths = write_photos(task, concepts_dir / task.name / "photos", count, seed)
        console.print(f"{task.name}: {len(paths)} photos of the {' '.join(task.combo)}")


def _metrics_table(base: dict, adapter: dict, metrics: dict) -> None:
    table = Table(title="evaluation (same prompts and seeds)")
    for col in ("metric", "base", "adapter"):
        table.add_column(col)
    for key in ("clip_i", "clip_t", "diversity"):
        table.add_row(key, f"{base[key]:.4f}", f"{adapter[key]:.4f}")
    table.add_row("prior_drift", "", f"{metrics['prior_drift']:.4f}")
    console.print(table)


if __name__ == "__main__":
    app()
