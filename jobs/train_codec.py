"""Train the small codec of the CPU flavours: video VAE, tokenizer and T5 text encoder.

    python jobs/train_codec.py --flavour svimo-small [--codec.shards outputs/shards ...]

Writes <codec.output>/vae, /tokenizer, /text_encoder and codec.json (validation PSNR of RGB
and motion videos); point encoders.vae, encoders.tokenizer and encoders.text_encoder at the
three directories to use them. With codec.asset naming a codec trained before that fits the
config, copies it there instead of training.
"""

from __future__ import annotations

import json
import sys

from hoi.cli import job_parser, parse_job
from hoi.codec import CodecError
from hoi.codec.job import run
from hoi.config import ConfigError
from hoi.data.clip import ClipError


def main(argv: list[str] | None = None) -> int:
    _, cfg = parse_job(job_parser(__doc__), argv, "train_codec")
    if cfg is None:
        return 2
    try:
        summary = run(cfg)
    except ConfigError as e:
        print(f"train_codec: bad configuration: {e}", file=sys.stderr)
        return 2
    except (CodecError, ClipError) as e:
        print(f"train_codec: {e}", file=sys.stderr)
        return 1
    print(json.dumps({key: summary[key] for key in
                      ("paths", "installed_from", "clips", "evaluated_on", "psnr_db",
                       "motion_video_consistency", "scaling_factor", "seconds")
                      if key in summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
