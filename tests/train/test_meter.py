"""The training meter: a logging window's means, and the one collective that averages them
across workers, which must run on the training device (NCCL reduces CUDA tensors only; gloo
reduces CPU ones too, so a CPU run cannot show the fault by failing)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from hoi.config import load_config
from hoi.train.meter import Meter


class _Reduced(Exception):
    """Raised by the spy below once it has seen the collective's tensor."""


def test_the_window_is_reduced_on_the_training_device(monkeypatch):
    """The tensor handed to all_reduce lives on the meter's device, whatever device that is.
    The meta device stands in for cuda: a tensor built on the host would show up as cpu."""
    seen: list[tuple[torch.device, torch.dtype]] = []

    def all_reduce(tensor: torch.Tensor, *args, **kwargs) -> None:
        seen.append((tensor.device, tensor.dtype))
        raise _Reduced

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    device = torch.device("meta")
    meter = Meter(load_config(flavour="svimo-tiny"), 2, None, device)
    meter.micro_step({"total": torch.tensor(1.0), "vid": torch.tensor(0.5)})
    meter.step("joint")
    with pytest.raises(_Reduced):
        meter.report()
    assert seen == [(device, torch.float64)]  # NCCL reduces float64


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
