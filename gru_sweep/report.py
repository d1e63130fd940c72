"""The comparison page of a sweep: ``python -m gru_sweep.report SWEEP_DIR``.

Reads SWEEP_DIR/summary.csv (one row per trial: trial_id, status, the swept axes as dotted
config keys, final metrics such as val/loss, run_dir) and each trial's run directory
(summary.json for baselines, gradnorms.csv for the probe), and writes SWEEP_DIR/figures/*.png
and SWEEP_DIR/report.html, one self-contained page with the figures embedded:

(a) final metrics against sequence length, one line per (cell, gate_init), task baseline drawn;
(b) ||dL/dh_t|| over t at the last probe, overlaid per sequence length;
(c) gate statistics over t per configuration;
(d) the decay rate of ||dL/dh_t|| per trial (decay.fit_decay) and over seeds;
and the summary table with each trial's status.

Seeds are aggregated (mean, std, count); a diverged trial is left out of the means, marked in
the figures and highlighted in the tables. When the sweep has no sequence-length axis, the
x axis falls back to another numeric axis that varies, or to the configurations themselves.
"""
from __future__ import annotations

import argparse
import base64
import html
import math
import re
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from gru_sweep import plots
from gru_sweep.decay import DECAY_THRESHOLD, log_safe, slope_horizon

SUMMARY_CSV = "summary.csv"
REPORT_HTML = "report.html"
FIXED_COLUMNS = ("trial_id", "status", "run_dir")
# Columns of summary.csv that describe where and how a trial ran, not what it ran.
BOOKKEEPING_COLUMNS = ("step", "node_ip", "node_id", "gpu_ids", "attempts", "error")
# Replicates of one configuration: means and spreads are taken over these.
REPLICATE_COLUMNS = ("seed", "rep")
# Where each role's value is found: the first of these summary.csv columns, else summary.json.
ROLE_COLUMNS = {"cell": ("cell.name", "cell"), "gate_init": ("gate_init.scheme", "gate_init"),
                "seq_len": ("data.seq_len", "seq_len"), "seed": ("seed",)}
MAX_METRIC_PANELS = 4
# Line style and marker per gate_init (colour is per cell); ":" is kept for diverged trials and
# "--" for the task baseline.
LINESTYLES = ("-", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2, 2, 2)),
              (0, (5, 2, 1, 2, 1, 2)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# ----------------------------------------------------------------------------- loading

@dataclass
class Sweep:
    """A sweep directory read back.

    trials: summary.csv plus `_config` (the configuration label: cell, gate_init and every
    other varying axis except the x axis and the seed), `_x` (the x-axis value, 0 when there
    is none), `_run` (the run directory found, or None) and `_summary` (its summary.json).
    """

    dir: Path
    trials: pd.DataFrame
    columns: list[str]  # summary.csv's own columns, in its order
    roles: dict[str, str]
    x_axis: str | None
    config_axes: list[str]
    metrics: list[str]
    gradnorms: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def configs(self) -> list[str]:
        return sorted(self.trials["_config"].unique())

    @cached_property
    def styles(self) -> dict[str, dict]:
        """Matplotlib color, linestyle and marker per configuration.

        When cell and gate_init alone tell the configurations apart: colour by cell, line style
        and marker by gate_init, so one cell's inits read as a family. Otherwise (another axis
        varies too, or more than ten cells) every configuration gets its own colour.
        """
        pairs = (self.trials.groupby("_config")[[self.roles["cell"], self.roles["gate_init"]]]
                 .first().astype(object).fillna("?").astype(str))  # "?": not recorded
        cells, inits = sorted(pairs.iloc[:, 0].unique()), sorted(pairs.iloc[:, 1].unique())
        by_pair = not pairs.duplicated().any() and len(cells) <= 10
        colors = _palette(len(self.configs))
        styles = {}
        for i, config in enumerate(self.configs):
            cell, init = pairs.loc[config]
            if by_pair:
                j = inits.index(init)
                styles[config] = {"color": colormaps["tab10"](cells.index(cell)),
                                  "linestyle": LINESTYLES[j % len(LINESTYLES)],
                                  "marker": MARKERS[j % len(MARKERS)]}
            else:
                styles[config] = {"color": colors[i], "linestyle": "-",
                                  "marker": MARKERS[i // 10 % len(MARKERS)]}
        return styles

    @cached_property
    def thresholds(self) -> list[float]:
        """The runs' probe.horizon_fraction values (config.yaml), distinct and sorted."""
        return sorted({float(v) for cfg in self.trials["_cfg"]
                       if (v := _lookup(cfg, "probe.horizon_fraction")) is not None})

    @property
    def threshold(self) -> float:
        """The horizon's fraction of the peak: the runs' own (what their probes logged) when
        they agree, else the default."""
        return self.thresholds[0] if len(self.thresholds) == 1 else DECAY_THRESHOLD

    @property
    def x_values(self) -> list:
        return sorted(self.trials["_x"].dropna().unique())

    @property
    def replicates(self) -> list[str]:
        """The columns telling replicates of one configuration apart (seed, rep)."""
        return [c for c in dict.fromkeys((self.roles["seed"], *REPLICATE_COLUMNS))
                if c in self.trials and self.trials[c].notna().any()]

    def x_label(self, x) -> str:
        return f"{short_name(self.x_axis)} = {value_str(x)}" if self.x_axis else "all trials"


def _palette(n: int) -> list:
    """n colours: tab10; up to 20, tab20 (its dark/light pairs share a hue, so neighbours in
    sorted order, e.g. adjacent learning rates, read as one family); beyond, spaced along turbo."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / (n - 1)) for i in range(n)]


def load_sweep(sweep_dir: str | Path) -> Sweep:
    """Read summary.csv and each trial's run directory; FileNotFoundError without summary.csv."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / SUMMARY_CSV
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: SWEEP_DIR must be a sweep directory, the one holding the "
            f"{SUMMARY_CSV} a sweep writes (python -m gru_sweep +experiment=... with a sweep)")
    trials = _read_summary_csv(path)
    columns = list(trials.columns)
    trials["_run"] = [_find_run(sweep_dir, value) for value in trials["run_dir"]]
    trials["_summary"] = [plots.read_summary(run) if run else {} for run in trials["_run"]]
    trials["_cfg"] = [_read_config(run) if run else None for run in trials["_run"]]
    roles = {role: _role_column(trials, role, candidates)
             for role, candidates in ROLE_COLUMNS.items()}
    axes = _axis_columns(trials, columns, roles)
    x_axis, config_axes = _choose_axes(trials, axes, roles)
    trials["_x"] = trials[x_axis] if x_axis else 0
    trials["_config"] = [config_label(row, config_axes, roles) for _, row in trials.iterrows()]
    gradnorms = {trial: frame for trial, run in zip(trials["trial_id"], trials["_run"])
                 if run and (frame := plots.read_gradnorms(run)) is not None}
    return Sweep(sweep_dir, trials, columns, roles, x_axis, config_axes,
                 _metric_columns(trials), gradnorms)


def _read_summary_csv(path: Path) -> pd.DataFrame:
    try:
        trials = pd.read_csv(path, dtype={"trial_id": str, "status": str, "run_dir": str})
    except pd.errors.EmptyDataError:  # a sweep that has not finished a trial yet
        trials = pd.DataFrame(columns=list(FIXED_COLUMNS))
    if "trial_id" not in trials:
        trials.insert(0, "trial_id", [str(i) for i in range(len(trials))])
    for column, default in (("status", "unknown"), ("run_dir", "")):
        if column not in trials:
            trials[column] = default
    trials["status"] = trials["status"].fillna("unknown")
    for column in trials.columns:
        if "/" in column:
            trials[column] = pd.to_numeric(trials[column], errors="coerce")
    return trials


def _find_run(sweep_dir: Path, value) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    path = Path(value)
    # a sweep directory copied elsewhere still finds its trials/<name> by name
    candidates = [path if path.is_absolute() else sweep_dir / path,
                  sweep_dir / "trials" / path.name]
    return next((c for c in candidates if c.is_dir()), None)


def _role_column(trials: pd.DataFrame, role: str, candidates: tuple[str, ...]) -> str:
    """The summary.csv column holding a role, or a new column filled from each run's
    summary.json, else from its config.yaml (written before training starts, so a trial that
    stopped or crashed before writing summary.json still says what it ran)."""
    for column in candidates:
        if column in trials:
            return column
    values = []
    for summary, config in zip(trials["_summary"], trials["_cfg"]):
        value = summary.get(role)
        values.append(_lookup(config, candidates[0]) if value is None else value)
    trials[role] = values
    return role


def _axis_columns(trials: pd.DataFrame, columns: list[str], roles: dict[str, str]) -> list[str]:
    """The swept config keys: summary.csv columns that are neither metrics nor bookkeeping and,
    where the runs' config.yaml files are there to ask, keys of the config; plus the roles
    filled from summary.json."""
    candidates = [c for c in columns if c not in FIXED_COLUMNS + BOOKKEEPING_COLUMNS
                  and "/" not in c]
    configs = [config for config in trials["_cfg"] if config]
    if configs:
        candidates = [c for c in candidates if c in REPLICATE_COLUMNS
                      or any(_lookup(config, c, _MISSING) is not _MISSING for config in configs)]
    return candidates + [c for c in roles.values() if c not in columns]


def _read_config(run_dir: Path) -> dict | None:
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


_MISSING = object()  # "no such key", told apart from a key whose value is null


def _lookup(config: dict | None, dotted: str, missing=None):
    """config's value at a dotted key ("cell.name"); `missing` where it has no such key."""
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node


def _choose_axes(trials: pd.DataFrame, axes: list[str],
                 roles: dict[str, str]) -> tuple[str | None, list[str]]:
    """The x axis (sequence length when it varies, else another varying numeric axis, else none)
    and the axes that name a configuration (cell, gate_init and whatever else varies apart
    from the replicates)."""
    varying = [c for c in axes if trials[c].nunique(dropna=False) > 1]
    named = (roles["cell"], roles["gate_init"], roles["seed"], *REPLICATE_COLUMNS)
    numeric = [c for c in varying
               if c not in named and pd.api.types.is_numeric_dtype(trials[c])]
    x_axis = roles["seq_len"] if roles["seq_len"] in varying else next(iter(numeric), None)
    others = [c for c in varying if c not in (*named, x_axis)]
    return x_axis, [roles["cell"], roles["gate_init"], *others]


def config_label(row: pd.Series, config_axes: list[str], roles: dict[str, str]) -> str:
    """e.g. "custom_gru · chrono · lr=0.001": cell and gate_init by value, others as key=value."""
    parts = []
    for column in config_axes:
        value = row[column]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        bare = column in (roles["cell"], roles["gate_init"])
        parts.append(value_str(value) if bare else f"{short_name(column)}={value_str(value)}")
    return " · ".join(parts) or "all"


def _metric_columns(trials: pd.DataFrame) -> list[str]:
    metrics = [c for c in trials.columns if c.startswith("val/")]
    metrics = metrics or [c for c in trials.columns if "/" in c]
    monitors = {plots.monitor_column(s) for s in trials["_summary"] if s}
    return sorted(metrics, key=lambda m: (m not in monitors, metrics.index(m)))


def short_name(key: str) -> str:
    """"data.seq_len" -> "seq_len", "cell.name" -> "cell", "optimizer.lr" -> "lr"."""
    parts = key.split(".")
    if len(parts) > 1 and parts[-1] in ("name", "scheme"):
        return parts[-2]
    return parts[-1]


def value_str(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    return str(value)


# ----------------------------------------------------------------------------- analysis

def _diverged(trials: pd.DataFrame) -> pd.Series:
    return trials["status"].eq("diverged")


def seed_aggregate(sweep: Sweep, values: pd.Series) -> pd.DataFrame:
    """Mean, std and count of one value per trial over seeds, per (config, x).

    Diverged trials and non-finite values are left out of the statistics; `trials` and
    `diverged` count every trial of the group. Columns: config, x, mean, std, n, trials, diverged.
    """
    trials = sweep.trials
    usable = values.where(~_diverged(trials) & np.isfinite(values.astype(float)))
    keys = [trials["_config"], trials["_x"]]
    grouped = usable.groupby(keys, dropna=False)
    frame = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(), "n": grouped.count(),
                          "trials": grouped.size(),
                          "diverged": _diverged(trials).groupby(keys, dropna=False).sum()})
    return frame.rename_axis(["config", "x"]).reset_index()


def decay_table(sweep: Sweep) -> pd.DataFrame:
    """plots.decay_fits for every trial with a probe, at its last usable probe step.

    Columns: trial_id, config, x, seed, status, layer, top (the layer the readout reads),
    step, slope, factor_per_step, horizon, fit_horizon, n_points.
    """
    frames = []
    for _, row in sweep.trials.iterrows():
        gradnorms = sweep.gradnorms.get(row["trial_id"])
        if gradnorms is None:
            continue
        fits = plots.decay_fits(gradnorms, threshold=sweep.threshold)
        fits.insert(0, "trial_id", row["trial_id"])
        fits.insert(1, "config", row["_config"])
        fits.insert(2, "x", row["_x"])
        fits.insert(3, "seed", row[sweep.roles["seed"]])
        fits.insert(4, "status", row["status"])
        fits.insert(6, "top", fits["layer"] == gradnorms["layer"].max())
        frames.append(fits)
    if not frames:
        return pd.DataFrame(columns=["trial_id", "config", "x", "seed", "status", "layer", "top",
                                     "step", "slope", "factor_per_step", "horizon",
                                     "fit_horizon", "n_points"])
    return pd.concat(frames, ignore_index=True)


def _top_layer_values(sweep: Sweep, decay: pd.DataFrame, column: str) -> pd.Series:
    """A decay column of each trial's top layer, aligned with sweep.trials (NaN without probe)."""
    top = decay[decay["top"].astype(bool)].set_index("trial_id")[column]
    return sweep.trials["trial_id"].map(top).astype(float)


def _last_probe(sweep: Sweep, trial_id: str) -> pd.DataFrame | None:
    """The top layer's rows at the trial's last usable probe step, sorted by t."""
    gradnorms = sweep.gradnorms.get(trial_id)
    step = None if gradnorms is None else plots.last_probe_step(gradnorms)
    if step is None:
        return None
    return plots.probe_slice(gradnorms, step, gradnorms["layer"].max())


def _seed_curve(frames: list[pd.DataFrame], label: str, style: dict) -> plots.Curve:
    """Geometric mean of ||dL/dh_t|| over seeds (the curves live on a log scale), min-max band."""
    norms = pd.concat(frames)[["t", "grad_norm"]]
    norms["grad_norm"] = np.log(log_safe(norms["grad_norm"]))
    by_t = norms.groupby("t")["grad_norm"]
    band = {"lo": np.exp(by_t.min().to_numpy()), "hi": np.exp(by_t.max().to_numpy())} \
        if len(frames) > 1 else {}
    return plots.Curve(by_t.mean().index.to_numpy(float), np.exp(by_t.mean().to_numpy()),
                       label=label, color=style["color"], linestyle=style["linestyle"],
                       **band)


# ----------------------------------------------------------------------------- figures

def final_metrics_figure(sweep: Sweep) -> Figure:
    """(a) Final metrics against x, one line per configuration, mean and std over seeds."""
    metrics = sweep.metrics[:MAX_METRIC_PANELS]
    fig, axes = _panel_grid(max(len(metrics), 1), 5.5, 4, max_columns=2)
    for ax, metric in zip(axes.ravel(), metrics):
        _plot_final_metric(ax, sweep, metric)
    _hide_unused(axes, len(metrics))
    if not metrics:
        plots.no_data(axes[0, 0], "summary.csv has no metric columns")
    _figure_legend(fig, axes)
    fig.suptitle("final metrics (mean ± std over seeds; × at the top: diverged trials)")
    return fig


def _plot_final_metric(ax: Axes, sweep: Sweep, metric: str) -> None:
    aggregate = seed_aggregate(sweep, sweep.trials[metric])
    plotted = []
    for config in sweep.configs:
        rows = aggregate[aggregate["config"] == config].sort_values("x")
        if rows["mean"].isna().all() and not rows["diverged"].any():
            continue  # skipped or not yet run: nothing to draw, no legend entry
        ax.errorbar(_positions(sweep, rows), rows["mean"], yerr=rows["std"].fillna(0),
                    capsize=3, label=config, **sweep.styles[config])
        plotted.extend(rows["mean"])
    plotted.extend(_plot_metric_baseline(ax, sweep, metric))
    _mark_diverged(ax, sweep)
    plots.auto_log_y(ax, plotted)
    _format_x(ax, sweep)
    ax.set_ylabel(metric)
    ax.set_title(metric, fontsize="medium")


def _positions(sweep: Sweep, rows: pd.DataFrame) -> np.ndarray:
    """x positions: the axis value, or the configuration's index when there is no x axis."""
    if sweep.x_axis:
        return rows["x"].to_numpy(float)
    return np.array([sweep.configs.index(c) for c in rows["config"]], dtype=float)


def _plot_metric_baseline(ax: Axes, sweep: Sweep, metric: str) -> list[float]:
    baseline = pd.Series([plots.baseline_for(metric, s.get("baseline")) for s in
                          sweep.trials["_summary"]], dtype=float, index=sweep.trials.index)
    by_x = baseline.groupby(sweep.trials["_x"]).mean().dropna()
    if by_x.empty:
        return []
    if sweep.x_axis and len(by_x) > 1:
        ax.plot(by_x.index.to_numpy(float), by_x.to_numpy(), color="black", linestyle="--",
                marker="_", label="task baseline")
    else:
        plots.plot_baseline(ax, float(by_x.mean()), label="task baseline")
    return list(by_x)


def _mark_diverged(ax: Axes, sweep: Sweep) -> None:
    # NaN/inf metrics cannot be drawn at their value: mark them at the top edge instead.
    top = blended_transform_factory(ax.transData, ax.transAxes)
    diverged = sweep.trials[_diverged(sweep.trials)]
    for _, row in diverged.iterrows():
        x = row["_x"] if sweep.x_axis else sweep.configs.index(row["_config"])
        ax.plot([x], [0.98], marker="x", markersize=9, linestyle="none", transform=top,
                clip_on=False, color=sweep.styles[row["_config"]]["color"])


def _format_x(ax: Axes, sweep: Sweep) -> None:
    if not sweep.x_axis:
        ax.set_xticks(range(len(sweep.configs)), sweep.configs, rotation=20, ha="right")
        return
    values = np.asarray(sweep.x_values, dtype=float)
    if len(values) > 1 and values.min() > 0 and values.max() >= 8 * values.min():
        ax.set_xscale("log")
    ax.set_xticks(values, [value_str(v) for v in sweep.x_values])
    ax.minorticks_off()
    ax.set_xlabel(sweep.x_axis)


def _figure_legend(fig: Figure, axes) -> None:
    handles = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside right upper",
                   fontsize="small")


def _panel_grid(n: int, width: float, height: float,
                max_columns: int = 3) -> tuple[Figure, np.ndarray]:
    columns = min(n, max_columns)
    rows = math.ceil(n / columns)
    fig = Figure(figsize=(width * columns + 2.5, height * rows), layout="constrained")
    return fig, fig.subplots(rows, columns, squeeze=False)


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.ravel()[max(used, 1):]:
        ax.set_visible(False)


def gradnorm_curves_figure(sweep: Sweep) -> Figure:
    """(b) ||dL/dh_t|| at the last probe, one panel per x value, one line per configuration.

    Lines (styled per configuration, as in the final-metrics figure): geometric mean over the
    completed seeds (band: min to max); dotted: diverged trials at their last usable probe.
    """
    fig, axes = _panel_grid(len(sweep.x_values), 5, 3.8)
    for ax, x in zip(axes.ravel(), sweep.x_values):
        curves = []
        for config in sweep.configs:
            curves.extend(_config_curves(sweep, config, x))
        plots.plot_gradnorm_curves(ax, curves, title=sweep.x_label(x))
    _hide_unused(axes, len(sweep.x_values))
    _figure_legend(fig, axes)
    fig.suptitle(r"$\|\partial L/\partial h_t\|$ at the last probe (top layer)")
    return fig


def _config_curves(sweep: Sweep, config: str, x) -> list[plots.Curve]:
    trials = sweep.trials[(sweep.trials["_config"] == config) & (sweep.trials["_x"] == x)]
    style = sweep.styles[config]
    completed, diverged = [], []
    for _, row in trials.iterrows():
        frame = _last_probe(sweep, row["trial_id"])
        if frame is not None:
            (diverged if row["status"] == "diverged" else completed).append(frame)
    curves = [_seed_curve(completed, config, style)] if completed else []
    curves += [plots.Curve(f["t"].to_numpy(float), f["grad_norm"].to_numpy(float),
                           label=f"{config} (diverged)", color=style["color"],
                           linestyle=":")
               for f in diverged]
    return curves


def gate_stats_figure(sweep: Sweep, x) -> Figure | None:
    """(c) Gate means and saturated fractions over t at the last probe (top layer, mean over
    completed seeds), one row per configuration with gates; None when no configuration has any."""
    frames = {config: _mean_gate_stats(sweep, config, x) for config in sweep.configs}
    frames = {c: f for c, f in frames.items() if f is not None and plots.gate_names(f)}
    if not frames:
        return None
    fig = Figure(figsize=(10, 2.8 * len(frames) + 0.6), layout="constrained")
    axes = fig.subplots(len(frames), 2, squeeze=False)
    for (ax_mean, ax_saturated), (config, frame) in zip(axes, frames.items()):
        plots.plot_gate_stats(ax_mean, ax_saturated, frame)
        ax_mean.set_title(f"{config}: gate mean", fontsize="medium")
        ax_saturated.set_title(f"{config}: saturated fraction", fontsize="medium")
    fig.suptitle(f"gate statistics over t at the last probe ({sweep.x_label(x)})")
    return fig


def _mean_gate_stats(sweep: Sweep, config: str, x) -> pd.DataFrame | None:
    trials = sweep.trials[(sweep.trials["_config"] == config) & (sweep.trials["_x"] == x)
                          & ~_diverged(sweep.trials)]
    frames = [f for f in (_last_probe(sweep, t) for t in trials["trial_id"]) if f is not None]
    if not frames:
        return None
    stats = [c for c in frames[0].columns if re.fullmatch(r"\w+_(mean|hi|lo)", c)]
    return pd.concat(frames).groupby("t", as_index=False)[stats].mean()


def write_figures(sweep: Sweep) -> list[tuple[Path, str]]:
    """Write SWEEP_DIR/figures/*.png; returns (path, caption) pairs in page order."""
    out = sweep.dir / "figures"
    for old in (*out.glob("gate_stats*.png"), out / "gradnorm_curves.png"):
        old.unlink(missing_ok=True)  # a figure a previous report wrote but this one does not
    written = [(plots.save_figure(final_metrics_figure(sweep), out / "final_metrics.png"),
                (f"Final metrics against {sweep.x_axis} per configuration"
                 if sweep.x_axis else "Final metrics per configuration")
                + "; black dashed: task baseline; ×: diverged trials.")]
    if sweep.gradnorms:
        written.append((plots.save_figure(gradnorm_curves_figure(sweep),
                                          out / "gradnorm_curves.png"),
                        "Gradient norm over time at the last probe step, top layer. "
                        "Band: min to max over seeds; dotted: diverged trials."))
    for x in sweep.x_values if sweep.gradnorms else []:
        fig = gate_stats_figure(sweep, x)
        if fig is not None:
            name = (f"gate_stats_{_slug(short_name(sweep.x_axis))}_{_slug(value_str(x))}.png"
                    if sweep.x_axis else "gate_stats.png")
            written.append((plots.save_figure(fig, out / name),
                            f"Gate statistics over t, {sweep.x_label(x)}: solid > 0.9, "
                            "dashed < 0.1."))
    return written


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


# ----------------------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; }
td.text { text-align: left; }
tr.completed td.status { background: #d8f0d8; }
tr.diverged td { background: #fbe3e3; }
tr.diverged td.status { background: #f4b6b6; font-weight: bold; }
tr.other td.status { background: #fbefc8; }
figure { margin: 1em 0 2em; }
figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; }
"""


def fmt(value) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "—"
    if isinstance(value, (float, np.floating)):
        return "∞" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def html_table(frame: pd.DataFrame, row_classes: list[str] | None = None) -> str:
    """A plain HTML table; text cells left-aligned, the status column classed for colour."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = "".join(_html_cell(column, value) for column, value in zip(frame.columns, row))
        css = f' class="{row_classes[i]}"' if row_classes else ""
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_cell(column, value) -> str:
    classes = ["status"] if column == "status" else []
    if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
        classes.append("text")
    css = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{css}>{html.escape(fmt(value))}</td>"


def _status_classes(statuses) -> list[str]:
    return [s if s in ("completed", "diverged") else "other" for s in statuses]


def _mean_std(rows: pd.DataFrame) -> list[str]:
    return [f"{fmt(m)} ± {fmt(s)} ({n})" if n > 1 else fmt(m)
            for m, s, n in zip(rows["mean"], rows["std"], rows["n"])]


def results_table(sweep: Sweep, decay: pd.DataFrame) -> pd.DataFrame:
    """Per (config, x): final metrics and the top layer's decay, mean ± std (n) over seeds."""
    base = seed_aggregate(sweep, sweep.trials[sweep.metrics[0]] if sweep.metrics
                          else pd.Series(np.nan, index=sweep.trials.index))
    table = pd.DataFrame({"config": base["config"]})
    if sweep.x_axis:
        table[short_name(sweep.x_axis)] = base["x"]
    table["trials"], table["diverged"] = base["trials"], base["diverged"]
    for metric in sweep.metrics:
        table[metric] = _mean_std(seed_aggregate(sweep, sweep.trials[metric]))
    if len(decay):
        slope = _top_layer_values(sweep, decay, "slope")
        slopes = seed_aggregate(sweep, slope)
        table["slope (ln/step)"] = _mean_std(slopes)
        table["horizon"] = _horizon_summary(sweep, _top_layer_values(sweep, decay, "horizon"),
                                            slope)
        # of the mean slope: horizons themselves average badly (a flat seed's is infinite)
        table["fit horizon"] = [fmt(slope_horizon(m, sweep.threshold)) for m in slopes["mean"]]
    return table


def _horizon_summary(sweep: Sweep, horizon: pd.Series, slope: pd.Series) -> list[str]:
    """Mean measured horizon over the seeds that reached it, saying how many did (of those
    with a fit: a horizon is NaN both when not reached and when there is no probe)."""
    reached, fitted = seed_aggregate(sweep, horizon), seed_aggregate(sweep, slope)
    return [("not reached" if k == 0 else fmt(m) if k == n else f"{fmt(m)} ({k}/{n} reached)")
            if n else "—" for m, k, n in zip(reached["mean"], reached["n"], fitted["n"])]


def _decay_display(decay: pd.DataFrame, sweep: Sweep) -> pd.DataFrame:
    table = decay.drop(columns=["top", "n_points"])
    table["horizon"] = [fmt(h) if not math.isnan(h) else "—" if math.isnan(s) else "not reached"
                        for h, s in zip(table["horizon"], table["slope"])]
    table = table.rename(columns={
        "x": short_name(sweep.x_axis) if sweep.x_axis else "x", "step": "probe step",
        "slope": "slope (ln/step)", "factor_per_step": "factor/step", "fit_horizon": "fit horizon"})
    return table if sweep.x_axis else table.drop(columns=["x"])


def _summary_display(sweep: Sweep) -> pd.DataFrame:
    # roles filled from summary.json are shown where they say something
    derived = [c for c in sweep.roles.values()
               if c not in sweep.columns and sweep.trials[c].notna().any()]
    table = sweep.trials[sweep.columns + derived].copy()
    table["run_dir"] = [_relative(sweep.dir, value) for value in table["run_dir"]]
    return table


def _relative(root: Path, value) -> str:
    if not isinstance(value, str):
        return fmt(value)
    try:
        return str(Path(value).relative_to(root))
    except ValueError:
        return value


def _overview(sweep: Sweep) -> str:
    counts = sweep.trials["status"].value_counts()
    statuses = ", ".join(f"{n} {html.escape(str(s))}" for s, n in counts.items())
    trials = f"{len(sweep.trials)} trials" + (f" ({statuses})" if statuses else "")
    if sweep.x_axis:
        x_text = f"x axis: <code>{html.escape(sweep.x_axis)}</code>"
    else:
        x_text = "no numeric axis varies: configurations side by side"
    axes = ", ".join(f"<code>{html.escape(a)}</code>" for a in sweep.config_axes)
    replicates = ", ".join(f"<code>{html.escape(c)}</code>" for c in sweep.replicates)
    return (f"<p>{trials}. {x_text}; configurations by {axes}; replicates by "
            f"{replicates or 'none'}. Means and spreads leave "
            "diverged trials out. Decay, at the last probe and from the curve's maximum "
            "backwards: least-squares slope of ln ‖∂L/∂h<sub>t</sub>‖ against the distance "
            "from the end; horizon: the distance at "
            f"which the norm first falls below {sweep.threshold:g} of its maximum "
            "(fit horizon: the same read off the fitted line, which extrapolates past the "
            f"sequence).{_mixed_thresholds(sweep)}</p>")


def _mixed_thresholds(sweep: Sweep) -> str:
    if len(sweep.thresholds) < 2:
        return ""
    values = ", ".join(f"{t:g}" for t in sweep.thresholds)
    return f" The runs' probe.horizon_fraction differ ({values}): {sweep.threshold:g} is used for all."


def _figure_html(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)} ({html.escape(path.name)})</figcaption></figure>")


def render_html(sweep: Sweep, figures: list[tuple[Path, str]], decay: pd.DataFrame) -> str:
    sections = [f"<h1>Sweep {html.escape(sweep.dir.resolve().name)}</h1>", _overview(sweep),
                "<h2>Results over seeds</h2>", html_table(results_table(sweep, decay)),
                "<h2>Figures</h2>", *(_figure_html(p, c) for p, c in figures)]
    if len(decay):
        sections += ["<h2>Gradient decay per trial</h2>",
                     html_table(_decay_display(decay, sweep), _status_classes(decay["status"]))]
    sections += ["<h2>All trials</h2>",
                 html_table(_summary_display(sweep), _status_classes(sweep.trials["status"]))]
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>gru_sweep report: {html.escape(sweep.dir.resolve().name)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n")


def write_report(sweep_dir: str | Path) -> Path:
    """Write SWEEP_DIR/figures/*.png and SWEEP_DIR/report.html; returns the HTML's path."""
    sweep = load_sweep(sweep_dir)
    decay = decay_table(sweep)
    page = render_html(sweep, write_figures(sweep), decay)
    path = sweep.dir / REPORT_HTML
    path.write_text(page, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gru_sweep.report",
        description="Write SWEEP_DIR/report.html and SWEEP_DIR/figures/ from a sweep's "
                    "summary.csv and its trials' run directories.")
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", type=Path,
                        help="the sweep directory (holds summary.csv)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"SWEEP_DIR {str(args.sweep_dir)!r} is not a directory")
    try:
        path = write_report(args.sweep_dir)
    except FileNotFoundError as error:
        parser.error(str(error))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
