#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv (idempotent, fast when current).
# CPU machines: torch is pinned by constraints.txt. GPU machines: install your CUDA torch into
# .venv first; pip keeps it because it satisfies the requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.svimo-env 2>/dev/null)" != "$stamp" ]; then
  echo "== setting up .venv (torch, ray, deepspeed, diffusers, ...)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q -c constraints.txt torch
  .venv/bin/pip install -q -c constraints.txt -e ".[dev]"
  echo "$stamp" > .venv/.svimo-env
fi
