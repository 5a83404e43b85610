#!/usr/bin/env bash
# The test suite (tiny real models, real MLflow store, real S3 endpoint on loopback).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec uv run --frozen pytest "$@"
