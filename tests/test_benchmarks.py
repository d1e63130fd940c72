"""The benchmark suite's measuring tools against independent computations, and its sweep section
end to end (the figures themselves are for `python -m benchmarks`, not for tests)."""
import numpy as np
import pytest
import torch

from benchmarks.measure import linear_fit, peak_memory_bytes
from benchmarks.sweep_overhead import projected_ratio, sweep_overhead


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


@pytest.mark.slow
def test_sweep_section_times_every_trial(tmp_path):
    # 4 trials of ~1.5 s, 2 at a time: two slots cannot do more than 2 x the span of work,
    # so span >= ideal; the command holds the span
    result = sweep_overhead(trials=4, trial_seconds=1.5, concurrency=2)
    assert result["trial s (mean)"] > 0.5
    assert result["ideal s"] == pytest.approx(2 * result["trial s (mean)"], rel=1e-9)
    assert result["span / ideal"] >= 0.99
    assert result["command s"] > result["span s"]
    assert result["command / ideal"] == pytest.approx(result["command s"] / result["ideal s"])
    # the projection keeps the overhead in seconds: at the measured trial length it is the ratio
    assert projected_ratio(result, result["trial s (mean)"]) == pytest.approx(
        result["command / ideal"], rel=1e-9)
    assert 1 < projected_ratio(result, 20.0) < result["command / ideal"]
