#!/usr/bin/env bash
# The main job on the embedded default: local Ray, svimo-small sizes, synthetic data.
#   1. prepare shards (jobs/prepare.py; reruns keep complete shards),
#   2. the small codec, once (jobs/train_codec.py; skipped when outputs/codec exists: a
#      checkpoint's latents only mean something with the codec it was trained with): the
#      shipped assets/codec-small when it fits the config, else trained here (13 minutes),
#   3. the encode pass (jobs/prepare.py --prepare.encode true): every clip's latents and T5
#      features, which training reads instead of encoding (reruns keep what is complete),
#   4. train SViMo + VID with Ray Train + DeepSpeed (jobs/train.py; reruns resume the run),
#   5. sample two held-out clips' first frames + prompts from the trained model through Ray
#      Data (jobs/sample.py): videos, 3D motion and previews in outputs/samples/<clip>/.
# Extra arguments are config overrides for all of them, e.g. --train.steps 400.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh
.venv/bin/python jobs/prepare.py --config configs/default.yaml "$@"
if [ ! -f outputs/codec/codec.json ]; then
  .venv/bin/python jobs/train_codec.py --config configs/default.yaml "$@"
fi
.venv/bin/python jobs/prepare.py --config configs/default.yaml --prepare.encode true "$@"
.venv/bin/python jobs/train.py --config configs/default.yaml "$@"
exec .venv/bin/python jobs/sample.py --config configs/default.yaml --from-split val --limit 2 "$@"
