"""The benchmark suite's measuring tools against independent computations, and its sweep section
end to end (the figures themselves are for `python -m benchmarks`, not for tests)."""
import numpy as np
import pytest
import torch

from benchmarks.measure import linear_fit, peak_memory_bytes
from benchmarks.sweep_overhead import most_at_once, projected_ratio, sweep_overhead


def test_linear_fit_matches_numpy():
    xs = [100, 300, 1000, 3000, 10000]
    rng = np.random.default_rng(0)
    ys = [2.0 + 0.5 * x + rng.normal(0, 5) for x in xs]
    fit = linear_fit(xs, ys)
    slope, intercept = np.polyfit(xs, ys, 1)
    assert fit["slope"] == pytest.approx(slope, rel=1e-9)
    assert fit["intercept"] == pytest.approx(intercept, rel=1e-6, abs=1e-9)
    assert fit["r2"] == pytest.approx(np.corrcoef(xs, ys)[0, 1] ** 2, rel=1e-9)
    log_slope, _ = np.polyfit(np.log(xs), np.log(ys), 1)
    assert fit["exponent"] == pytest.approx(log_slope, rel=1e-9)


def test_peak_memory_sees_a_known_allocation():
    n = 4 * 2**20  # 4 Mi float32 = 16 MiB, freed before the next one is made

    def two_buffers():
        for _ in range(2):
            torch.ones(n).sum()

    peak = peak_memory_bytes(two_buffers, torch.device("cpu"))
    assert 16 * 2**20 <= peak < 17 * 2**20


def test_most_at_once_counts_overlapping_intervals():
    attempts = [{"started": a, "ended": b} for a, b in ((0, 10), (1, 4), (4, 6), (5, 7), (10, 11))]
    # brute force over every moment where a count can change
    moments = sorted({t for a in attempts for t in (a["started"], a["ended"])})
    brute = max(sum(a["started"] <= t < a["ended"] for a in attempts) for t in moments)
    assert most_at_once(attempts) == brute == 3


@pytest.mark.slow
def test_sweep_section_runs_the_trials_two_at_a_time():
    result = sweep_overhead(trials=4, trial_seconds=1.5, concurrency=2)
    assert result["most at once"] == 2  # Ray ran exactly `concurrency` trials side by side
    # the calibration sized the trials to roughly what was asked (loose: a shared machine)
    assert 0.5 < result["trial s (mean)"] < 6
    # two slots cannot do more than twice the span's worth of work, and the command holds it
    assert result["span / ideal"] >= 0.99
    assert result["command s"] > result["span s"]
    assert 1 < projected_ratio(result, 20.0) < result["command / ideal"]
