"""Finding a concept's adapter: by registry name, alias or version, or as a folder; cached by content.

A spec is ``NAME`` (alias champion), ``NAME@alias``, ``NAME/3`` (version 3) or an adapter folder. A
registry adapter is downloaded once through MLflow (so any tracking URI and artifact store, S3 included)
into ``<cache>/adapters/<sha256>/``; the sha256 the version's tags name is checked, and a cached copy is
used without asking the artifact store again. The base model comes from the version's (or the folder's
train_config.json) portable identity: its name is resolved locally and its content hash must match,
because an adapter on another base draws something else without any error.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from components.io import ADAPTER_FILE, read_json, sha256_file
from components.promote import CHAMPION as DEFAULT_ALIAS
from components.register import TAG

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))?$")


class GenerationError(ValueError):
    """Input a person can fix (an unknown concept, alias or version, a bad prompt or size): one message."""


class BaseModelRef(BaseModel):
    """A base model: its portable identity (name, content sha256, hub revision) and where it is here."""

    model_config = ConfigDict(frozen=True)
    name: str
    sha256: str
    revision: str = ""
    path: Path


class ResolvedAdapter(BaseModel):
    """One adapter, ready to load: a local folder holding ADAPTER_FILE whose content hash is ``sha256``."""

    model_config = ConfigDict(frozen=True)
    spec: str  # what was asked for
    name: str  # registered model name, or the folder's name
    version: str | None = None  # registry version (None for a folder)
    alias: str | None = None  # the alias it was found by, if any
    adapter_dir: Path
    sha256: str
    base_model: BaseModelRef
    source: str  # models:/NAME/VERSION or the folder's absolute path
    eval_settings: dict = {}  # the version's evaluation settings (steps, guidance, sampler), if recorded

    @property
    def pinned_spec(self) -> str:
        """A spec that always names this exact adapter (a version, not an alias that may move)."""
        return f"{self.name}/{self.version}" if self.version else self.source


def cache_root() -> Path:
    """$CONCEPTLAB_CACHE_DIR or ~/.cache/conceptlab; adapters are kept under its adapters/ folder."""
    return Path(os.environ.get("CONCEPTLAB_CACHE_DIR") or Path.home() / ".cache" / "conceptlab")


def default_tracking_uri() -> str:
    """The registry the flows write to: $MLFLOW_TRACKING_URI, else params.yaml's registry.tracking_uri
    here, else the embedded store the demo writes (sqlite:///mlflow.db here)."""
    from components.config import load_params
    from components.register import resolve_tracking_uri

    params = Path("params.yaml")
    configured = load_params(params).registry.tracking_uri if params.is_file() else "sqlite:///mlflow.db"
    return resolve_tracking_uri(configured, Path("."))


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``NAME`` / ``NAME@alias`` / ``NAME/3`` -> (name, alias, version); alias champion by default."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise GenerationError(
            f"concept {spec!r}: name it NAME (its champion), NAME@alias, NAME/VERSION or an adapter folder"
        )
    name, alias, version = m["name"], m["alias"], m["version"]
    return name, (alias or (None if version else DEFAULT_ALIAS)), version


def resolve_adapter(
    spec: str,
    tracking_uri: str | None = None,
    cache_dir: Path | None = None,
    base_model: str | None = None,
) -> ResolvedAdapter:
    """The adapter a spec names, in the local content-addressed cache. ``base_model`` (a built-in name,
    folder or hub id) overrides where the base is found; its content must still be the recorded one
    unless the adapter records none."""
    cache = Path(cache_dir) if cache_dir else cache_root() / "adapters"
    spec = spec.strip()
    if not spec:
        raise GenerationError("concept: empty; name it NAME, NAME@alias, NAME/VERSION or an adapter folder")
    folder = Path(spec).expanduser()
    if folder.exists():
        return _from_folder(spec, folder, cache, base_model)
    if "/" in spec and not re.fullmatch(r"[^/]+/\d+", spec):
        raise GenerationError(f"concept {spec!r}: no such adapter folder (and not NAME/VERSION)")
    return _from_registry(spec, tracking_uri or default_tracking_uri(), cache, base_model)


def _from_folder(spec: str, folder: Path, cache: Path, base_override: str | None) -> ResolvedAdapter:
    folder = folder.resolve()
    weights = folder / ADAPTER_FILE if folder.is_dir() else folder
    if not weights.is_file() or weights.suffix != ".safetensors":
        raise GenerationError(f"concept {spec!r}: {folder} holds no {ADAPTER_FILE}")
    sha = sha256_file(weights)
    config = weights.parent / "train_config.json"
    recorded = read_json(config).get("base_model", {}) if config.is_file() else {}
    if not recorded and not base_override:
        raise GenerationError(
            f"concept {spec!r}: {weights.parent} has no train_config.json naming its base model; "
            "pass the base model (--base-model NAME_OR_FOLDER)"
        )
    base = _base_model(recorded, base_override, None, f"adapter {weights.parent}")
    return ResolvedAdapter(
        spec=spec,
        name=weights.parent.name if weights.parent.name != "adapter" else weights.parent.parent.name,
        adapter_dir=_cache_file(weights, sha, cache).parent,
        sha256=sha,
        base_model=base,
        source=str(weights.parent),
    )


def _from_registry(spec: str, tracking_uri: str, cache: Path, base_override: str | None) -> ResolvedAdapter:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_spec(spec)
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).exists():
        raise GenerationError(
            f"concept {spec!r}: no MLflow store at {tracking_uri} (run ./scripts/demo.sh, or point "
            "--tracking-uri / MLFLOW_TRACKING_URI at your registry)"
        )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        known = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise GenerationError(
            f"concept {name!r} is not registered in {tracking_uri}; registered: {', '.join(known) or 'none'}"
        ) from exc
    aliases = dict(model.aliases or {})
    if alias:
        if alias not in aliases:
            have = ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
            hint = f" (no champion yet: name {name}@challenger or {name}/VERSION)" if alias == DEFAULT_ALIAS else ""
            raise GenerationError(f"concept {name!r} has no alias {alias!r}{hint}; its aliases: {have}")
        version = str(aliases[alias])
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        raise GenerationError(
            f"concept {name!r} has no version {version}; its versions: {', '.join(map(str, versions)) or 'none'}"
        ) from exc
    tags = mv.tags or {}
    sha = tags.get(f"{TAG}.adapter_sha256", "")
    cached = cache / sha / ADAPTER_FILE if sha else None
    if cached and cached.is_file() and sha256_file(cached) == sha:
        flavor_base = None
    else:
        cached, flavor_base = _download(client, name, version, sha, cache, tracking_uri)
        sha = sha or sha256_file(cached)
    recorded = {
        "name": tags.get(f"{TAG}.base_model", ""),
        "sha256": tags.get(f"{TAG}.base_model_sha256", ""),
        "revision": tags.get(f"{TAG}.base_model_revision", ""),
    }
    base = _base_model(recorded, base_override, flavor_base, f"{name} v{version}")
    return ResolvedAdapter(
        spec=spec,
        name=name,
        version=str(version),
        alias=alias,
        adapter_dir=cached.parent,
        sha256=sha,
        base_model=base,
        source=f"models:/{name}/{version}",
        eval_settings=_eval_settings(client, tags.get(f"{TAG}.eval_run_id") or mv.run_id),
    )


def _download(client, name: str, version: str, sha: str, cache: Path, tracking_uri: str) -> tuple[Path, str]:
    """The version's model artifacts through MLflow (any artifact store); returns the cached adapter
    file and the base model path the flavor recorded."""
    import mlflow.artifacts
    import yaml

    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                # The version's physical location (file, s3://, mlflow-artifacts:/...): MLflow 3.17 resolves
                # a models:/ URI through the process-wide registry URI, not the one passed here.
                artifact_uri=client.get_model_version_download_uri(name, version),
                dst_path=tmp,
                tracking_uri=tracking_uri,
            )
        )
        flavor = yaml.safe_load((local / "MLmodel").read_text()).get("flavors", {}).get("diffusers", {})
        weights = local / flavor.get("adapter_weights", "adapter_weights") / flavor.get("weight_name", ADAPTER_FILE)
        if not weights.is_file():
            raise GenerationError(f"{name} v{version}: its artifacts hold no diffusers LoRA adapter ({weights.name})")
        got = sha256_file(weights)
        if sha and got != sha:
            raise GenerationError(
                f"{name} v{version}: the downloaded adapter's sha256 {got[:12]} is not the registered {sha[:12]}"
            )
        return _cache_file(weights, got, cache), str(flavor.get("base_model", ""))


def _cache_file(weights: Path, sha: str, cache: Path) -> Path:
    """``<cache>/<sha256>/ADAPTER_FILE``, written once (temp name + rename, so readers never see half)."""
    final = cache / sha / ADAPTER_FILE
    if final.is_file() and final.stat().st_size == weights.stat().st_size:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{ADAPTER_FILE}.{os.getpid()}")
    shutil.copyfile(weights, tmp)
    os.replace(tmp, final)
    return final


def _base_model(recorded: dict, override: str | None, flavor_path: str | None, what: str) -> BaseModelRef:
    """The base model found here whose content hash is the recorded one (or the override, as is)."""
    from components.base_model import model_identity, resolve_model
    from components.errors import ModelNotAvailable

    candidates = [c for c in (override, recorded.get("name"), flavor_path) if c]
    problems = []
    for ref in candidates:
        try:
            identity = model_identity(ref)
        except ModelNotAvailable as exc:
            problems.append(str(exc))
            continue
        if recorded.get("sha256") and identity["sha256"] != recorded["sha256"] and ref != override:
            problems.append(f"{ref}: content sha256 {identity['sha256'][:12]}, not the recorded one")
            continue
        return BaseModelRef(
            name=recorded.get("name") or ref,
            sha256=identity["sha256"],
            revision=identity.get("revision", recorded.get("revision", "")),
            path=resolve_model(ref),
        )
    raise GenerationError(
        f"{what} was trained on base model {recorded.get('name') or '?'} "
        f"(sha256 {recorded.get('sha256', '?')[:12]}), which is not available here: "
        + "; ".join(problems or ["nothing recorded"])
        + ". Pass its location with --base-model."
    )


def _eval_settings(client, run_id: str | None) -> dict:
    """steps / guidance / sampler the version was evaluated with (generation defaults for it)."""
    if not run_id:
        return {}
    try:
        params = client.get_run(run_id).data.params
    except Exception:  # a deleted run: defaults then
        return {}
    out = {}
    for key, cast, name in (
        ("eval.steps", int, "steps"),
        ("eval.guidance_scale", float, "guidance"),
        ("eval.scheduler", str, "sampler"),
    ):
        if key in params:
            out[name] = cast(params[key])
    return out
