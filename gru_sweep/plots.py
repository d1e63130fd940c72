"""Per-run figures, read back from a run directory's files (the decay fit is decay.fit_decay).

Everything here works on what a run writes (metrics.csv, gradnorms.csv, summary.json), so it
can run after the fact, for runs trained anywhere. Figures are built with matplotlib's object
API (`Figure` + the Agg canvas) rather than pyplot: nothing is registered in pyplot's global
figure list, so nothing needs closing, and a notebook's backend is left alone. The `plot_*`
functions draw on a given Axes, so a notebook (or report.py) can reuse them.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from gru_sweep.decay import DECAY_THRESHOLD, fit_decay, log_safe

METRICS_CSV = "metrics.csv"
GRADNORMS_CSV = "gradnorms.csv"
SUMMARY_JSON = "summary.json"
FIGURES_DIR = "figures"
DPI = 100

# One colour per gate name, the same in every figure.
GATE_COLORS = {"z": "tab:blue", "r": "tab:orange", "i": "tab:green", "f": "tab:red",
               "o": "tab:purple"}


# ----------------------------------------------------------------------------- reading files

def read_summary(run_dir: str | Path) -> dict:
    """summary.json as a dict; {} when missing or unreadable (a crashed trial may lack it)."""
    try:
        return json.loads((Path(run_dir) / SUMMARY_JSON).read_text())
    except (OSError, ValueError):
        return {}


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        frame = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return frame if len(frame) else None


def read_metrics(run_dir: str | Path) -> pd.DataFrame | None:
    """Lightning's CSVLogger metrics.csv (one sparse row per logging call), or None."""
    return _read_csv(Path(run_dir) / METRICS_CSV)


def read_gradnorms(run_dir: str | Path) -> pd.DataFrame | None:
    """The probe's long-format gradnorms.csv, or None when the probe was off."""
    return _read_csv(Path(run_dir) / GRADNORMS_CSV)


def monitor_column(summary: dict) -> str:
    """The logged column of the run's monitor metric: "loss" -> "val/loss"."""
    monitor = summary.get("monitor") or "loss"
    return monitor if "/" in monitor else f"val/{monitor}"


def baseline_for(metric: str, baseline: dict | None) -> float | None:
    """The task baseline of a logged metric ("val/loss" -> baseline["loss"]).

    Metrics named *_rel_baseline are relative to the baseline by definition, so theirs is 1.
    """
    name = metric.split("/", 1)[-1]
    if baseline and name in baseline and baseline[name] is not None:
        return float(baseline[name])
    return 1.0 if name.endswith("_rel_baseline") else None


def gate_names(gradnorms: pd.DataFrame) -> list[str]:
    """Gates with statistics in a gradnorms frame ("z", "r" for GRU; "i", "f", "o" for LSTM)."""
    return [c[: -len("_mean")] for c in gradnorms.columns
            if c.endswith("_mean") and gradnorms[c].notna().any()]


def last_probe_step(gradnorms: pd.DataFrame) -> int | None:
    """The last probe step with at least two usable norms (a diverged run's last ones are NaN)."""
    usable = gradnorms[np.isfinite(log_safe(gradnorms["grad_norm"].to_numpy(float)))]
    counts = usable.groupby("step").size()
    counts = counts[counts >= 2]
    return int(counts.index.max()) if len(counts) else None


def probe_slice(gradnorms: pd.DataFrame, step: int, layer: int) -> pd.DataFrame:
    """The rows of one probe step and layer, sorted by t."""
    rows = gradnorms[(gradnorms["step"] == step) & (gradnorms["layer"] == layer)]
    return rows.sort_values("t")


# ----------------------------------------------------------------------------- decay fit

def decay_fits(gradnorms: pd.DataFrame, step: int | None = None,
               threshold: float = DECAY_THRESHOLD) -> pd.DataFrame:
    """One DecayFit per layer at one probe step (default: the last usable one).

    Columns: layer, step, slope, factor_per_step, horizon, fit_horizon, n_points.
    """
    columns = ["layer", "step", "slope", "factor_per_step", "horizon", "fit_horizon", "n_points"]
    step = last_probe_step(gradnorms) if step is None else step
    if step is None:
        return pd.DataFrame(columns=columns)
    rows = []
    for layer in sorted(gradnorms["layer"].unique()):
        curve = probe_slice(gradnorms, step, layer)
        fit = fit_decay(curve["t"], curve["grad_norm"], threshold)
        rows.append([int(layer), step, fit.slope, fit.factor_per_step, fit.horizon,
                     fit.fit_horizon, fit.n_points])
    return pd.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------------------- reusable plots

@dataclass(frozen=True)
class Curve:
    """One ||dL/dh_t|| curve; lo/hi give an optional band (e.g. the spread over seeds)."""

    t: np.ndarray
    values: np.ndarray
    label: str | None = None
    color: object = None
    linestyle: str | tuple = "-"  # any matplotlib line style
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None


def plot_gradnorm_curves(ax: Axes, curves: Iterable[Curve], title: str | None = None) -> bool:
    """||dL/dh_t|| against t on a log y axis; returns False (and says so) when nothing is drawable.

    Zero, negative and non-finite norms (a diverged run, an underflow) are left out, breaking
    the line rather than breaking the log scale.
    """
    drawn = False
    for curve in curves:
        values = log_safe(curve.values)
        if not np.isfinite(values).any():
            continue
        ax.plot(curve.t, values, color=curve.color, linestyle=curve.linestyle,
                label=curve.label, linewidth=1.2)
        if curve.lo is not None and curve.hi is not None:
            ax.fill_between(curve.t, log_safe(curve.lo), log_safe(curve.hi),
                            color=curve.color, alpha=0.2, linewidth=0)
        drawn = True
    if drawn:
        ax.set_yscale("log")
    else:
        no_data(ax, "no finite gradient norms")
    ax.set_xlabel("t")
    ax.set_ylabel(r"$\|\partial L/\partial h_t\|$")
    if title:
        ax.set_title(title, fontsize="medium")
    return drawn


def plot_gate_stats(ax_mean: Axes, ax_saturated: Axes, frame: pd.DataFrame) -> bool:
    """Gate statistics over t of one probe: mean per gate on ax_mean; on ax_saturated the
    fraction of units above 0.9 (solid) and below 0.1 (dashed) per gate.

    `frame` holds t and the <gate>_mean/_hi/_lo columns of one probe step and layer (or their
    average over seeds). Returns False when the cell has no gates (vanilla RNN).
    """
    gates = gate_names(frame)
    for gate in gates:
        color = GATE_COLORS.get(gate)
        ax_mean.plot(frame["t"], frame[f"{gate}_mean"], color=color, label=gate)
        for suffix, style, text in (("hi", "-", "> 0.9"), ("lo", "--", "< 0.1")):
            if f"{gate}_{suffix}" in frame:
                ax_saturated.plot(frame["t"], frame[f"{gate}_{suffix}"], color=color,
                                  linestyle=style, label=f"{gate} {text}")
    for ax, ylabel in ((ax_mean, "gate mean"), (ax_saturated, "fraction saturated")):
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("t")
        ax.set_ylabel(ylabel)
        if gates:
            ax.legend(fontsize="x-small", ncol=2)
        else:
            no_data(ax, "no gates")
    return bool(gates)


def plot_learning_curve(ax: Axes, metrics: pd.DataFrame, column: str,
                        label: str | None = None, color: object = None) -> bool:
    """One logged metric against the training step (NaN/inf rows of a diverged run left out)."""
    if column not in metrics:
        return False
    rows = metrics[["step", column]].replace([np.inf, -np.inf], np.nan).dropna()
    if rows.empty:
        return False
    ax.plot(rows["step"], rows[column], label=label or column, color=color,
            marker="." if len(rows) < 30 else None)
    return True


def plot_baseline(ax: Axes, value: float | None, label: str = "baseline") -> None:
    if value is not None and math.isfinite(value):
        ax.axhline(value, color="black", linestyle="--", linewidth=1, label=label)


def auto_log_y(ax: Axes, values: Iterable[float]) -> None:
    """Log y when the (positive) values span more than two decades, as losses often do."""
    values = np.asarray(list(values), dtype=float)
    values = values[np.isfinite(values)]
    if len(values) and (values > 0).all() and values.max() > 100 * values.min():
        ax.set_yscale("log")


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="gray")


# ----------------------------------------------------------------------------- per-run figures

def run_title(summary: dict) -> str:
    parts = [str(summary[k]) for k in ("cell", "gate_init") if summary.get(k) is not None]
    if summary.get("seq_len") is not None:
        parts.append(f"T={summary['seq_len']}")
    if summary.get("seed") is not None:
        parts.append(f"seed {summary['seed']}")
    status = summary.get("status")
    return " · ".join(parts) + (f"  [{status}]" if status and status != "completed" else "")


def learning_curves_figure(metrics: pd.DataFrame, summary: dict) -> Figure:
    """The monitor metric (train and val) against the task baseline; other val metrics beside."""
    monitor = monitor_column(summary)
    name = monitor.split("/", 1)[-1]
    others = [c for c in metrics.columns if c.startswith("val/") and c != monitor]
    fig = Figure(figsize=(10 if others else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if others else 1, squeeze=False)[0]
    for column in (f"train/{name}", f"train/{name}_step", monitor):
        plot_learning_curve(axes[0], metrics, column)
    plot_baseline(axes[0], baseline_for(monitor, summary.get("baseline")))
    auto_log_y(axes[0], metrics[[c for c in metrics if c.endswith(name)]].to_numpy().ravel())
    axes[0].set_ylabel(name)
    for column in others:
        plot_learning_curve(axes[-1], metrics, column)
    for ax in axes:
        _mark_divergence(ax, metrics, summary)
        ax.set_xlabel("training step")
        if ax.has_data():
            ax.legend(fontsize="small")
        else:
            no_data(ax, "no finite values logged")
    fig.suptitle(run_title(summary) or "learning curves")
    return fig


def _mark_divergence(ax: Axes, metrics: pd.DataFrame, summary: dict) -> None:
    if summary.get("status") == "diverged" and metrics["step"].notna().any():
        step = metrics["step"].max()
        ax.axvline(step, color="red", linewidth=1, label=f"diverged (step {step:g})")


def gradnorm_curves_figure(gradnorms: pd.DataFrame, summary: dict) -> Figure:
    """||dL/dh_t|| against t, one panel per layer, one line per probe step coloured by step."""
    layers = sorted(gradnorms["layer"].unique())
    steps = sorted(gradnorms["step"].unique())
    norm = Normalize(min(steps), max(steps) if len(steps) > 1 else min(steps) + 1)
    cmap = colormaps["viridis"]
    fig = Figure(figsize=(5 * len(layers) + 1, 4), layout="constrained")
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, layer in zip(axes, layers):
        curves = [_probe_curve(gradnorms, step, layer, color=cmap(norm(step)))
                  for step in steps]
        last = probe_slice(gradnorms, steps[-1], layer)
        if "cell_grad_norm" in last and last["cell_grad_norm"].notna().any():
            curves.append(Curve(last["t"].to_numpy(), last["cell_grad_norm"].to_numpy(float),
                                label=r"$\|\partial L/\partial c_t\|$ (last)", color="black",
                                linestyle="--"))
        if plot_gradnorm_curves(ax, curves, title=f"layer {layer}") and len(curves) > len(steps):
            ax.legend(fontsize="small")
    fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes), label="training step")
    fig.suptitle(run_title(summary) or "gradient norm over time")
    return fig


def _probe_curve(gradnorms: pd.DataFrame, step: int, layer: int, **style) -> Curve:
    rows = probe_slice(gradnorms, step, layer)
    return Curve(rows["t"].to_numpy(float), rows["grad_norm"].to_numpy(float), **style)


def gradnorm_heatmap_figure(gradnorms: pd.DataFrame, summary: dict) -> Figure:
    """Training step x t heatmap of ||dL/dh_t|| on a log colour scale, one panel per layer."""
    layers = sorted(gradnorms["layer"].unique())
    fig = Figure(figsize=(5 * len(layers) + 1, 4), layout="constrained")
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    grids = [gradnorms[gradnorms["layer"] == layer].pivot_table(
        index="step", columns="t", values="grad_norm", aggfunc="mean", dropna=False)
        for layer in layers]
    positive = np.concatenate([log_safe(g.to_numpy()).ravel() for g in grids])
    positive = positive[np.isfinite(positive)]
    if len(positive):
        norm = LogNorm(positive.min(), max(positive.max(), positive.min() * 1.01))
    for ax, layer, grid in zip(axes, layers, grids):
        ax.set_title(f"layer {layer}", fontsize="medium")
        ax.set_xlabel("t")
        ax.set_ylabel("training step")
        if not len(positive):
            no_data(ax, "no finite gradient norms")
            continue
        image = _heatmap(ax, grid, norm)
    if len(positive):
        fig.colorbar(image, ax=list(axes), label=r"$\|\partial L/\partial h_t\|$")
    fig.suptitle(run_title(summary) or "gradient norm heatmap")
    return fig


def _heatmap(ax: Axes, grid: pd.DataFrame, norm: LogNorm):
    # Rows are probes in order; ticks name their training steps (probes need not be evenly spaced).
    t = grid.columns.to_numpy(float)
    data = np.ma.masked_invalid(log_safe(grid.to_numpy()))
    # grey cells: no usable norm (NaN, inf or 0), e.g. after a divergence
    cmap = colormaps["magma"].with_extremes(bad="lightgray")
    image = ax.imshow(data, aspect="auto", origin="lower", norm=norm, cmap=cmap,
                      interpolation="nearest",
                      extent=(t.min() - 0.5, t.max() + 0.5, -0.5, len(grid) - 0.5))
    ticks = np.unique(np.linspace(0, len(grid) - 1, min(len(grid), 6)).round().astype(int))
    ax.set_yticks(ticks, [f"{grid.index[i]:g}" for i in ticks])
    return image


def gate_stats_figure(gradnorms: pd.DataFrame, summary: dict, step: int) -> Figure:
    """Gate means and saturated fractions over t at one probe step, one row per layer."""
    layers = sorted(gradnorms["layer"].unique())
    fig = Figure(figsize=(10, 3 * len(layers) + 0.6), layout="constrained")
    axes = fig.subplots(len(layers), 2, squeeze=False)
    for (ax_mean, ax_saturated), layer in zip(axes, layers):
        plot_gate_stats(ax_mean, ax_saturated, probe_slice(gradnorms, step, layer))
        ax_mean.set_title(f"layer {layer}: gate mean", fontsize="medium")
        ax_saturated.set_title(f"layer {layer}: saturated fraction", fontsize="medium")
    fig.suptitle(f"{run_title(summary)}  (probe at step {step})")
    return fig


def write_run_figures(run_dir: str | Path) -> list[Path]:
    """Write run_dir/figures/*.png from the run's files; returns the paths written.

    learning_curves.png needs metrics.csv; gradnorm_curves.png, gradnorm_heatmap.png and
    gate_stats.png need gradnorms.csv (absent when the probe was off: then they are skipped).
    """
    run_dir = Path(run_dir)
    out = run_dir / FIGURES_DIR
    summary = read_summary(run_dir)
    written = []
    metrics = read_metrics(run_dir)
    if metrics is not None and "step" in metrics:
        written.append(save_figure(learning_curves_figure(metrics, summary),
                                   out / "learning_curves.png"))
    gradnorms = read_gradnorms(run_dir)
    if gradnorms is not None:
        written.append(save_figure(gradnorm_curves_figure(gradnorms, summary),
                                   out / "gradnorm_curves.png"))
        written.append(save_figure(gradnorm_heatmap_figure(gradnorms, summary),
                                   out / "gradnorm_heatmap.png"))
        step = last_probe_step(gradnorms)
        if gate_names(gradnorms) and step is not None:
            written.append(save_figure(gate_stats_figure(gradnorms, summary, step),
                                       out / "gate_stats.png"))
    return written
