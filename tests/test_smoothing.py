"""analysis/smoothing.py: TensorBoard's debiased EMA by hand, against its plain loop, and per run in compare."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.compare import smooth_runs
from analysis.smoothing import ema
from conftest import imported_packages


def tensorboard_loop(values, weight: float) -> list[float]:
    """``resmoothDataset`` of TensorBoard's line chart, line by line (without its shortcut for constant series)."""
    last, num_accum, out = 0.0, 0, []
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1 - weight) * value
        num_accum += 1
        out.append(last / (1 - weight**num_accum))
    return out


def test_ema_by_hand():
    # w = 0.5: last = 0.5, 1.25, (NaN skipped), 2.625; debiased by 1 - 0.5^t = 0.5, 0.75, 0.875.
    got = ema(np.array([1.0, 2.0, np.nan, 4.0]), 0.5)
    np.testing.assert_allclose(got, [1.0, 5 / 3, np.nan, 3.0], rtol=1e-15)
    np.testing.assert_array_equal(ema([3.0, -1.0, 7.0], 0.0), [3.0, -1.0, 7.0])  # weight 0: no smoothing
    np.testing.assert_allclose(ema(np.full(50, 0.25), 0.99), 0.25, rtol=1e-12)  # debiased: a constant stays
    assert ema([], 0.6).shape == (0,)
    np.testing.assert_array_equal(ema([np.inf, np.nan], 0.6), [np.inf, np.nan])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.99])
def test_ema_equals_tensorboards_loop(seed, weight):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=int(rng.integers(1, 300)))
    values[rng.random(values.size) < 0.1] = np.nan  # gaps, as a metric not logged at some steps
    np.testing.assert_allclose(ema(values, weight), tensorboard_loop(values, weight), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weight", [-0.1, 1.0, float("nan")])
def test_ema_refuses_a_weight_outside_0_1(weight):
    with pytest.raises(ValueError, match="smoothing weight"):
        ema([1.0, 2.0], weight)


def test_smooth_runs_smooths_each_run_over_steps_in_order():
    tidy = pd.DataFrame({"run_id": ["b", "a", "a", "b", "a"], "step": [2, 3, 1, 1, 2],
                         "value": [4.0, 9.0, 1.0, 2.0, 2.0], "method": "m"})
    got = smooth_runs(tidy, 0.5)
    assert list(zip(got["run_id"], got["step"])) == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]
    np.testing.assert_allclose(got["value"], [*ema([1.0, 2.0, 9.0], 0.5), *ema([2.0, 4.0], 0.5)])
    assert (got["method"] == "m").all()


def test_analysis_smoothing_imports_no_torch_or_upper_layers():
    assert imported_packages("analysis/smoothing.py") <= {"__future__", "numpy", "scipy"}
