#!/usr/bin/env bash
# The main job on the embedded default: local Ray, svimo-small sizes, synthetic data.
# Extra arguments are config overrides, e.g. --prepare.num_train 64.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
exec .venv/bin/python jobs/prepare.py --config configs/default.yaml "$@"
