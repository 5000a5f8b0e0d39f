"""The command line every job shares: --config, --flavour, config overrides, logging."""

from __future__ import annotations

import argparse
import logging
import sys

from hoi.config import Config, ConfigError, load_config


def job_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with --config and --flavour; a job adds arguments of its own."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML run file (configs/*.yaml)")
    parser.add_argument("--flavour", help="size preset: svimo-tiny, svimo-small, svimo-5b")
    return parser


def parse_job(parser: argparse.ArgumentParser, argv: list[str] | None, job: str
              ) -> tuple[argparse.Namespace, Config | None]:
    """(the job's own arguments, the config built from the rest), with logging set up. A bad
    configuration is printed as `<job>: bad configuration: ...` and gives None."""
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args, load_config(args.config, overrides, flavour=args.flavour)
    except (ConfigError, OSError) as e:
        print(f"{job}: bad configuration: {e}", file=sys.stderr)
        return args, None
