"""The benchmarks' single entry point: ``python benchmarks/run.py <name> [--json out.json]``.

Each benchmark is a function registered under a name with `@benchmark(...)`; it becomes a
subcommand, prints a table and, with ``--json``, writes its rows together with the exact
command and the machine it ran on. Record the figures in ``docs/benchmarks.md``.

Layout: this module is the harness (the registry, `machine()`, `timed()`, `print_table()`
and `main()`); each benchmark is a module of its own in the `benchmarks` package (`render`,
`prepare`, `model`, `train`, `rehearsal`, `serve_app`, `sample`) that registers itself when
imported; `benchmarks/run.py` imports them all and calls `main`. The harness imports neither
Ray nor the other heavy packages (those stay inside the benchmark modules), so that
`benchmarks/gpu.py` can use it on a GPU machine without them.

Add one: write ``@benchmark("name", "what it measures") def name(args) -> list[dict]`` in a
module ``benchmarks/<name>.py`` of its own, with the helpers only it uses; options of its own
go in an ``add_arguments(parser)`` passed to the decorator. Then add the module's name to
``MODULES`` in ``benchmarks/run.py``. Import within the package as ``from benchmarks import
...`` (never ``import train``: `benchmarks/` itself is not meant to be on sys.path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

Rows = list[dict]
BENCHMARKS: dict[str, tuple[str, Callable[[argparse.Namespace], Rows],
                            Callable[[argparse.ArgumentParser], None] | None]] = {}


def benchmark(name: str, help: str, add_arguments=None):
    """Register `fn(args) -> rows` as the subcommand `name`."""
    def register(fn: Callable[[argparse.Namespace], Rows]):
        BENCHMARKS[name] = (help, fn, add_arguments)
        return fn
    return register


def machine() -> dict:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines
                if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": cpu, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of `repeats` calls of fn after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def png(seed: int, height: int = 64, width: int = 96) -> bytes:
    """A random RGB reference image as PNG bytes (the serve and sample benchmarks' inputs)."""
    import io

    from PIL import Image

    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def print_table(rows: Rows) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark that `argv` (default: the command line) names: ``<name> [--json F]
    [its own options]``. Only the benchmarks imported so far are registered."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="name", required=True)
    for name, (help, _, add_arguments) in BENCHMARKS.items():
        child = sub.add_parser(name, help=help)
        child.add_argument("--json", type=Path, help="write the results here")
        if add_arguments:
            add_arguments(child)
    args = parser.parse_args(argv)
    rows = BENCHMARKS[args.name][1](args)
    print_table(rows)
    if args.json:
        command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": args.name, "command": command,
                                         "machine": machine(), "results": rows}, indent=2))
