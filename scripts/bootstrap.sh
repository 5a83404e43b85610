#!/usr/bin/env bash
# Installs uv (if missing) and the locked environment into .venv. Sourced by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v uv >/dev/null 2>&1; then
  export PATH="$HOME/.local/bin:$PATH"
  command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --user uv \
    || python3 -m pip install --quiet --user --break-system-packages uv  # Debian's externally-managed Python
fi
# --inexact: keeps the locked `gpu` extra (bitsandbytes) when `uv sync --extra gpu` installed it.
# --compile-bytecode: once at install (about a minute), instead of every DVC stage, CLI and flow process
# compiling torch, diffusers and mlflow again where .pyc files cannot be written (PYTHONDONTWRITEBYTECODE).
uv sync --frozen --inexact --compile-bytecode --quiet
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
