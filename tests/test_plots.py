"""Per-run figures and the decay fit, on synthetic run directories with known numbers."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from gru_sweep import plots
from gru_sweep.decay import fit_decay

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def gradnorm_rows(steps, layers, seq_len, rate, gates=("z", "r")):
    """Long-format gradnorms: norm exp(-rate[layer] * (T - t)), gate stats linear in t."""
    rows = []
    for step in steps:
        for layer in layers:
            for t in range(1, seq_len + 1):
                row = {"step": step, "layer": layer, "t": t,
                       "grad_norm": math.exp(-rate[layer] * (seq_len - t)),
                       "cell_grad_norm": np.nan}
                for k, gate in enumerate(gates):
                    row |= {f"{gate}_mean": t / seq_len / (k + 1), f"{gate}_hi": 0.1 * k,
                            f"{gate}_lo": 0.2}
                rows.append(row)
    return pd.DataFrame(rows)


def write_run(run_dir, *, status="completed", seq_len=12, rate=(0.5,), gates=("z", "r"),
              probe=True, diverged_values=False):
    run_dir.mkdir(parents=True)
    steps = np.arange(0, 50, 10)
    train = pd.DataFrame({"epoch": 0, "step": steps, "train/loss": 1.0 / (1 + steps)})
    val = pd.DataFrame({"epoch": 0, "step": steps[1::2], "val/loss": 1.0 / (1 + steps[1::2]),
                        "val/recall_acc": steps[1::2] / 50})
    metrics = pd.concat([train, val], ignore_index=True)
    if diverged_values:
        metrics.loc[metrics.index[-3:], ["train/loss", "val/loss"]] = [np.inf, np.nan]
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    if probe:
        frame = gradnorm_rows(steps, range(len(rate)), seq_len, rate, gates)
        if diverged_values:
            last = frame["step"] == steps[-1]
            frame.loc[last, "grad_norm"] = np.nan
            frame.loc[frame.index[:3], "grad_norm"] = [0.0, np.inf, -1.0]
        frame.to_csv(run_dir / "gradnorms.csv", index=False)
    summary = {"status": status, "task": "copy", "cell": "custom_gru", "gate_init": "chrono",
               "seq_len": seq_len, "seed": 0, "monitor": "loss", "final": {"val/loss": 0.1},
               "baseline": {"loss": 0.3}, "steps": 40, "run_dir": str(run_dir)}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def assert_png(path, min_size=(300, 200)):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]


# ----------------------------------------------------------------------------- decay fit

@pytest.mark.parametrize("rate", [0.05, 0.37, 1.3])
def test_fit_decay_recovers_exponential_rate(rate):
    seq_len = 40
    t = np.arange(1, seq_len + 1)
    fit = fit_decay(t, np.exp(-rate * (seq_len - t)))
    assert fit.slope == pytest.approx(-rate, abs=1e-6)
    assert fit.intercept == pytest.approx(0.0, abs=1e-6)
    assert fit.factor_per_step == pytest.approx(math.exp(-rate), rel=1e-6)
    assert fit.fit_horizon == pytest.approx(math.log(1e3) / rate, rel=1e-6)
    reached = math.log(1e3) / rate < seq_len - 1
    # first integer distance with exp(-rate d) < 1e-3
    expected = math.floor(math.log(1e3) / rate) + 1 if reached else None
    assert (fit.horizon == expected) if reached else math.isnan(fit.horizon)


def test_fit_decay_skips_unusable_points_and_handles_flat_curves():
    t = np.arange(10)
    norm = np.exp(-0.2 * (9 - t))
    norm[[2, 5]] = [np.nan, 0.0]  # a NaN and an underflow are left out of the log fit
    assert fit_decay(t, norm).slope == pytest.approx(-0.2, abs=1e-9)
    flat = fit_decay(t, np.ones(10))
    assert flat.slope == pytest.approx(0.0, abs=1e-12)
    assert flat.fit_horizon == math.inf and math.isnan(flat.horizon)
    assert math.isnan(fit_decay(t, np.full(10, np.nan)).slope)


def test_horizon_counts_from_the_peak_not_from_the_end():
    # the last step's norm is small (no loss there); the curve peaks one step earlier
    t = np.arange(8)
    norm = np.array([1e-5, 1e-4, 1e-3, 2e-2, 1e-1, 1.0, 10.0, 1.0])
    # below 1e-3 * 10 first at t=2, i.e. distance 5 from the end (t=7)
    assert fit_decay(t, norm).horizon == 5


def test_fit_decay_uses_the_curve_from_its_maximum_backwards():
    # copy task: the loss enters over the last 5 steps, so the curve rises there; the decay
    # into the past, exp(-0.3 d) from the maximum, is what the slope must measure
    t = np.arange(40)
    norm = np.exp(-0.3 * (34 - t))
    norm[35:] = [0.2, 0.5, 0.1, 0.4, 0.3]
    fit = fit_decay(t, norm)
    assert fit.slope == pytest.approx(-0.3, abs=1e-9) and fit.n_points == 35
    assert fit.horizon == 5 + math.floor(math.log(1e3) / 0.3) + 1
    # the maximum at the first step: nothing decays into the past
    growing = fit_decay(t, np.exp(0.1 * (39 - t)))
    assert growing.slope == 0 and growing.fit_horizon == math.inf and math.isnan(growing.horizon)


def test_decay_fits_per_layer_at_last_probe_step():
    frame = gradnorm_rows([0, 10, 20], [0, 1], 15, {0: 0.25, 1: 0.6})
    frame.loc[frame["step"] == 20, "grad_norm"] = np.nan  # diverged: last probe unusable
    frame.loc[frame["step"] == 0, "grad_norm"] = 1.0  # earlier probe: flat
    fits = plots.decay_fits(frame)
    assert list(fits["layer"]) == [0, 1] and set(fits["step"]) == {10}
    np.testing.assert_allclose(fits["slope"], [-0.25, -0.6], atol=1e-6)
    assert plots.decay_fits(frame, step=0)["slope"].abs().max() < 1e-9


# ----------------------------------------------------------------------------- plots

def test_plot_gradnorm_curves_log_axis_masks_unusable_values():
    fig = Figure()
    ax = fig.subplots()
    values = np.array([1.0, 0.0, 0.1, np.inf, 0.01])
    curve = plots.Curve(np.arange(5.0), values, label="a")
    assert plots.plot_gradnorm_curves(ax, [curve])
    assert ax.get_yscale() == "log"
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [1.0, np.nan, 0.1, np.nan, 0.01])
    empty = fig.subplots()
    assert not plots.plot_gradnorm_curves(empty, [plots.Curve(np.arange(3.0), np.zeros(3))])
    assert empty.get_yscale() == "linear"


def test_baseline_lookup():
    assert plots.baseline_for("val/loss", {"loss": 0.25}) == 0.25
    assert plots.baseline_for("val/loss_rel_baseline", {"loss": 0.25}) == 1.0
    assert plots.baseline_for("val/recall_acc", {"loss": 0.25}) is None
    assert plots.monitor_column({"monitor": "loss"}) == "val/loss"
    assert plots.monitor_column({}) == "val/loss"


def test_learning_curves_draw_the_baseline():
    metrics = pd.DataFrame({"step": [0, 10, 10], "train/loss": [1.0, 0.5, np.nan],
                            "val/loss": [np.nan, np.nan, 0.4]})
    fig = plots.learning_curves_figure(metrics, {"monitor": "loss", "baseline": {"loss": 0.3}})
    ax = fig.axes[0]
    baseline = [line for line in ax.lines if line.get_label() == "baseline"]
    assert len(baseline) == 1 and baseline[0].get_ydata()[0] == 0.3
    val = next(line for line in ax.lines if line.get_label() == "val/loss")
    np.testing.assert_array_equal(val.get_ydata(), [0.4])


def test_write_run_figures_full_run(tmp_path):
    run_dir = write_run(tmp_path / "run", rate=(0.5, 0.2))
    written = plots.write_run_figures(run_dir)
    assert [p.name for p in written] == ["learning_curves.png", "gradnorm_curves.png",
                                         "gradnorm_heatmap.png", "gate_stats.png"]
    for path in written:
        assert path.parent == run_dir / "figures"
        assert_png(path)


def test_write_run_figures_without_probe_or_gates(tmp_path):
    no_probe = write_run(tmp_path / "no_probe", probe=False)
    assert [p.name for p in plots.write_run_figures(no_probe)] == ["learning_curves.png"]
    rnn = write_run(tmp_path / "rnn", gates=())
    assert "gate_stats.png" not in [p.name for p in plots.write_run_figures(rnn)]
    assert plots.write_run_figures(tmp_path / "missing") == []


def test_write_run_figures_diverged_run(tmp_path):
    run_dir = write_run(tmp_path / "run", status="diverged", diverged_values=True)
    written = plots.write_run_figures(run_dir)
    assert len(written) == 4
    for path in written:
        assert_png(path)
    gradnorms = plots.read_gradnorms(run_dir)
    assert plots.last_probe_step(gradnorms) == 30
