"""Study 2, the gradient horizon: decay of ||dL/dh_t|| at initialisation and after training.

Reads the run directories of a long-copy sweep (study 1) and writes, next to this file:
  decay_rates.csv      per trial: cell, gate init, T, fitted decay per step and horizon at the
                       first probe (initialisation) and at the last one (after training)
  custom_vs_cudnn.csv  the largest relative difference between the custom GRU's and the cuDNN GRU's
                       curves for the same seed, init and T (same weights at step 0)
  curves_at_init.png   ||dL/dh_t|| at initialisation for each cell and gate init, one panel per T
Usage: python experiments/gradient_horizon/analyze.py SWEEP_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gru_sweep.plots import Curve, fit_decay, plot_gradnorm_curves, read_gradnorms, read_summary, save_figure

HERE = Path(__file__).resolve().parent
STYLE = {"default": "-", "gate_bias": "--", "chrono": ":"}
COLOR = {"custom_gru": "tab:blue", "cudnn_gru": "tab:cyan", "lstm": "tab:red", "rnn": "tab:gray"}


def load(sweep_dir: Path) -> list[tuple[dict, pd.DataFrame]]:
    runs = []
    for run_dir in sorted((sweep_dir / "trials").iterdir()):
        summary, grads = read_summary(run_dir), read_gradnorms(run_dir)
        if summary.get("status") == "completed" and grads is not None:
            runs.append((summary, grads[grads.layer == grads.layer.max()]))
    return runs


def curve(grads: pd.DataFrame, step: int) -> pd.DataFrame:
    return grads[grads.step == step].sort_values("t")


def decay_table(runs) -> pd.DataFrame:
    rows = []
    for summary, grads in runs:
        row = {"cell": summary["cell"], "gate_init": summary["gate_init"], "T": summary["seq_len"]}
        for label, step in (("init", grads.step.min()), ("trained", grads.step.max())):
            c = curve(grads, step)
            fit = fit_decay(c.t, c.grad_norm)
            row[f"{label}_decay_per_step"] = fit.slope
            row[f"{label}_horizon"] = fit.horizon
            row[f"{label}_log10_first_over_peak"] = np.log10(c.grad_norm.iloc[0] / c.grad_norm.max())
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["T", "cell", "gate_init"])


def custom_vs_cudnn(runs) -> pd.DataFrame:
    by_key = {(s["cell"], s["gate_init"], s["seq_len"]): g for s, g in runs}
    rows = []
    for (cell, init, T), custom in by_key.items():
        cudnn = by_key.get(("cudnn_gru", init, T))
        if cell != "custom_gru" or cudnn is None:
            continue
        for label, step in (("init", 0), ("trained", custom.step.max())):
            a, b = curve(custom, step).grad_norm.to_numpy(), curve(cudnn, step).grad_norm.to_numpy()
            rows.append({"gate_init": init, "T": T, "probe": label,
                         "max_rel_diff": float(np.max(np.abs(a - b) / np.abs(b)))})
    return pd.DataFrame(rows)


def figure(runs) -> Figure:
    lengths = sorted({s["seq_len"] for s, _ in runs})
    fig = Figure(figsize=(4.2 * len(lengths), 3.6))
    for i, T in enumerate(lengths):
        ax = fig.add_subplot(1, len(lengths), i + 1)
        curves = [Curve(curve(g, 0).t.to_numpy(), curve(g, 0).grad_norm.to_numpy(),
                        label=f"{s['cell']} {s['gate_init']}", color=COLOR.get(s["cell"]),
                        linestyle=STYLE.get(s["gate_init"], "-"))
                  for s, g in runs if s["seq_len"] == T and s["cell"] != "cudnn_gru"]
        plot_gradnorm_curves(ax, curves, title=f"T = {T}, at initialisation")
        ax.set_ylabel("||dL/dh_t||")
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(sweep_dir: str) -> None:
    runs = load(Path(sweep_dir))
    decay_table(runs).to_csv(HERE / "decay_rates.csv", index=False, float_format="%.5g")
    custom_vs_cudnn(runs).to_csv(HERE / "custom_vs_cudnn.csv", index=False, float_format="%.3g")
    save_figure(figure(runs), HERE / "curves_at_init.png")
    print(f"wrote decay_rates.csv, custom_vs_cudnn.csv, curves_at_init.png to {HERE}")


if __name__ == "__main__":
    main(sys.argv[1])
