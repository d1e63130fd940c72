"""The Lightning callback through which a trial reports to Ray Tune (imported by the trial only:
the sweep's driver never loads Lightning)."""
from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from ray import tune

from gru_sweep.sweep_trial import TrialLog, TrialSpec


class ReportToTune(pl.Callback):
    """After each validation during fit: report the logged scalars, the step and tokens to Tune.

    Ray's TuneReportCheckpointCallback would also upload a checkpoint at every report (the run
    directory already holds it) and cannot add the step/token counters ASHA's time_attr needs.
    The validation at max_steps is not reported here: the trial reports its final result (with
    its status) right after `train_run` returns, and a scheduler STOP at that point could cut
    `train_run` short of writing its summary.
    """

    def __init__(self, spec: TrialSpec, where: dict, log: TrialLog):
        self.spec, self.where, self.trial_log = spec, where, log
        self.last: dict[str, Any] = {}

    def on_train_start(self, trainer, pl_module):
        self.trial_log.update(start_step=trainer.global_step)  # > 0: resumed from a checkpoint

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        metrics["step"] = trainer.global_step
        if "train/tokens" in metrics:  # logged every training step (model.py)
            metrics["tokens"] = metrics["train/tokens"]  # for ASHA's time_attr=tokens
        metrics.setdefault(self.spec.metric, math.nan)
        self.last = metrics
        if trainer.global_step < trainer.max_steps:
            tune.report({**metrics, **self.where})
