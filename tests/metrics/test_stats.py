import math

import numpy as np
import pytest
import torch

from hoi.metrics.stats import standard_error


def test_the_standard_error_is_the_sample_spread_over_the_root_of_the_count():
    values = [1.0, 2.0, 3.0, 7.0]
    expected = np.std(values, ddof=1) / 2
    assert standard_error(values) == pytest.approx(expected)
    # any shape and dtype: a bf16 tensor of per-clip figures
    assert standard_error(torch.tensor(values, dtype=torch.bfloat16).reshape(2, 2)) \
        == pytest.approx(expected)
    assert standard_error([5.0, 5.0, 5.0]) == 0.0


def test_one_value_has_no_spread_to_measure():
    assert math.isnan(standard_error([3.0])) and math.isnan(standard_error([]))
