"""The benchmarks' command line: ``python benchmarks/run.py <name> [--json out.json]
[its own options]`` from a checkout (or ``python -m benchmarks.run ...``).

It imports each benchmark module of this package, which registers itself with
`benchmarks.harness`, then runs `benchmarks.harness.main` (whose docstring says how to add
a benchmark).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# run from a checkout: the repository root first, and benchmarks/ itself (sys.path[0] when run
# as a script) not at all, so that its modules are only ever benchmarks.<name> (train, model...)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from benchmarks.harness import main  # noqa: E402

MODULES = ("render", "prepare", "model", "train", "rehearsal", "serve_app", "sample")
"""The benchmark modules, in the order of their subcommands (each registers itself)."""

for _name in MODULES:
    importlib.import_module(f"benchmarks.{_name}")

if __name__ == "__main__":
    main()
