"""Prepare shards: synthetic clips (or a TACO directory) -> rendered video + motion -> Parquet.

    python jobs/prepare.py --config configs/default.yaml [--prepare.num_train 64 ...]
    ray job submit --working-dir . -- python jobs/prepare.py --config configs/default.yaml

A rerun with the same output resumes: complete shards are kept, the rest are built.
"""

from __future__ import annotations

import json
import sys

from cluster.runtime import init_ray
from hoi.cli import job_parser, parse_job
from hoi.data.prepare import PrepareError, run


def main(argv: list[str] | None = None) -> int:
    _, cfg = parse_job(job_parser(__doc__), argv, "prepare")
    if cfg is None:
        return 2
    init_ray(cfg.ray)
    try:
        manifest = run(cfg)
    except PrepareError as e:
        print(f"prepare: {e}", file=sys.stderr)
        return 1
    summary = {split: counts["clips"] for split, counts in manifest["splits"].items()}
    print(json.dumps({"output": cfg.prepare.output, "clips": summary,
                      "seconds": manifest["seconds"], "previews": manifest["previews"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
