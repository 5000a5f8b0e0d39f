"""Train SViMo + VID with the closed loop in this one process, then sample in every mode.

    python jobs/train_local.py --config configs/default.yaml --train.steps 600 \
        [--local.output outputs/local --local.mask_steps 100 --local.eval_clips 4]

Reads the shards at prepare.output (train and val splits). Trains for train.steps (batch,
learning rate, warm-up, clipping and weight decay from `train` too), then local.mask_steps
more with the asymmetric motion mask. Writes to local.output: svimo/ and vid/ (our checkpoint
format; svimo-masked/ and vid-masked/ after the masked stage), history.json (loss terms per
step), metrics.json (per sampling mode, on local.eval_clips validation clips, sample.num_steps
steps) and previews/<mode>.{mp4,png} (and <mode>-gallery.png). For cluster-scale training use
jobs/train.py.
"""

from __future__ import annotations

import json
import sys

from hoi.cli import job_parser, parse_job
from hoi.config import ConfigError
from hoi.train.local import run


def main(argv: list[str] | None = None) -> int:
    _, cfg = parse_job(job_parser(__doc__), argv, "train_local")
    if cfg is None:
        return 2
    try:
        summary = run(cfg)
    except (ConfigError, OSError) as e:
        print(f"train_local: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
