#!/usr/bin/env bash
# The main job: the whole pipeline on the bundled sample concept and the embedded tiny base model.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec uv run --frozen conceptlab demo "$@"
