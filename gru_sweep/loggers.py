"""The loggers of a run: metrics.csv in the run directory, and W&B (offline by default)."""
from __future__ import annotations

import csv
import logging
import os
import secrets
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from gru_sweep.config import RunConfig

log = logging.getLogger(__name__)


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; a resumed run keeps it and appends."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class RunCSVLogger(CSVLogger):
    """CSVLogger writing run_dir/metrics.csv, which survives a resume (see KeepMetricsHistory)."""

    def __init__(self, run_dir: Path):
        super().__init__(save_dir=run_dir, name="", version="")

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def build_loggers(run: RunConfig, run_dir: Path, container: dict) -> list[Logger]:
    if run.logger.name == "none":
        return []
    loggers: list[Logger] = [RunCSVLogger(run_dir)]
    if run.logger.name == "wandb" and run.logger.mode != "disabled":
        wandb_logger = _wandb_logger(run, run_dir, container)
        if wandb_logger is not None:
            loggers.append(wandb_logger)
    return loggers


def _wandb_logger(run: RunConfig, run_dir: Path, container: dict) -> WandbLogger | None:
    """A W&B logger resuming the run's own W&B id; None (with a warning) if W&B cannot start."""
    import wandb

    id_file = run_dir / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
    id_file.write_text(run_id)
    tags = list(run.logger.tags) or [f"cell={run.cell.name}", f"gate_init={run.gate_init.scheme}",
                                     f"seq_len={run.data.seq_len}", f"task={run.data.name}"]
    try:
        logger = WandbLogger(
            project=run.logger.project, entity=run.logger.entity, group=run.logger.group or run.experiment_name,
            tags=tags, name=run.logger.run_name or run_dir.name, save_dir=str(run_dir), id=run_id,
            resume="allow", mode=run.logger.mode, config=container,
            settings=wandb.Settings(init_timeout=run.logger.init_timeout, silent=True),
        )
        logger.experiment  # start now, so a broken W&B fails here and not inside training
        return logger
    except Exception as err:  # W&B must never stop training
        log.warning("W&B logging disabled for this run: %s", err)
        return None


