"""Writing and reading inference weights without a second copy of them in memory (at 5B the
16-bit weights alone are 12 GB: on rank 0 when exporting, in each Serve replica loading)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from hoi.artifacts import CONFIG_NAME, MODEL_SECTIONS, WEIGHTS_NAME, write_pretrained
from hoi.config import load_config
from hoi.model.svimo import SViMo

# A process that holds SIZE_MB of weights, writes them and reports how much its peak resident
# memory grew while writing (ru_maxrss: kB on Linux).
PEAK = """
import resource, sys, torch
from hoi.config import load_config
from hoi.artifacts import write_pretrained
state = {f"w{i}": torch.ones(SIZE_MB * 2**18 // 8) for i in range(8)}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
write_pretrained("SViMo", load_config(flavour="svimo-tiny"), state, sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
SIZE_MB = 400


def test_a_local_export_does_not_hold_the_weights_twice(tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", PEAK.replace("SIZE_MB", str(SIZE_MB)),
                           str(tmp_path / "svimo")], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
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


# A process that loads a saved SViMo of about SIZE_MB and reports how much its peak resident
# memory grew while loading (the weights themselves must be there once).
LOAD_PEAK = """
import resource, sys
from hoi.model.svimo import SViMo
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = SViMo.from_pretrained(sys.argv[1])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_loading_holds_the_weights_once(tmp_path: Path):
    """Not a bytes object of the whole file first (12 GB for a 5B Serve replica, before any
    tensor is on the GPU): the weights come from the file (streamed to disk from S3)."""
    cfg = load_config(flavour="svimo-tiny", overrides=[
        "--model.num_heads", "16", "--model.head_dim", "64", "--model.num_layers", "4"])
    model = SViMo(cfg)
    size_mb = sum(p.numel() * 4 for p in model.state_dict().values()) / 2**20
    model.save_pretrained(str(tmp_path / "svimo"))
    del model
    done = subprocess.run([sys.executable, "-c", LOAD_PEAK, str(tmp_path / "svimo")],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    grown_mb = int(done.stdout.split()[-1])
    # the tensors are backed by the file's pages (safetensors maps it): loading adds nothing
    # until the weights are used (a bytes object of the file held them all: 182 of 204 MB)
    assert size_mb > 150 and grown_mb < 0.25 * size_mb, (size_mb, grown_mb)


def test_a_network_keeps_the_model_sections_of_its_run_config(tmp_path: Path):
    """config.json holds what builds and runs the network, not the run's serve, storage or
    ray sections (which name the training run's endpoints, buckets and cluster)."""
    cfg = load_config(flavour="svimo-tiny", overrides=[
        "--storage.endpoint_url", "http://127.0.0.1:9", "--serve.results", "/run/results",
        "--model.motion_attention_mask", "true", "--loop.vid_warmup_steps", "7"])
    SViMo(cfg).save_pretrained(str(tmp_path / "svimo"))
    saved = json.loads((tmp_path / "svimo" / CONFIG_NAME).read_text())["config"]
    assert tuple(saved) == MODEL_SECTIONS
    loaded = SViMo.from_pretrained(str(tmp_path / "svimo")).config
    assert loaded.model == cfg.model and loaded.loop == cfg.loop and loaded.data == cfg.data
    assert loaded.storage.endpoint_url is None and loaded.serve.results != "/run/results"
