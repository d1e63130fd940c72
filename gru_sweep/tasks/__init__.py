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

from gru_sweep.errors import ConfigError, require_choice
from gru_sweep.tasks.adding import AddingConfig, AddingTask
from gru_sweep.tasks.base import DataConfig, Task, require_int
from gru_sweep.tasks.copying import CopyConfig, CopyTask
from gru_sweep.tasks.markov import MarkovConfig, MarkovTask
from gru_sweep.tasks.text import TextConfig, TextTask

_TASKS: dict[str, tuple[type[DataConfig], type[Task]]] = {
    "copy": (CopyConfig, CopyTask),
    "adding": (AddingConfig, AddingTask),
    "text": (TextConfig, TextTask),
    "markov": (MarkovConfig, MarkovTask),
}
TASK_NAMES = tuple(_TASKS)
DATA_SCHEMAS: dict[str, type[DataConfig]] = {name: schema for name, (schema, _) in _TASKS.items()}


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
        return _TASKS[cfg.name][1](cfg, seed)
    except ConfigError as err:
        raise err.under("data") from None


__all__ = ["TASK_NAMES", "DATA_SCHEMAS", "build_task", "Task", "DataConfig",
           "CopyConfig", "CopyTask", "AddingConfig", "AddingTask",
           "TextConfig", "TextTask", "MarkovConfig", "MarkovTask"]
