"""Study 2, the gradient horizon: decay of ||dL/dh_t|| at initialisation and after training.

Reads the run directories of a gradient-horizon sweep (`+experiment=gradient_horizon`, see the
README beside this file) and writes, next to this file:
  decay_rates.csv      per trial: cell, gate init, T, fitted decay per step and horizon at the
                       first probe (initialisation) and at the last one (after training), and the
                       mean keep gate (GRU z, LSTM f) at initialisation with ln of it: the GRU
                       Jacobian dh_t/dh_{t-1} ~ diag(z) + ... predicts a decay per step ~ ln z
  custom_vs_cudnn.csv  the largest relative difference between the custom GRU's and the cuDNN GRU's
                       curves for the same seed, init and T (same weights at step 0)
  curves.png   ||dL/dh_t|| at initialisation and after training, one panel per cell,
                       one colour per gate init
Usage: python experiments/gradient_horizon/analyze.py SWEEP_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gru_sweep.plots import Curve, plot_gradnorm_curves, read_gradnorms, read_summary, save_figure
from gru_sweep.decay import fit_decay

HERE = Path(__file__).resolve().parent
COLOR = {"default": "tab:gray", "gate_bias": "tab:orange", "chrono": "tab:green", "uniform": "tab:purple",
         "orthogonal": "tab:blue", "identity": "tab:brown"}


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
            with np.errstate(divide="ignore"):  # an underflow to 0 is -inf decades: say so
                row[f"{label}_log10_first_over_peak"] = np.log10(c.grad_norm.iloc[0] / c.grad_norm.max())
        keep = {"lstm": "f_mean"}.get(summary["cell"], "z_mean")
        at_init = curve(grads, grads.step.min())
        if keep in at_init and at_init[keep].notna().any():
            row["init_keep_gate_mean"] = at_init[keep].mean()
            row["ln_keep_gate_mean"] = np.log(row["init_keep_gate_mean"])
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["T", "cell", "gate_init"])


def custom_vs_cudnn(runs) -> pd.DataFrame:
    by_key = {(s["cell"], s["gate_init"], s["seq_len"], s["seed"]): g for s, g in runs}
    rows = []
    for (cell, init, T, seed), custom in by_key.items():
        cudnn = by_key.get(("cudnn_gru", init, T, seed))
        if cell != "custom_gru" or cudnn is None:
            continue
        for label, step in (("init", custom.step.min()), ("trained", custom.step.max())):
            a, b = curve(custom, step).grad_norm.to_numpy(), curve(cudnn, step).grad_norm.to_numpy()
            # relative to the curve's peak: entries that underflow to 0 in both count as equal
            rows.append({"gate_init": init, "T": T, "seed": seed, "probe": label,
                         "max_diff_over_peak": float(np.max(np.abs(a - b)) / np.max(np.abs(b)))})
    return pd.DataFrame(rows)


def figure(runs) -> Figure:
    """Solid: at initialisation; dashed: after training. The cuDNN GRU is left out (same curves)."""
    cells = [c for c in ("custom_gru", "lstm", "rnn") if any(s["cell"] == c for s, _ in runs)]
    fig = Figure(figsize=(4.5 * len(cells), 3.8))
    for i, cell in enumerate(cells):
        ax = fig.add_subplot(1, len(cells), i + 1)
        curves = []
        for s, g in runs:
            if s["cell"] != cell:
                continue
            for step, style in ((g.step.min(), "-"), (g.step.max(), "--")):
                c = curve(g, step)
                curves.append(Curve(c.t.to_numpy(), c.grad_norm.to_numpy(), color=COLOR.get(s["gate_init"]),
                                    linestyle=style, label=s["gate_init"] if style == "-" else None))
        lengths = sorted({s["seq_len"] for s, _ in runs if s["cell"] == cell})
        plot_gradnorm_curves(ax, curves, title=f"{cell}, T = {', '.join(map(str, lengths))}")
        ax.set_ylabel("||dL/dh_t||  (solid: init, dashed: trained)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(sweep_dir: str) -> None:
    runs = load(Path(sweep_dir))
    decay_table(runs).to_csv(HERE / "decay_rates.csv", index=False, float_format="%.5g")
    custom_vs_cudnn(runs).to_csv(HERE / "custom_vs_cudnn.csv", index=False, float_format="%.3g")
    save_figure(figure(runs), HERE / "curves.png")
    print(f"wrote decay_rates.csv, custom_vs_cudnn.csv, curves.png to {HERE}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "trials").is_dir():
        sys.exit("usage: python experiments/gradient_horizon/analyze.py SWEEP_DIR "
                 "(a sweep directory, holding trials/)")
    main(sys.argv[1])
