"""The decay of a gradient-norm curve: how fast ||dL/dh_t|| falls into the past, and how far.

Plain numpy, so the report and the per-run figures use it without importing torch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DECAY_THRESHOLD = 1e-3  # a curve's horizon: where it falls below this fraction of its peak


def log_safe(values) -> np.ndarray:
    """Values usable on a log scale; everything else becomes NaN."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)


@dataclass(frozen=True)
class DecayFit:
    """How fast ||dL/dh_t|| falls with the distance d = t_last - t from the end of the sequence.

    Both numbers look only at the curve from its maximum backwards in time: where the loss is
    injected late (copy task: the recall steps at the end), the steps after the maximum show
    how the loss enters, not how the gradient decays.
    slope: least-squares slope of ln ||dL/dh_t|| against d over that part (per step; -a for
        exp(-a d)); 0 when the maximum is the first step (nothing decays into the past, as when
        a long memory sums the losses of every later step); nan with under two usable points.
    horizon: the first distance at which the norm is below threshold * max; nan when it never
        gets there within the sequence.
    fit_horizon: the same distance read off the fitted line, ln(threshold) / slope, which
        extrapolates past the sequence (inf when the fit does not decay).
    """

    slope: float
    intercept: float
    horizon: float
    fit_horizon: float
    n_points: int

    @property
    def factor_per_step(self) -> float:
        return math.exp(self.slope) if math.isfinite(self.slope) else math.nan


def fit_decay(t: Sequence[float], grad_norm: Sequence[float],
              threshold: float = DECAY_THRESHOLD) -> DecayFit:
    """Fit ln ||dL/dh_t|| linearly in the distance from the end; see DecayFit."""
    t = np.asarray(t, dtype=float)
    norm = log_safe(grad_norm)
    order = np.argsort(-t, kind="stable")  # distance 0 (the last step) first
    t, norm, raw = t[order], norm[order], np.asarray(grad_norm, dtype=float)[order]
    if np.isfinite(norm).sum() < 2:
        return DecayFit(math.nan, math.nan, math.nan, math.nan, int(np.isfinite(norm).sum()))
    peak = int(np.nanargmax(norm))
    distance, tail = t[0] - t, np.arange(len(t)) >= peak
    usable = tail & np.isfinite(norm)
    # an underflow to 0 is below any threshold, though it cannot enter the log fit
    below = tail & (np.where(np.isnan(raw), np.inf, raw) < threshold * norm[peak])
    horizon = float(distance[np.argmax(below)]) if below.any() else math.nan
    if usable.sum() < 2:  # the maximum is the first usable step
        return DecayFit(0.0, math.log(norm[peak]), horizon, math.inf, int(usable.sum()))
    slope, intercept = np.polyfit(distance[usable], np.log(norm[usable]), 1)
    return DecayFit(float(slope), float(intercept), horizon,
                    slope_horizon(float(slope), threshold), int(usable.sum()))


def slope_horizon(slope: float, threshold: float = DECAY_THRESHOLD) -> float:
    """The distance at which exp(slope * d) falls to `threshold`: inf when it does not decay."""
    if math.isnan(slope):
        return math.nan
    return math.log(threshold) / slope if slope < 0 else math.inf
