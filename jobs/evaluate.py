"""Evaluate a trained SViMo on held-out clips: sample each clip's first frame + prompt, score
the video and the 3D motion with every metric, and write the paper's table.

    python jobs/evaluate.py --config configs/default.yaml [--evaluate.model RUN_OR_CKPT] \
        [--evaluate.split val] [--evaluate.seeds "[0, 1]"] [--evaluate.dino DIR] \
        [--evaluate.clip DIR] [--evaluate.i3d FILE]

Writes <evaluate.output>/table.md, table.csv (one row for the model, one for the ground
truth's own reference-free scores), clips.csv (per clip and seed) and plots.png. Columns whose
feature network is not given (DINO, CLIP, I3D) stay empty.
"""

from __future__ import annotations

import sys

from cluster.runtime import init_ray
from hoi.cli import job_parser, parse_job
from hoi.evaluation import EvaluateError, run


def main(argv: list[str] | None = None) -> int:
    _, cfg = parse_job(job_parser(__doc__), argv, "evaluate")
    if cfg is None:
        return 2
    init_ray(cfg.ray)
    try:
        result = run(cfg)
    except EvaluateError as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print(f"{result['clips']} samples; tables and plots in {result['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
