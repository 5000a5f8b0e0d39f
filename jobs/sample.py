"""Sample a trained SViMo in batch through Ray Data.

    python jobs/sample.py --config configs/default.yaml --sample.input requests.jsonl \
        [--sample.model outputs/runs/svimo-small] [--sample.output outputs/samples]

Each request row (JSONL, CSV or Parquet; columns id, image, prompt and optionally seed,
num_steps, guidance_scale, mode, motion, video) gives <output>/<id>/ with video.mp4,
motion_video.mp4, preview.mp4/.png, motion.npz/.json, and a line in <output>/manifest.jsonl.
Rerunning skips the ids already done; a bad row is an error line in the manifest, and the
others go on. Exit code 0 when every row is done, 1 when some rows failed, 2 when the job
could not start.
"""

from __future__ import annotations

import json
import sys

from cluster.runtime import init_ray
from hoi.cli import job_parser, parse_job
from hoi.sampling import SampleError, run


def main(argv: list[str] | None = None) -> int:
    _, cfg = parse_job(job_parser(__doc__), argv, "sample")
    if cfg is None:
        return 2
    init_ray(cfg.ray)
    try:
        summary = run(cfg)
    except SampleError as e:
        print(f"sample: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 1 if summary["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
