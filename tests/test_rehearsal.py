"""The full-width rehearsal of the svimo-5b GPU run on CPUs (`benchmarks/rehearsal.py`):
paper-width SViMo with 2 blocks, Ray Train + DeepSpeed ZeRO-3 in bf16 on 2 gloo ranks, two
resolution stages with a stop at the boundary and a resume across it, then sampling from
the exported weights. Slow: minutes on 2 cores (figures in docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import safetensors

from benchmarks.rehearsal import STAGES, rehearse
from hoi import artifacts


@pytest.mark.slow
def test_the_5b_code_paths_work_together_at_the_paper_width(tmp_path: Path, ray_local):
    figures = rehearse(tmp_path, layers=2, sample_steps=2)
    stopped, resumed = figures["stopped"], figures["resumed"]
    # stopped at the boundary (its checkpoint names stage 1), resumed into stage 2
    assert (stopped["step"], stopped["stage"]) == (STAGES[0][2], 0)
    assert resumed["resumed_from"] == STAGES[0][2] and resumed["stage"] == 1
    assert resumed["step"] == sum(s[2] for s in STAGES)
    for metrics in (stopped, resumed):
        assert np.isfinite(metrics["total"]) and np.isfinite(metrics["vid"])
    assert "svimo" not in stopped and "svimo" in resumed  # VID's warm-up, then a joint step
    model = Path(figures["model"])
    state = artifacts.verify(model.parent)
    assert (state.stage, state.consumed, state.world_size) == (1, STAGES[1][2], 2)
    # the exported weights: gathered from ZeRO-3's partitions, in bf16, at the paper's width
    config = json.loads((model / "svimo" / "config.json").read_text())["config"]
    assert config["model"]["num_heads"] * config["model"]["head_dim"] == 3072
    assert config["model"]["text_embed_dim"] == 4096 and config["model"]["max_text_tokens"] == 226
    with safetensors.safe_open(str(model / "svimo" / "model.safetensors"), "pt") as f:
        table = f.get_tensor("pos_embedding")
        weight = f.get_tensor("transformer_blocks.1.ff.net.0.proj.weight")
    assert table.shape == (1, 226 + 3 * 4 * 6, 3072)  # the learned table at stage 2's grid
    assert weight.shape == (4 * 3072, 3072) and str(weight.dtype) == "torch.bfloat16"
    sample = figures["sample"]
    assert sample.video.shape == (9, 64, 96, 3) and sample.joints.shape == (9, 42, 3)
    assert np.isfinite(sample.joints).all() and np.isfinite(sample.points).all()
    assert 0 < resumed["peak_host_gb"] < 20
