"""Lightning callbacks of a training run: the gradient-norm probe and the divergence guard."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from gru_sweep.config import ProbeConfig
from gru_sweep.decay import fit_decay
from gru_sweep.probe import ProbeResult, log10_first_last_ratio, probe

GRADNORM_COLUMNS = ["step", "layer", "t", "grad_norm", "cell_grad_norm"]
GATE_COLUMNS = [f"{g}_{s}" for g in ("z", "r", "i", "f", "o") for s in ("mean", "hi", "lo")]


class DivergenceGuard(pl.Callback):
    """Stops training at the first NaN/inf training loss; the run then ends with status 'diverged'."""

    def __init__(self):
        self.diverged_at: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            self.diverged_at = trainer.global_step
            trainer.should_stop = True


def drop_rows_from(path: Path, step: int) -> None:
    """Remove the rows of a step-indexed CSV (column 'step') at or after `step`.

    A resumed run restarts at its checkpoint's step: rows logged after that checkpoint by the
    interrupted run would otherwise appear twice.
    """
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    column = rows[0].index("step")
    kept = [rows[0]] + [r for r in rows[1:] if r[column] == "" or float(r[column]) < step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


class KeepMetricsHistory(pl.Callback):
    """On a resume, keep metrics.csv up to the checkpoint and drop what the lost steps logged."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_start(self, trainer, pl_module):
        # The checkpoint is written after the validation at its step, so that row stays.
        drop_rows_from(self.path, trainer.global_step + 1)


class GradNormProbe(pl.Callback):
    """Every `every_n_steps` (and at step 0 and the end) measure ||dL/dh_t|| on a fixed batch.

    Rows go to gradnorms.csv as they are measured (so an interrupted run keeps them); scalar
    summaries go to every logger; W&B also gets the curve as a table that overlays across runs.
    """

    def __init__(self, cfg: ProbeConfig, path: Path):
        self.cfg, self.path = cfg, path
        self.batch = None
        self.last_probed: int | None = None

    def on_train_start(self, trainer, pl_module):
        x, y = pl_module.task.probe_batch(self.cfg.batch_size)
        self.batch = (x.to(pl_module.device), y.to(pl_module.device))
        drop_rows_from(self.path, trainer.global_step)  # a resumed run re-measures from its checkpoint
        self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.cfg.every_n_steps == 0:
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._measure(trainer, pl_module)

    def _measure(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if step == self.last_probed:
            return
        self.last_probed = step
        x, y = self.batch
        result = probe(pl_module.cell, pl_module.encode(x), lambda out: pl_module.task.loss(pl_module.head(out), y))
        self._append_rows(step, result)
        last = result.h_norms[-1]  # the top layer, which the readout sees
        fit = fit_decay(np.arange(len(last)), last.numpy(), self.cfg.horizon_fraction)
        scalars = {
            "probe/log10_first_last": log10_first_last_ratio(last),
            "probe/horizon": fit.horizon,        # nan while the norm never falls that low
            "probe/decay_per_step": fit.slope,   # d ln||dL/dh_t|| / d(distance from the end)
        }
        scalars = {k: v for k, v in scalars.items() if math.isfinite(v)}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("probe/gradnorm", columns=["step", "layer", "t", "grad_norm"],
                                 data=self._table_rows(step, result.h_norms), step=step)

    def _append_rows(self, step: int, result: ProbeResult) -> None:
        new = not self.path.exists()
        num_layers, steps = result.h_norms.shape
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(GRADNORM_COLUMNS + GATE_COLUMNS)
            for layer in range(num_layers):
                for t in range(steps):
                    cell = "" if result.c_norms is None else float(result.c_norms[layer, t])
                    gates = [_cell(result.gate_stats.get(c), layer, t) for c in GATE_COLUMNS]
                    writer.writerow([step, layer, t, float(result.h_norms[layer, t]), cell, *gates])

    def _table_rows(self, step: int, h_norms: torch.Tensor) -> list[list]:
        """At most ~max_wandb_points rows; long T keeps steps log-spaced in distance from the end."""
        num_layers, steps = h_norms.shape
        per_layer = max(2, self.cfg.max_wandb_points // num_layers)
        if steps <= per_layer:
            ts = np.arange(steps)
        else:
            distance = np.unique(np.round(np.logspace(0, np.log10(steps), per_layer)).astype(int)) - 1
            ts = np.unique(np.concatenate([[0], steps - 1 - distance]))
        return [[step, layer, int(t), float(h_norms[layer, t])] for layer in range(num_layers) for t in ts]


def _cell(values: torch.Tensor | None, layer: int, t: int):
    return "" if values is None else float(values[layer, t])
