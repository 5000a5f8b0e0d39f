"""Writing inference weights: a local export streams the tensors to disk, without a second
copy of them in memory (at 5B the gathered 16-bit weights alone are 12 GB on rank 0)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from hoi.config import load_config
from hoi.model.pretrained import WEIGHTS_NAME, write_pretrained

# A process that holds SIZE_MB of weights, writes them and reports how much its peak resident
# memory grew while writing (ru_maxrss: kB on Linux).
PEAK = """
import resource, sys, torch
from hoi.config import load_config
from hoi.model.pretrained import write_pretrained
state = {f"w{i}": torch.ones(SIZE_MB * 2**18 // 8) for i in range(8)}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
write_pretrained("SViMo", load_config(flavour="svimo-tiny"), state, sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
SIZE_MB = 400


def test_a_local_export_does_not_hold_the_weights_twice(tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", PEAK.replace("SIZE_MB", str(SIZE_MB)),
                           str(tmp_path / "svimo")], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    grown_mb = int(done.stdout.split()[-1])
    assert grown_mb < SIZE_MB / 4, f"writing {SIZE_MB} MB of weights grew the peak by {grown_mb} MB"
    written = safetensors.torch.load_file(str(tmp_path / "svimo" / WEIGHTS_NAME))
    assert len(written) == 8 and written["w0"].numel() * 4 == SIZE_MB * 2**20 // 8


def test_an_export_is_whole_or_absent(tmp_path: Path, monkeypatch):
    """A failure mid-write leaves no weights file under the real name (and no config.json,
    which marks a complete directory)."""
    def fail(state, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        write_pretrained("SViMo", load_config(flavour="svimo-tiny"), {"w": torch.ones(3)},
                         str(tmp_path / "svimo"))
    assert [p.name for p in (tmp_path / "svimo").iterdir()] == []
