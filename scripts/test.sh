#!/usr/bin/env bash
# The test suite (CPU). Extra arguments go to pytest, e.g. -k shards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
exec .venv/bin/python -m pytest -q "$@"
