"""Report a cluster's node types to its GCS, where jobs check what the cluster can hold once
its autoscaler has added every node it may (`hoi.resources`; Ray Train and Ray Data read them
there too).

    python -m cluster.node_types ~/ray_bootstrap_config.yaml [--address auto]

ray_cluster.yaml's head runs this right after `ray start`, with the config the launcher wrote
on the head (each instance type's CPUs and GPUs filled in); `cluster.local` runs it for its
fake autoscaling cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import ray
import yaml

from hoi.resources import node_types_of, publish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the cluster-launcher config (YAML)")
    parser.add_argument("--address", default="auto", help="the cluster's GCS address")
    args = parser.parse_args(argv)
    path = Path(args.config).expanduser()
    try:
        types = node_types_of(yaml.safe_load(path.read_text()))
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        print(f"cluster.node_types: {path} is not a cluster-launcher config: {e!r}",
              file=sys.stderr)
        return 2
    ray.init(address=args.address, logging_level=logging.WARNING)
    publish(types)
    for t in types:
        resources = ", ".join(f"{v:g} {k}" for k, v in sorted(t.resources.items()))
        print(f"{t.name}: up to {t.max_count} x ({resources})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
