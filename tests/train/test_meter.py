"""The training meter: a logging window's means, and the one collective that averages them
across workers, which must run on the training device (NCCL reduces CUDA tensors only; gloo
reduces CPU ones too, so a CPU run cannot show the fault by failing)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from hoi.config import load_config
from hoi.train.meter import Meter


def test_the_window_is_reduced_on_the_training_device(monkeypatch):
    """The tensors handed to the collectives (the window's means, the memory peaks) live on
    the meter's device, whatever device that is. The meta device stands in for cuda: a tensor
    built on the host would show up as cpu; the report then fails reading meta values back,
    after both collectives."""
    seen: list[tuple[torch.device, torch.dtype]] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, *args, **kwargs: seen.append(
        (tensor.device, tensor.dtype)))
    device = torch.device("meta")
    meter = Meter(load_config(flavour="svimo-tiny"), 2, None, device)
    meter.micro_step({"total": torch.tensor(1.0), "vid": torch.tensor(0.5)})
    meter.step("joint")
    with pytest.raises((NotImplementedError, RuntimeError), match="meta"):
        meter.report()
    assert seen == [(device, torch.float64)] * 2  # NCCL reduces float64


def test_a_window_reports_the_mean_of_its_micro_steps_and_its_throughput():
    cfg = load_config(flavour="svimo-tiny", overrides=["--train.batch_size", "2",
                                                       "--train.gradient_accumulation", "2"])
    meter = Meter(cfg, 1, None, torch.device("cpu"))
    for total in (1.0, 3.0, 5.0, 7.0):  # two optimiser steps of two micro-steps
        meter.micro_step({"total": torch.tensor(total), "vid": torch.tensor(total / 10)})
        if total in (3.0, 7.0):
            meter.step("joint")
    meter.waited(0.0)
    row = meter.report()
    assert row["total"] == pytest.approx(4.0) and row["vid"] == pytest.approx(0.4)
    # 2 steps x 4 clips in the window's seconds
    assert row["samples_per_s"] == pytest.approx(8 / (2 * row["step_seconds"]))
    assert row["tokens_per_s"] == pytest.approx(row["samples_per_s"] * cfg.sequence_length)
    assert 0.1 < row["peak_host_gb"] < 24 and "peak_device_gb" not in row  # a CPU run
