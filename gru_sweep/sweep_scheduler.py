"""Trial schedulers of a sweep: FIFO, or ASHA, optionally run separately per value of one axis."""
from __future__ import annotations

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from gru_sweep.sweep_config import SchedulerConfig


class GroupedASHA(FIFOScheduler):
    """One ASHA per value of an axis (e.g. data.seq_len): a trial competes only with its group.

    Ray's schedulers have no grouping, and steps at different sequence lengths are not the same
    amount of work or data, so this hands each trial to its own group's AsyncHyperBandScheduler.
    """

    def __init__(self, group_by: str, **asha_kwargs):
        super().__init__()
        self.group_by, self.asha_kwargs = group_by, asha_kwargs
        self.groups: dict[str, AsyncHyperBandScheduler] = {}

    def set_search_properties(self, metric, mode, **spec) -> bool:
        self._metric, self._mode = metric, mode
        return True

    def _asha(self, trial) -> AsyncHyperBandScheduler:
        value = repr(trial.config["axes"][self.group_by])
        if value not in self.groups:
            self.groups[value] = AsyncHyperBandScheduler(metric=self._metric, mode=self._mode, **self.asha_kwargs)
        return self.groups[value]

    def on_trial_add(self, tune_controller, trial):
        self._asha(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result) -> str:
        return self._asha(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        self._asha(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._asha(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{self.group_by}={value}: {asha.debug_string()}" for value, asha in self.groups.items())


def build_scheduler(cfg: SchedulerConfig, max_steps: int, val_check_interval: int) -> TrialScheduler:
    if cfg.name == "fifo":
        return FIFOScheduler()
    default_max_t = {"step": max_steps, "training_iteration": max(1, max_steps // val_check_interval)}
    kwargs = dict(
        time_attr=cfg.time_attr,
        max_t=cfg.max_t or default_max_t[cfg.time_attr],
        grace_period=cfg.grace_period,
        reduction_factor=cfg.reduction_factor,
        # Trials end by themselves at max_steps; ASHA only decides at its rungs.
        stop_last_trials=False,
    )
    return GroupedASHA(cfg.group_by, **kwargs) if cfg.group_by else AsyncHyperBandScheduler(**kwargs)
