"""Small file helpers shared by the stages: hashing, atomic JSON, result records."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ADAPTER_FILE = "pytorch_lora_weights.safetensors"  # the name diffusers' load_lora_weights looks for
KOHYA_FILE = "kohya_lora.safetensors"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object with sorted keys: the content address of a set of inputs."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def write_json(path: Path, obj: Any) -> Path:
    """Writes JSON atomically (temp file + rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str, ensure_ascii=False)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
    os.replace(tmp, path)
    return path


def new_staging_dir(final: Path) -> Path:
    """An empty `<final>.partial` folder beside ``final``: outputs are written there, then publish()ed,
    so an interrupted stage never leaves a half-written output under the final name."""
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, final: Path) -> Path:
    """Replaces ``final`` with the finished ``staging`` folder in one rename."""
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    return final


def canonical_safetensors(path: Path) -> Path:
    """Rewrites a safetensors header with its ``__metadata__`` keys sorted, in place. safetensors (0.8)
    writes that map in hash order, random per save, so the same tensors and metadata gave other bytes
    (and another sha256, DVC md5 and registry version). Same length, so tensor offsets stay valid."""
    with open(path, "r+b") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        if "__metadata__" in header:
            header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:
            raise ValueError(f"{path}: canonical header is longer than the original ({len(text)} > {size})")
        f.seek(8)
        f.write(text + b" " * (size - len(text)))  # safetensors pads its header with spaces
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


class StageResult(BaseModel):
    """What a stage returns; also written as JSON next to its outputs."""

    def write(self, path: Path) -> Path:
        return write_json(path, self.model_dump(mode="json"))

    @classmethod
    def read(cls, path: Path):
        return cls.model_validate(read_json(path))
