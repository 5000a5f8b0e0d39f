"""Train the small codec of the CPU flavours: video VAE, tokenizer and T5 text encoder.

    python jobs/train_codec.py --flavour svimo-small [--codec.shards outputs/shards ...]

Writes <codec.output>/vae, /tokenizer, /text_encoder and codec.json (validation PSNR of RGB
and motion videos); point encoders.vae, encoders.tokenizer and encoders.text_encoder at the
three directories to use them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from hoi.config import ConfigError, load_config
from hoi.data.clip import ClipError
from hoi.train.codec import CodecError, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML run file (configs/*.yaml)")
    parser.add_argument("--flavour", help="size preset: svimo-tiny, svimo-small, svimo-5b")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, overrides, flavour=args.flavour)
    except (ConfigError, OSError) as e:
        print(f"train_codec: bad configuration: {e}", file=sys.stderr)
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
                      ("paths", "clips", "evaluated_on", "psnr_db", "scaling_factor", "seconds")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
