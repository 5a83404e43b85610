"""Data-parallel training (train.num_processes: 2) as real processes on the CPU (gloo): `conceptlab train`
launches them under torch.distributed.run, exactly as DVC's train stage runs it.

Each test launches the real command; an audit hook (Python's sys.addaudithook, loaded into every
process through a sitecustomize on PYTHONPATH) records, per rank, every file the process creates,
opens for writing, renames or deletes under the work folder."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from components.config import load_config
from components.pipeline import run_caption, run_curate, run_prior, run_train

# Float tolerance of 2 processes vs 1 (same global batch, same draws): DDP sums the two half-batch
# gradients in another order than one process's backward does, and each process runs the U-Net on
# half as many rows (other matmul blocking); Adam divides by sqrt(v), which magnifies that where
# gradients are small. Measured on this test's 6 steps: max abs 3.4e-6, relative L2 3.3e-7. The
# bounds leave ~15-30x headroom for other CPUs and thread counts, and sit far below what a wrong
# batch does (both ranks on the same rows, broken on purpose: max abs 2.3e-2, relative L2 3.3e-2).
MAX_ABS = 5e-5
MAX_REL_L2 = 1e-5

AUDIT_HOOK = """
import os, sys

_root = os.environ["CONCEPTLAB_AUDIT_ROOT"]
_log = os.path.join(os.environ["CONCEPTLAB_AUDIT_LOG"], f"rank-{os.environ.get('RANK', 'launcher')}-{os.getpid()}.log")
_busy = False


def _note(line):
    global _busy
    _busy = True
    try:
        with open(_log, "a") as f:
            f.write(line + "\\n")
    finally:
        _busy = False


def _hook(event, args):
    if _busy:
        return
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
    elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree"):
        path, writes = args[0], True
    else:
        return
    if writes and isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(_root):
        _note(f"{event} {os.fspath(path)}")


_note(f"started {' '.join(sys.argv)}")
sys.addaudithook(_hook)
"""


@pytest.fixture
def prepared(cfg, layout):
    run_curate(cfg, layout)
    run_caption(cfg, layout)
    run_prior(cfg, layout)
    return cfg, layout


def set_train(cfg, **train):
    """Writes ``train`` keys into the test's params file; the config as the command will read it."""
    raw = yaml.safe_load(cfg.params_file.read_text())
    raw["train"].update(train)
    cfg.params_file.write_text(yaml.safe_dump(raw))
    return load_config(cfg.concept_file, cfg.params_file)


def train_command(cfg, layout, *flags: str) -> list[str]:
    cmd = [sys.executable, "-m", "components.cli", "train", str(cfg.concept_file)]
    return cmd + ["--params", str(cfg.params_file), "--work-dir", str(layout.work_dir), *flags]


def audited_env(tmp_path: Path, layout) -> tuple[dict, Path]:
    hook_dir, logs = tmp_path / "audit-hook", tmp_path / "audit-logs"
    hook_dir.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")])),
        "CONCEPTLAB_AUDIT_ROOT": str(layout.work_dir),
        "CONCEPTLAB_AUDIT_LOG": str(logs),
        "OMP_NUM_THREADS": "1",
    }
    return env, logs


def audit(logs: Path) -> dict[str, list[str]]:
    """Per process (rank-0-<pid>, rank-1-<pid>, rank-launcher-<pid>): its writes under the work folder."""
    return {p.stem: p.read_text().splitlines()[1:] for p in sorted(logs.glob("*.log"))}


def run_cli(cmd, env, timeout=600) -> tuple[subprocess.CompletedProcess, float]:
    started = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.time() - started


def adapter_tensors(layout) -> dict[str, torch.Tensor]:
    return load_file(str(layout.adapter / "pytorch_lora_weights.safetensors"))


def differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Max abs difference and relative L2 norm of the difference, over all tensors."""
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k].double() - b[k].double()).flatten() for k in a])
    ref = torch.cat([b[k].double().flatten() for k in a])
    return diff.abs().max().item(), (diff.norm() / ref.norm()).item()


def loss_rows(layout) -> list[dict]:
    return list(csv.DictReader(open(layout.adapter / "loss.csv")))


# A schedule with warm-up and decay: the LR must step once per step whatever the process count.
DDP = dict(batch_size=2, lr_scheduler="cosine", lr_warmup_steps=2)


@pytest.mark.slow  # each launch starts 4 Python processes that import torch: minutes on a busy 2-core box
def test_two_processes_train_the_single_process_adapter_only_rank_0_writes_and_resume_is_exact(prepared, tmp_path):
    cfg, layout = prepared
    single_cfg = set_train(cfg, **DDP, num_processes=1)
    run_train(single_cfg, layout)
    single, single_losses = adapter_tensors(layout), loss_rows(layout)
    shutil.rmtree(layout.adapter)
    shutil.rmtree(layout.checkpoints)

    set_train(cfg, **DDP, num_processes=2)
    env, logs = audited_env(tmp_path, layout)
    proc, seconds = run_cli(train_command(cfg, layout), env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    uninterrupted = adapter_tensors(layout)

    # (a) the same adapter within float tolerance, the same loss curve and LR schedule.
    max_abs, rel_l2 = differences(uninterrupted, single)
    scale = max(t.abs().max().item() for t in single.values())
    print(
        f"\n2-process run {seconds:.1f} s; 2 vs 1 process adapter: max abs {max_abs:.3e} (largest weight "
        f"{scale:.3e}), relative L2 {rel_l2:.3e}"
    )
    assert max_abs <= MAX_ABS and rel_l2 <= MAX_REL_L2, (max_abs, rel_l2)
    double_losses = loss_rows(layout)
    assert [r["lr"] for r in double_losses] == [r["lr"] for r in single_losses]
    for one, two in zip(single_losses, double_losses, strict=True):
        assert float(two["loss"]) == pytest.approx(float(one["loss"]), rel=1e-4)
    config = json.loads((layout.adapter / "train_config.json").read_text())
    assert config["params"]["num_processes"] == 2
    assert proc.stderr.count("train: 6 steps") == 1, "one summary line, from rank 0"

    # (b) exactly one process wrote: rank 0 made the checkpoints and the outputs; rank 1 and the
    # launchers (the command and torchrun) wrote nothing under the work folder.
    written = audit(logs)
    ranks = sorted(name.rsplit("-", 1)[0] for name in written)
    assert ranks == ["rank-0", "rank-1", "rank-launcher", "rank-launcher"], written.keys()
    for name, events in written.items():
        if not name.startswith("rank-0-"):
            assert events == [], f"{name} wrote {events[:5]}"
    rank0 = "\n".join(next(events for name, events in written.items() if name.startswith("rank-0-")))
    assert f"os.rename {layout.adapter}.partial" in rank0
    assert f"os.rename {layout.checkpoints}/step-0000004.partial" in rank0
    assert "adapter.partial/.train.json" in rank0 and "adapter.partial/loss.csv" in rank0

    # (d) resumed across the two ranks from the checkpoint at step 4: the uninterrupted adapter, bit for bit.
    for ckpt in layout.checkpoints.iterdir():
        if ckpt.name != "step-0000004":
            shutil.rmtree(ckpt)
    shutil.rmtree(layout.adapter)
    proc, resumed_seconds = run_cli(train_command(cfg, layout, "--resume"), env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"resumed 2-process run {resumed_seconds:.1f} s")
    assert json.loads((layout.adapter / "train.json").read_text())["resumed_from_step"] == 4
    resumed = adapter_tensors(layout)
    assert resumed.keys() == uninterrupted.keys()
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=0, atol=0)
    assert len(loss_rows(layout)) == 6, "the loss curve spans the whole run"


@pytest.mark.slow  # each launch starts 4 Python processes that import torch: minutes on a busy 2-core box
def test_a_killed_rank_fails_the_run_with_a_clear_message_and_no_adapter(prepared, tmp_path):
    cfg, layout = prepared
    set_train(cfg, **DDP, num_processes=2, max_steps=2000, checkpoint_every=2)
    env, _ = audited_env(tmp_path, layout)
    proc = subprocess.Popen(
        train_command(cfg, layout), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 300
        while not (layout.checkpoints / "step-0000002").exists():  # training is under way
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-4000:]
            time.sleep(0.05)
        children = psutil.Process(proc.pid).children(recursive=True)  # torchrun and its 2 workers
        rank1 = next(p for p in children if p.environ().get("RANK") == "1")
        rank1.send_signal(signal.SIGKILL)
        killed = time.time()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"\nkilled rank 1 -> run exited {proc.returncode} after {time.time() - killed:.1f} s; its last lines:")
    print("\n".join(stderr.splitlines()[-3:]))

    assert proc.returncode != 0
    assert "training in 2 processes failed" in stderr and "No adapter was written" in stderr
    assert "Signal 9 (SIGKILL)" in stderr, "the launcher names the process that died and how"
    assert not layout.adapter.exists() and not layout.adapter.with_name("adapter.partial").exists()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "no process of the run is left behind"


def test_the_global_batch_must_split_evenly(concept_dir, tmp_path):
    from components.config import ConfigError

    params = tmp_path / "p.yaml"
    params.write_text("train: {batch_size: 3, num_processes: 2}\n")
    with pytest.raises(ConfigError, match=r"key 'train'.*batch_size 3 .*multiple of num_processes 2"):
        load_config(concept_dir / "concept.yaml", params)
