"""benchmarks/gpu.py: the same parts that measure svimo-5b on a GPU, run at svimo-tiny size on
the CPU (the figures themselves are recorded from GPU runs in docs/benchmarks.md)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu
from hoi.config import load_config


def test_saved_bytes_counts_what_autograd_keeps_for_backward():
    x = torch.randn(100, 10, requires_grad=True)
    y = torch.randn(100, 10, requires_grad=True)
    # x * y saves both factors; (x * y).exp() saves its output too, all float32
    assert gpu.saved_bytes(lambda: x * y) == 2 * 1000 * 4
    assert gpu.saved_bytes(lambda: (x * y).exp()) == 3 * 1000 * 4
    with torch.no_grad():
        assert gpu.saved_bytes(lambda: (x * y).exp()) == 0


def test_block_flops_are_the_forward_flops_of_one_layer():
    cfg = load_config(flavour="svimo-5b")
    flops = gpu.svimo_forward_flops(cfg)
    per_block = gpu.block_flops(cfg)
    # blocks hold nearly everything: 42 of them are the forward but for embeddings and heads
    assert 0.99 * flops["total"] < cfg.model.num_layers * per_block < flops["total"]


def test_every_part_runs_on_the_cpu_at_tiny_size(tmp_path, capsys):
    """The command the GPU machine runs, at svimo-tiny on the CPU: every part, the train step
    through hoi.train's engine and meter under a (gloo) process group."""
    out = tmp_path / "gpu.json"
    assert gpu.main(["--flavour", "svimo-tiny", "--device", "cpu", "--dtype", "float32",
                     "--vae", "codec", "--repeats", "1", "--train-steps", "1",
                     "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["command"].startswith("python benchmarks/gpu.py") and report["machine"]
    rows = {row["what"]: row for row in report["rows"]}
    assert not [row for row in report["rows"] if "error" in row and row["part"] != "attention"]
    # SDPA's flash and math kernels exist on CPUs, cuDNN and memory-efficient do not
    assert rows["attention, sdpa flash"]["fwd+bwd TFLOP/s"] > 0
    assert rows["attention, sdpa math"]["fwd TFLOP/s"] > 0
    assert "error" in rows["attention, sdpa cudnn"]
    assert rows["one block, fwd + bwd"]["TFLOP/s"] > 0
    train = rows["train step, ZeRO-3 fp32, 2 blocks"]
    assert train["backend"] == "gloo" and train["TFLOP/s"] > 0 and train["s"] > 0
    assert train["loss"] > 0 and train["peak GB"] > 0
    parts = ("DiT, 1 block(s), batch 2 (CFG 6)", "DiT, 2 block(s), batch 2 (CFG 6)", "VID",
             "Proj (motion video)", "VAE encode (codec)", "VAE decode (codec, once per sample)")
    assert all(rows[name]["s"] > 0 for name in parts)
    step = rows["sampling step, 2 blocks (extrapolated)"]["s"]
    assert step == pytest.approx(sum(rows[name]["s"] for name in parts[1:5])
                                 + rows["VID"]["s"], rel=0.02)  # one DiT, VID twice
    assert rows["50 steps + decode (extrapolated)"]["s"] > 50 * step
    memory = [rows[f"ZeRO-3, micro-batch {b}, 8 GPUs"] for b in (1, 2, 3, 4)]
    assert memory[3]["activations GB"] == pytest.approx(4 * memory[0]["activations GB"],
                                                        rel=0.01)
    assert memory[0]["states GB"] == pytest.approx(
        2 * rows["ZeRO-3, micro-batch 1, 16 GPUs"]["states GB"], rel=0.01)
    # LoRA: the same activations; more rank, more states; rank 16 below full training (at
    # svimo-tiny's widths a rank-128 adapter outgrows the weights it adapts)
    lora = [rows[f"ZeRO-3 LoRA rank {r}, micro-batch 1, 8 GPUs"] for r in (16, 64, 128)]
    assert all(r["activations GB"] == memory[0]["activations GB"] for r in lora)
    assert memory[0]["states GB"] > lora[0]["states GB"]
    assert lora[0]["states GB"] < lora[1]["states GB"] < lora[2]["states GB"]
    assert "one block, fwd + bwd" in capsys.readouterr().out


def test_a_failing_part_is_a_row_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(gpu, "block_rows", broken)
    out = tmp_path / "gpu.json"
    assert gpu.main(["--flavour", "svimo-tiny", "--device", "cpu", "--dtype", "float32",
                     "--parts", "block,memory", "--json", str(out)]) == 1
    rows = json.loads(out.read_text())["rows"]
    assert rows[0] == {"what": "block: failed", "error": "RuntimeError: no such kernel",
                       "part": "block"}
    assert any(row["what"].startswith("ZeRO-3, micro-batch 1") for row in rows)


def test_without_cuda_the_default_device_is_refused(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gpu.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err
