"""Train SViMo + VID with Ray Train + DeepSpeed, streaming shards through Ray Data.

    python jobs/train.py --config configs/default.yaml [--train.steps 400 ...]
    ray job submit --working-dir . -- python jobs/train.py --config configs/default.yaml
    python jobs/train.py --config configs/cloud.yaml --check    # would it start? (no training)

Run directly it starts a local Ray; submitted, it joins the cluster. Checkpoints, metrics and
exported inference weights go to <train.storage_path>/<train.run_name>; running again with
the same run name resumes from the latest checkpoint. With --check it runs every check made
before a worker starts (data, encoders, settings, what the cluster can hold once its
autoscaler has added nodes) and exits.
"""

from __future__ import annotations

import json
import sys

import ray.train

from cluster.runtime import init_ray
from hoi.cli import job_parser, parse_job
from hoi.train.job import TrainError, check, exported_model, fit


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--check", action="store_true",
                        help="run the checks made before training starts, then exit")
    args, cfg = parse_job(parser, argv, "train")
    if cfg is None:
        return 2
    init_ray(cfg.ray)
    try:
        if args.check:
            print(f"train: ready: {check(cfg).summary}")
            return 0
        result = fit(cfg)
    except TrainError as e:
        print(f"train: {e}", file=sys.stderr)
        return 2
    except ray.train.TrainingFailedError as e:
        print(f"train: the run failed more than train.max_failures = "
              f"{cfg.train.max_failures} times; rerun to resume from its latest checkpoint. "
              f"Last error:\n{e}", file=sys.stderr)
        return 1
    print(json.dumps({"run": result.path, "checkpoint": result.checkpoint.path
                      if result.checkpoint else None, "model": exported_model(cfg, result),
                      "metrics": result.metrics}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
