"""Prepare shards: synthetic clips (or a TACO directory) -> rendered video + motion -> Parquet;
with --prepare.encode true, then the encode pass: every clip's latents and T5 features at the
training stages' sizes (`hoi.train.latents`), which training then reads instead of encoding.

    python jobs/prepare.py --config configs/default.yaml [--prepare.num_train 64 ...]
    python jobs/prepare.py --config configs/default.yaml --prepare.encode true
    ray job submit --working-dir . -- python jobs/prepare.py --config configs/default.yaml

A rerun with the same output resumes: complete shards and latent shards are kept, the rest
are built.
"""

from __future__ import annotations

import json
import sys

from cluster.runtime import init_ray
from hoi.cli import job_parser, parse_job
from hoi.data.prepare import PrepareError, run
from hoi.train.latents import LatentsError, encode_pass


def main(argv: list[str] | None = None) -> int:
    _, cfg = parse_job(job_parser(__doc__), argv, "prepare")
    if cfg is None:
        return 2
    init_ray(cfg.ray)
    try:
        manifest = run(cfg)
        latents = encode_pass(cfg) if cfg.prepare.encode else None
    except (PrepareError, LatentsError) as e:
        print(f"prepare: {e}", file=sys.stderr)
        return 1
    summary = {split: counts["clips"] for split, counts in manifest["splits"].items()}
    report = {"output": cfg.prepare.output, "clips": summary, "seconds": manifest["seconds"],
              "previews": manifest["previews"]}
    if latents is not None:
        report["latents"] = {key: latents[key] for key in ("sizes", "encoded_this_run",
                                                            "seconds")}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
