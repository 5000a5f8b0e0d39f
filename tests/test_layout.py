"""The import drawing of the project (README, Layout): floors that import only downwards or
sideways, no circle, inference apart from training, and nothing imports the tests."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hoi", "serve", "jobs", "cluster", "benchmarks")

# Bottom to top; a module may import from its own floor and those below.
FLOORS = (
    ("hoi.vocabulary", "hoi.geometry"),
    ("hoi.config",),
    ("hoi.storage", "hoi.resources", "hoi.cli"),
    ("hoi.render",),
    ("hoi.data",),
    ("hoi.artifacts",),
    ("hoi.model", "hoi.metrics"),
    ("hoi.diffusion",),
    ("hoi.codec",),
    ("hoi.pipeline", "hoi.outputs"),
    ("hoi.train",),
    ("hoi.sampling", "hoi.evaluation", "hoi.ablation", "hoi.untrained"),
    ("cluster", "serve", "jobs"),
    ("benchmarks",),
)
INFERENCE = ("hoi.pipeline", "hoi.outputs", "hoi.sampling", "serve")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "tests":
                found.add(target)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def floor(name: str) -> int:
    for level, prefixes in enumerate(FLOORS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{name} is on no floor: add it to FLOORS (and the README's Layout)")


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()
            if name not in ("hoi", "benchmarks")}


def test_every_import_goes_down_or_sideways():
    upwards = [f"{a} -> {b}" for a, targets in graph().items() for b in targets
               if not b.startswith("tests") and b != "hoi" and floor(b) > floor(a)]
    assert upwards == []


def test_no_circle():
    edges = {a: {b for b in targets if not b.startswith("tests")} for a, targets in graph().items()}
    graphlib.TopologicalSorter(edges).static_order()  # CycleError names the circle


def test_inference_imports_no_training_and_nothing_imports_the_tests():
    g = graph()
    training = sorted(f"{a} -> {b}" for a, targets in g.items() for b in targets
                      if a.startswith(INFERENCE) and b.startswith("hoi.train"))
    assert training == []
    assert sorted(f"{a} -> {b}" for a, targets in g.items() for b in targets
                  if b.startswith("tests")) == []


def test_the_drawing_sees_imports():
    """The checks above would pass on a parser that finds nothing."""
    g = graph()
    assert {"hoi.config", "hoi.artifacts", "hoi.diffusion.sampler"} <= g["hoi.pipeline"]
    assert "hoi.train.engine" in g["hoi.train.checkpoint"]
    assert floor("hoi.train.loop") > floor("hoi.diffusion.closed_loop") > floor("hoi.config")
