"""The paper's ablation (table 3) at svimo-small scale, end to end on one machine.

    python jobs/ablation.py --config configs/ablation.yaml [--ablation.output outputs/ablation]
        [--loop.vid_warmup_steps 2000] [--ablation.joint_steps 500] [--train.batch_size 4]
        [--train.learning_rate 1e-3] [--ablation.models "[full, separate]"]

Prepares shards with one action/target combination held out (prepare.holdout), warms VID up
once (loop.vid_warmup_steps), trains every variant on from it with the same budget (full,
interaction guidance only, gradient constraint only, without VID, separate video and motion
models), evaluates each on the val split (new seeds) and the heldout split, and writes
<ablation.output>/results.md (next to the paper's numbers), results.csv, metrics.png and
losses.png. Rerunning resumes: finished stages are kept. Needs the codec of
jobs/train_codec.py (encoders.*).
"""

from __future__ import annotations

import sys

from cluster.runtime import init_ray
from hoi.ablation import run
from hoi.cli import job_parser, parse_job
from hoi.config import ConfigError
from hoi.data.prepare import PrepareError
from hoi.evaluation import EvaluateError


def main(argv: list[str] | None = None) -> int:
    _, cfg = parse_job(job_parser(__doc__), argv, "ablation")
    if cfg is None:
        return 2
    init_ray(cfg.ray)
    try:
        result = run(cfg)
    except ConfigError as e:
        print(f"ablation: {e}", file=sys.stderr)
        return 2
    except (OSError, PrepareError, EvaluateError) as e:
        print(f"ablation: {e}", file=sys.stderr)
        return 1
    print(open(result["report"]).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
