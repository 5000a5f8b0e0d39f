"""Summaries of per-clip (or per-seed) figures."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def standard_error(values: torch.Tensor | Sequence[float]) -> float:
    """The standard error of the mean of `values`: their sample standard deviation over the
    square root of their number; NaN for fewer than two (no spread to measure)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    return (x.std() / math.sqrt(len(x))).item() if len(x) > 1 else math.nan
