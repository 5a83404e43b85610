"""The same training gives the same adapter file, byte for byte: adapter_sha256, DVC's md5 and the
registry's "same adapter, no new version" rule all read the bytes, not the tensors."""

import os
import shutil
import subprocess
import sys

from components.io import ADAPTER_FILE, sha256_file
from components.pipeline import run_caption, run_curate, run_prior, run_train


def _train_in_a_process(cfg, layout, hash_seed: str) -> str:
    shutil.rmtree(layout.adapter, ignore_errors=True)
    shutil.rmtree(layout.checkpoints, ignore_errors=True)
    cmd = [sys.executable, "-m", "components.cli", "train", str(cfg.concept_file)]
    cmd += ["--params", str(cfg.params_file), "--work-dir", str(layout.work_dir)]
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sha256_file(layout.adapter / ADAPTER_FILE)


def test_two_processes_with_other_hash_seeds_write_identical_adapter_bytes(cfg, layout):
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    run_prior(cfg, layout)
    # peft keeps target_modules as a set: unsorted, its order in the saved metadata follows the hash seed.
    assert _train_in_a_process(cfg, layout, "1") == _train_in_a_process(cfg, layout, "2")


def test_a_resumed_run_writes_the_same_bytes_as_an_uninterrupted_one(cfg, layout):
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    run_prior(cfg, layout)
    uninterrupted = run_train(cfg, layout)
    first = {n: (layout.adapter / n).read_bytes() for n in ("kohya_lora.safetensors", "train_config.json")}
    for ckpt in layout.checkpoints.iterdir():  # "interrupted" after step 4 of 6
        if ckpt.name != "step-0000004":
            shutil.rmtree(ckpt)
    shutil.rmtree(layout.adapter)
    resumed = run_train(cfg, layout, resume="yes")
    assert resumed.resumed_from_step == 4
    assert resumed.adapter_sha256 == uninterrupted.adapter_sha256 == sha256_file(layout.adapter / ADAPTER_FILE)
    assert {n: (layout.adapter / n).read_bytes() for n in first} == first


def test_safetensors_headers_are_written_in_one_order(tmp_path):
    """safetensors writes its __metadata__ map in hash order: two saves of one dict could differ."""
    import torch
    from safetensors.torch import load_file, save_file

    from components.io import canonical_safetensors

    tensors = {"b": torch.ones(3), "a": torch.arange(4.0)}
    metadata = {"format": "pt", "lora_adapter_metadata": '{\n  "r": 4\n}', "z": "ü"}
    saved = set()
    for i in range(20):
        save_file(tensors, str(tmp_path / f"{i}.safetensors"), metadata=metadata)
        saved.add(canonical_safetensors(tmp_path / f"{i}.safetensors").read_bytes())
    assert len(saved) == 1
    reread = load_file(str(tmp_path / "0.safetensors"))
    assert all(torch.equal(reread[k], v) for k, v in tensors.items())
