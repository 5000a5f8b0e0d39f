"""The paper's ablation (table 3) at svimo-small scale, end to end on one machine.

    python jobs/ablation.py --config configs/ablation.yaml [--out outputs/ablation]
        [--warmup-steps 2000] [--joint-steps 500] [--batch-size 4] [--lr 1e-3]
        [--models full,guidance_only,gradient_only,no_vid,separate]

Prepares shards with one action/target combination held out (prepare.holdout), warms VID up
once, trains every variant on from it with the same budget (full, interaction guidance only,
gradient constraint only, without VID, separate video and motion models), evaluates each on
the val split (new seeds) and the heldout split, and writes <out>/results.md (next to the
paper's numbers), results.csv, metrics.png and losses.png. Rerunning resumes: finished
stages are kept. Needs the codec of jobs/train_codec.py (encoders.*).
"""

from __future__ import annotations

import sys

from cluster.runtime import init_ray
from hoi.ablation import MODELS, Budget, check_models, run
from hoi.cli import job_parser, parse_job
from hoi.config import ConfigError
from hoi.data.prepare import PrepareError
from hoi.evaluation import EvaluateError


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    default = Budget()
    parser.add_argument("--out", default="outputs/ablation", help="output directory")
    parser.add_argument("--warmup-steps", type=int, default=default.warmup_steps,
                        help="VID warm-up steps, shared by every variant")
    parser.add_argument("--joint-steps", type=int, default=default.joint_steps,
                        help="closed-loop steps of each variant")
    parser.add_argument("--batch-size", type=int, default=default.batch_size,
                        help="clips per step")
    parser.add_argument("--lr", type=float, default=default.lr, help="peak AdamW learning rate")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated rows to run (default: all of {','.join(MODELS)})")
    args, cfg = parse_job(parser, argv, "ablation")
    if cfg is None:
        return 2
    if not cfg.prepare.holdout or not cfg.prepare.num_heldout:
        print("ablation: set prepare.holdout and prepare.num_heldout (configs/ablation.yaml "
              "does)", file=sys.stderr)
        return 2
    models = tuple(args.models.split(","))
    try:
        check_models(models)
    except ValueError as e:
        print(f"ablation: --models: {e}", file=sys.stderr)
        return 2
    budget = Budget(args.warmup_steps, args.joint_steps, args.batch_size, args.lr)
    init_ray(cfg.ray)
    try:
        result = run(cfg, args.out, budget, models=models)
    except (ConfigError, OSError, PrepareError, EvaluateError) as e:
        print(f"ablation: {e}", file=sys.stderr)
        return 1
    print(open(result["report"]).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
