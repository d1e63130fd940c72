"""Tasks: the copy and adding problems, character-level text and a Markov-chain source.

Each task is a LightningDataModule that also states its loss, metrics and baseline, so the model
and the reports read them from one place (see base.Task).

    from gru_sweep.tasks import build_task
    task = build_task({"name": "copy", "seq_len": 100}, seed=0)   # or a schema instance
    x, y = task.probe_batch(8)
"""
from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from gru_sweep.data_schema import (DATA_SCHEMAS, TASK_NAMES, AddingConfig, CopyConfig, DataConfig,
                                   MarkovConfig, TextConfig)
from gru_sweep.errors import ConfigError, require_choice, require_int
from gru_sweep.tasks.adding import AddingTask
from gru_sweep.tasks.base import Task
from gru_sweep.tasks.copying import CopyTask
from gru_sweep.tasks.markov import MarkovTask
from gru_sweep.tasks.text import TextTask

_TASKS: dict[str, type[Task]] = {"copy": CopyTask, "adding": AddingTask, "text": TextTask,
                                 "markov": MarkovTask}


def build_task(cfg: DataConfig | Mapping | DictConfig, seed: int) -> Task:
    """The task for a validated data schema (or a plain mapping, validated here).

    Errors are ConfigErrors keyed under "data." (the seed's under "seed").
    """
    require_int("seed", seed, 0)
    try:
        if not isinstance(cfg, DataConfig):
            name = cfg.get("name")
            require_choice("name", name, TASK_NAMES)
            cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DATA_SCHEMAS[name]), cfg))
        return _TASKS[cfg.name](cfg, seed)
    except ConfigError as err:
        raise err.under("data") from None


__all__ = ["TASK_NAMES", "DATA_SCHEMAS", "build_task", "Task", "DataConfig",
           "CopyConfig", "CopyTask", "AddingConfig", "AddingTask",
           "TextConfig", "TextTask", "MarkovConfig", "MarkovTask"]
