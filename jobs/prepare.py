"""Prepare shards: synthetic clips (or a TACO directory) -> rendered video + motion -> Parquet.

    python jobs/prepare.py --config configs/default.yaml [--prepare.num_train 64 ...]
    ray job submit --working-dir . -- python jobs/prepare.py --config configs/default.yaml

A rerun with the same output resumes: complete shards are kept, the rest are built.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from cluster.runtime import init_ray
from hoi.config import ConfigError, load_config
from hoi.data.prepare import PrepareError, run


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
        print(f"prepare: bad configuration: {e}", file=sys.stderr)
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
