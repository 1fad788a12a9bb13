"""Smoothing of per-step curves for display: the app's "Smoothing" slider [ours, TensorBoard's].

Only what is drawn is smoothed; metrics, tables and reports use the values as
logged. Pure numpy/scipy: no torch, no pandas, no ``workbench``.
"""

from __future__ import annotations

import numpy as np


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average of one series, in the order given [ours, TensorBoard's].

    Over the finite values x_1, ..., x_T in order, with w = ``weight``:

        last_0 = 0,   last_t = w * last_(t-1) + (1 - w) * x_t,   smoothed_t = last_t / (1 - w^t),

    as TensorBoard's scalar charts compute it (``resmoothDataset`` in
    ``tensorboard/components/vz_line_chart2/line-chart.ts``). Dividing by
    1 - w^t removes the pull towards the initial 0: smoothed_1 = x_1, and a
    constant series stays constant (up to rounding). NaN and inf entries are
    returned unchanged and neither update ``last`` nor count in t. w = 0
    returns the values; w must lie in [0, 1). Returns float64, shaped like
    ``values`` flattened.
    """
    if not 0.0 <= weight < 1.0:  # also rejects NaN
        raise ValueError(f"smoothing weight={weight} is invalid; it must lie in [0, 1) (0 = no smoothing)")
    from scipy.signal import lfilter

    out = np.array(values, dtype=np.float64).reshape(-1)  # (T,) a copy: non-finite entries pass through
    finite = np.isfinite(out)
    t = np.arange(1, int(finite.sum()) + 1)  # (T_finite,) the count of finite values so far
    last = lfilter([1.0 - weight], [1.0, -weight], out[finite])  # the recurrence above, from last_0 = 0
    out[finite] = last / (1.0 - weight**t)
    return out
