"""The benchmarks: `harness` (registry, timing, tables, the command line), one module per
benchmark, `run.py` (``python benchmarks/run.py <name>``) and `gpu.py` (one GPU, no Ray)."""
