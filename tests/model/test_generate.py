"""generate: registry resolution (alias, version, folder) into the content-addressed cache, several
adapters on one loaded base, fused = unfused, settings.json draws the same bytes, clear errors; and the
registered model served over HTTP by `mlflow models serve` as a real process.

One real MLflow SQLite store per module, filled by the real stages: two concepts trained briefly on
tiny-sd (`toy-robot` twice, so it has versions 1 and 2, and `toy-robot-b`), and an SDXL-layout adapter.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from components.config import load_config
from components.layout import ConceptLayout
from components.pipeline import run_caption, run_curate, run_evaluate, run_register, run_train
from tests.conftest import FAST_PARAMS, _free_port

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a photo of sks robot"


def _train_and_register(root: Path, name: str, seed: int, base_model: str = "tiny-sd", register: bool = True):
    from components.samples import write_sample_concept

    folder = root / "concepts" / name
    write_sample_concept(folder)
    text = (folder / "concept.yaml").read_text().replace("name: toy-robot", f"name: {name}")
    (folder / "concept.yaml").write_text(text.replace("base_model: tiny-sd", f"base_model: {base_model}"))
    cfg = load_config(folder / "concept.yaml", root / "params.yaml")
    train = cfg.params.train.model_copy(update={"seed": seed, "with_prior_preservation": False, "learning_rate": 0.02})
    cfg = cfg.model_copy(update={"params": cfg.params.model_copy(update={"train": train})})
    layout = ConceptLayout(root / "work", name)
    for stage in (run_curate, run_caption, run_train):
        stage(cfg, layout)
    if register:
        run_evaluate(cfg, layout)
        return run_register(cfg, layout), layout
    return None, layout


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real registry: toy-robot v1 (@champion) and v2 (@challenger), toy-robot-b v1 (@champion)."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    (root / "params.yaml").write_text(FAST_PARAMS + f"registry: {{tracking_uri: '{uri}'}}\n")
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("conceptlab", artifact_location=str(root / "artifacts"))
    a1, layout_a = _train_and_register(root, "toy-robot", seed=0)
    b1, layout_b = _train_and_register(root, "toy-robot-b", seed=5)
    a2, _ = _train_and_register(root, "toy-robot", seed=2)
    client = MlflowClient(uri, uri)
    client.set_registered_model_alias("toy-robot", "champion", a1.version)
    client.set_registered_model_alias("toy-robot-b", "champion", b1.version)
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return {"uri": uri, "root": root, "a1": a1, "a2": a2, "b1": b1, "layout_a": layout_a, "layout_b": layout_b}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCEPTLAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "adapters"


def test_resolves_alias_version_and_folder_into_the_cache(registry, cache):
    from mlflow import MlflowClient

    from components.generate import resolve_adapter
    from components.io import ADAPTER_FILE, sha256_file

    uri = registry["uri"]
    client = MlflowClient(uri, uri)
    sha_v1 = client.get_model_version("toy-robot", "1").tags["conceptlab.adapter_sha256"]
    sha_v2 = client.get_model_version("toy-robot", "2").tags["conceptlab.adapter_sha256"]
    assert sha_v1 != sha_v2

    champion = resolve_adapter("toy-robot", uri)
    assert (champion.name, champion.version, champion.alias, champion.sha256) == ("toy-robot", "1", "champion", sha_v1)
    assert champion.adapter_dir == cache / sha_v1 and sha256_file(champion.adapter_dir / ADAPTER_FILE) == sha_v1
    assert champion.base_model.name == "tiny-sd" and champion.base_model.path.is_dir()
    assert champion.eval_settings == {"steps": 4, "guidance": 7.5, "sampler": "ddim"}, "the version's eval settings"
    challenger = resolve_adapter("toy-robot@challenger", uri)
    assert (challenger.version, challenger.sha256) == ("2", sha_v2)
    assert resolve_adapter("toy-robot/2", uri).sha256 == sha_v2
    folder = resolve_adapter(str(registry["layout_b"].adapter), uri)
    assert folder.sha256 == resolve_adapter("toy-robot-b", uri).sha256 and folder.version is None
    assert folder.base_model.sha256 == champion.base_model.sha256

    # A cached adapter is not downloaded again: with the artifact store gone, it still resolves.
    store = registry["root"] / "artifacts"
    shutil.move(store, store.with_name("artifacts-away"))
    try:
        assert resolve_adapter("toy-robot/2", uri).adapter_dir == cache / sha_v2
        shutil.rmtree(cache / sha_v2)
        with pytest.raises(Exception):  # noqa: B017 - MLflow's own error for a missing artifact
            resolve_adapter("toy-robot/2", uri)
    finally:
        shutil.move(store.with_name("artifacts-away"), store)


def test_unknown_names_and_bad_settings_are_clear_errors(registry, cache):
    from components.generate import GenerationError, generate, load_base, resolve_adapter

    uri = registry["uri"]
    cases = {
        "toy-robt": "not registered in .*registered: toy-robot, toy-robot-b",
        "toy-robot@staging": "no alias 'staging'.*challenger -> v2, champion -> v1",
        "toy-robot/9": "no version 9; its versions: 1, 2",
        "no/such/folder": "no such adapter folder",
        "bad name!": "name it NAME",
    }
    for spec, message in cases.items():
        with pytest.raises(GenerationError, match=message):
            resolve_adapter(spec, uri)
    with pytest.raises(GenerationError, match="no MLflow store"):
        resolve_adapter("toy-robot", f"sqlite:///{registry['root']}/nothing.db")

    adapter = resolve_adapter("toy-robot", uri)
    pipe = load_base(adapter.base_model)
    bad = {
        "prompt: empty": {"prompts": ["  "]},
        "steps 5000: choose 1 to 500": {"steps": 5000},
        "width 100000: choose 8 to 4096": {"width": 100000},
        "multiples of 8": {"width": 60},
        "guidance -1": {"guidance": -1.0},
        "weight 9.0": {"adapters": [(adapter, 9.0)]},
        "named twice": {"adapters": [(adapter, 1.0), (adapter, 0.5)]},
        "sampler 'nope'": {"sampler": "nope"},
        "seed": {"seeds": [-1]},
    }
    for message, change in bad.items():
        kwargs = {"adapters": [(adapter, 1.0)], "prompts": [PROMPT], "seeds": [0], "steps": 2, **change}
        with pytest.raises(GenerationError, match=message):
            generate(pipe, **kwargs)


def _pixels(result) -> list[np.ndarray]:
    return [np.asarray(item.image, dtype=np.int16) for item in result.images]


def test_two_adapters_combine_on_one_loaded_base_and_fuse_matches(registry, cache):
    from components.generate import base_load_count, generate, load_base, resolve_adapter

    uri = registry["uri"]
    a, b = resolve_adapter("toy-robot", uri), resolve_adapter("toy-robot-b", uri)
    loads = base_load_count()
    pipe = load_base(a.base_model)

    def draw(adapters, fuse=False):
        return _pixels(generate(pipe, adapters, [PROMPT], [0, 1], steps=3, fuse=fuse))

    base = draw([])
    only_a = draw([(a, 1.0)])
    only_b = draw([(b, 1.0)])
    both = draw([(a, 0.8), (b, 0.6)])
    again_a = draw([(a, 1.0)])  # b deactivated, not deleted
    weights = {k: v.clone() for k, v in pipe.unet.state_dict().items() if "base_layer" in k}
    fused = draw([(a, 0.8), (b, 0.6)], fuse=True)
    unfused_weights = {k: v for k, v in pipe.unet.state_dict().items() if "base_layer" in k}
    assert weights and all(torch.equal(weights[k], unfused_weights[k]) for k in weights), "base weights bit-exact"
    after_fuse = draw([])  # the base weights are restored exactly after fusing

    assert load_base(b.base_model) is pipe and base_load_count() - loads <= 1, "one base load for all of it"
    assert sorted(pipe._conceptlab["loaded"]) == sorted([a.sha256, b.sha256]), "each adapter loaded once"
    for label, other in (("base", base), ("a", only_a), ("b", only_b)):
        diff = max(np.abs(x - y).max() for x, y in zip(both, other, strict=True))
        assert diff > 4, f"combined adapters draw something else than {label} (max diff {diff})"
    assert max(np.abs(x - y).max() for x, y in zip(only_a, only_b, strict=True)) > 4
    assert all((x == y).all() for x, y in zip(only_a, again_a, strict=True)), "switching back is exact"
    assert all((x == y).all() for x, y in zip(base, after_fuse, strict=True)), "fusing leaves the base intact"
    fuse_diff = max(np.abs(x - y).max() for x, y in zip(both, fused, strict=True))
    assert fuse_diff <= 2, f"fused = unfused within float rounding (max diff {fuse_diff} of 255)"


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "components.cli", "generate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=600,
    )


@pytest.mark.slow
def test_cli_writes_pngs_and_settings_that_draw_the_same_bytes(registry, cache, tmp_path):
    uri = registry["uri"]
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["--tracking-uri", uri, "--prompt", PROMPT, "--prompt", "sks robot on the beach", "--seed", "3"]
    args += ["--seed", "4", "--concept", "toy-robot:0.8", "--concept", "toy-robot-b@champion:0.6", "--steps", "3"]
    proc = _cli(*args, "--out", str(first))
    assert proc.returncode == 0, proc.stderr
    settings = json.loads((first / "settings.json").read_text())
    assert [a["weight"] for a in settings["adapters"]] == [0.8, 0.6]
    assert [a["pinned"] for a in settings["adapters"]] == ["toy-robot/1", "toy-robot-b/1"]
    assert settings["base_model"]["name"] == "tiny-sd" and len(settings["base_model"]["sha256"]) == 64
    assert (settings["width"], settings["height"], settings["steps"], settings["sampler"]) == (64, 64, 3, "ddim")
    assert len(settings["images"]) == 4 and {i["seed"] for i in settings["images"]} == {3, 4}

    proc = _cli("--tracking-uri", uri, "--settings", str(first / "settings.json"), "--out", str(second))
    assert proc.returncode == 0, proc.stderr
    for image in settings["images"]:
        assert (first / image["file"]).read_bytes() == (second / image["file"]).read_bytes()
        assert Image.open(first / image["file"]).format == "PNG"

    # Refusals: the same command in this process (a subprocess spends most of its time importing).
    from typer.testing import CliRunner

    from components.cli import app

    for args, message in (
        (["--concept", "toy-robot@nope", "--prompt", PROMPT], "no alias 'nope'"),
        (["--concept", "toy-robot", "--prompt", ""], "prompt: empty"),
        (["--concept", "toy-robot", "--prompt", PROMPT, "--steps", "9999"], "steps 9999: choose 1 to 500"),
    ):
        result = CliRunner().invoke(app, ["generate", "--tracking-uri", uri, "--out", str(tmp_path / "x"), *args])
        output = result.output + (result.stderr if result.stderr_bytes is not None else "")
        assert result.exit_code == 2, output
        assert message in output, output


@pytest.mark.slow
def test_another_family_generates_with_its_folder_adapter(tmp_path, cache):
    """SDXL layout (two text encoders, time ids): the same code, the family's pipeline."""
    from components.generate import generate, load_base, resolve_adapter

    (tmp_path / "params.yaml").write_text(FAST_PARAMS)
    _, layout = _train_and_register(tmp_path, "toy-robot-xl", seed=0, base_model="tiny-sdxl", register=False)
    adapter = resolve_adapter(str(layout.adapter))
    pipe = load_base(adapter.base_model)
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    base = _pixels(generate(pipe, [], [PROMPT], [0], steps=3))
    with_adapter = generate(pipe, [(adapter, 1.0)], [PROMPT], [0], steps=3)
    assert with_adapter.settings["family"] == "sdxl" and with_adapter.images[0].image.size == (64, 64)
    assert np.abs(_pixels(with_adapter)[0] - base[0]).max() > 4


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations_with_pngs(registry, tmp_path):
    """`mlflow models serve -m models:/NAME@champion` as a real process: the documented request."""
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry["uri"],
        "OMP_NUM_THREADS": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/toy-robot@champion"]
    cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import httpx

        deadline = time.time() + 240
        while time.time() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("mlflow models serve did not answer /ping: " + (tmp_path / "serve.log").read_text())
        request = {
            "inputs": {"prompt": [PROMPT, "a photo of a robot"]},
            "params": {"num_inference_steps": 3, "guidance_scale": 7.5},
        }
        reply = httpx.post(f"http://127.0.0.1:{port}/invocations", json=request, timeout=300)
        assert reply.status_code == 200, reply.text
        predictions = reply.json()["predictions"]
        assert len(predictions) == 2
        for item in predictions:
            data = base64.b64decode(item if isinstance(item, str) else item["image"])
            image = Image.open(io.BytesIO(data))
            assert image.format == "PNG" and image.size == (64, 64)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
