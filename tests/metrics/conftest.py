"""One thread for the metric tests' tiny models and small frames."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny networks and small frames run faster on one thread, and far faster when other
    processes share the two cores (torch's OpenMP and OpenCV's workers spin-wait for a busy
    core: the autoencoder's 150 steps took 0.5 s on one thread, 100 s on two under load)."""
    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(before[0])
    cv2.setNumThreads(before[1])
