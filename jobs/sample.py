"""Sample a trained SViMo in batch through Ray Data.

    python jobs/sample.py --config configs/default.yaml --sample.input requests.jsonl \
        [--sample.model outputs/runs/svimo-small] [--sample.output outputs/samples]

Each request row (JSONL, CSV or Parquet; columns id, image, prompt and optionally seed,
num_steps, guidance_scale, mode, motion, video) gives <output>/<id>/ with video.mp4,
motion_video.mp4, preview.mp4/.png, motion.npz/.json, and a line in <output>/manifest.jsonl.
Rerunning skips the ids already done; a bad row is an error line in the manifest, and the
others go on. `--from-split val --limit 4` samples held-out clips of train.shards instead:
their first frames and prompts become the requests (<output>/requests/val.jsonl). Exit code 0 when every row is done, 1 when some rows failed, 2 when the job
could not start.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from cluster.runtime import init_ray
from hoi.cli import job_parser, parse_job
from hoi.sampling import SampleError, requests_from_split, run
from hoi.storage import join


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--from-split", help="sample the clips of this shard split "
                                             "(e.g. val) of train.shards")
    parser.add_argument("--limit", type=int, default=4, help="clips taken by --from-split")
    args, cfg = parse_job(parser, argv, "sample")
    if cfg is None:
        return 2
    if args.from_split:
        try:
            path = requests_from_split(cfg, args.from_split,
                                       join(cfg.sample.output, "requests"), args.limit)
        except FileNotFoundError as e:
            print(f"sample: {e}", file=sys.stderr)
            return 2
        cfg = dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, input=path))
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
