"""Naming, finding and loading base models: built-in tiny models, local folders, hub ids.

A model is always loaded from a local folder with ``from_pretrained``; a hub id is resolved to its
snapshot in the local Hugging Face cache first (downloaded only when the machine is online and
HF_HUB_OFFLINE is not set). A model that cannot be found is an error that says how to provide it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from components.errors import ModelNotAvailable
from components.io import sha256_file, sha256_json
from components.tiny_models import TINY_MODEL_NAMES, ensure_tiny_model


def models_dir() -> Path:
    """Where built-in tiny models are built (once): $CONCEPTLAB_MODELS_DIR or ~/.cache/conceptlab/models."""
    default = Path.home() / ".cache" / "conceptlab" / "models"
    return Path(os.environ.get("CONCEPTLAB_MODELS_DIR", default))


# Pretrained toy-world models, committed to the repository (built by `conceptlab toyworld build`).
COMMITTED_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
COMMITTED_MODEL_NAMES = ("toyworld-sd", "toyworld-clip", "toyworld-flux", "toyworld-taiyi", "toyworld-clip-zh")


def resolve_model(ref: str) -> Path:
    """Returns the local folder of a model named by built-in name, local path or hub id."""
    if ref in TINY_MODEL_NAMES:
        return ensure_tiny_model(ref, models_dir())
    if ref in COMMITTED_MODEL_NAMES:
        folder = COMMITTED_MODELS_DIR / ref
        if not any(folder.glob("*.json")):
            raise ModelNotAvailable(
                f"model {ref!r}: {folder} is missing; it is committed to the repository (restore it with "
                f"`git checkout -- models/{ref}`) or rebuilt by `conceptlab toyworld build` (about an hour)"
            )
        return folder
    local = Path(ref).expanduser()
    if local.exists():
        return local.resolve()
    if ref.startswith((".", "/", "~")) or ref.count("/") != 1:
        raise ModelNotAvailable(
            f"model {ref!r}: no such folder, and it is not a hub id (owner/name) or one of the built-in "
            f"models {', '.join(TINY_MODEL_NAMES + COMMITTED_MODEL_NAMES)}"
        )
    return _hub_snapshot(ref)


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelNotAvailable(
            f"model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. "
            f"On a machine with access run `hf download {repo_id}` (and copy the cache), or set "
            f"base_model to a local folder saved with save_pretrained."
        )
    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # network, auth, or a wrong id: all need the same advice
        raise ModelNotAvailable(
            f"model {repo_id!r} could not be downloaded ({type(exc).__name__}: {exc}). Check the id and "
            f"your access token, or set base_model to a local folder saved with save_pretrained."
        ) from exc


def _folder_digest(folder: str) -> str:
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    # Hashing is cached per (name, size, mtime, inode) of every file: new weights saved under the same
    # folder name are hashed again, never answered from the cache.
    stats = tuple((str(p.relative_to(folder)), *_stat_key(p)) for p in files)
    return _digest(folder, stats)


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


@lru_cache(maxsize=32)
def _digest(folder: str, stats: tuple) -> str:
    return sha256_json([[name, sha256_file(Path(folder) / name)] for name, *_ in stats])


def model_identity(ref: str) -> dict[str, str]:
    """A portable identity for lineage and cache keys: name plus a content hash of the files.

    An absolute path is not portable across machines, a content hash is; for hub snapshots the
    folder name is the commit revision, recorded as well.
    """
    folder = resolve_model(ref)
    identity = {"name": ref, "sha256": _folder_digest(str(folder))}
    if "snapshots" in folder.parts:
        identity["revision"] = folder.name
    return identity


def native_resolution(model_dir: Path) -> int:
    """The pixel size the checkpoint was trained at, as its model family reads it from the folder."""
    from components.families import family_for

    return family_for(model_dir).native_resolution(model_dir)


def load_pipeline(ref: str, dtype=None, device: str | None = None):
    """The model's own pipeline class (its family's), on ``device``; no safety checker or watermark,
    since evaluation needs raw outputs."""
    import torch

    from components.families import family_for

    folder = resolve_model(ref)
    if not (folder / "model_index.json").exists():
        raise ModelNotAvailable(f"model {ref!r} at {folder} has no model_index.json: not a diffusers pipeline")
    return family_for(folder).load_pipeline(folder, dtype or torch.float32, device or default_device())


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
