"""One training run: validated config -> task, model, loggers, trainer -> run directory.

This is the single training path: a sweep trial calls `train_run` exactly as the CLI does.
"""
from __future__ import annotations

import json
import logging
import math
import os
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig

from gru_sweep.callbacks import DivergenceGuard, GradNormProbe
from gru_sweep.config import RunConfig, to_container, validate
from gru_sweep.model import SequenceModel
from gru_sweep.tasks import build_task

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    status: str                       # "completed" | "diverged"
    final: dict[str, float]           # "val/<metric>" (and "test/<metric>" where the task has a test split)
    run_dir: Path
    steps: int = 0
    baseline: dict[str, float] = field(default_factory=dict)


def train_run(cfg: DictConfig, run_dir: Path, extra_callbacks=()) -> RunResult:
    """Train one model; resume from run_dir/checkpoints/last.ckpt when it exists."""
    run = validate(cfg)  # before anything touches the disk
    container = to_container(run)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(container, sort_keys=False))

    if run.trainer.num_threads:
        torch.set_num_threads(run.trainer.num_threads)
    pl.seed_everything(run.seed, workers=True, verbose=False)
    task = build_task(run.data, seed=run.seed)
    model = SequenceModel(run, task, hparams=container)

    ckpt_dir = run_dir / "checkpoints"
    resume_from = ckpt_dir / "last.ckpt"
    monitor = f"val/{task.monitor}"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=task.mode,
                                 save_last=True, enable_version_counter=False)
    guard = DivergenceGuard()
    callbacks = [checkpoint, guard, *extra_callbacks]
    if run.probe.enabled:
        callbacks.append(GradNormProbe(run.probe, run_dir / "gradnorms.csv"))

    trainer = pl.Trainer(
        max_steps=run.trainer.max_steps,
        val_check_interval=run.trainer.val_check_interval,
        check_val_every_n_epoch=None,
        limit_val_batches=run.trainer.limit_val_batches,
        accelerator="gpu" if run.trainer.accelerator == "cuda" else run.trainer.accelerator,
        devices=run.trainer.devices,
        precision=run.trainer.precision,
        deterministic=_deterministic(run.trainer.deterministic),
        log_every_n_steps=run.trainer.log_every_n_steps,
        enable_progress_bar=run.trainer.enable_progress_bar,
        enable_model_summary=False,
        gradient_clip_val=None if run.optimizer.clip_mode == "none" else run.optimizer.clip_value,
        gradient_clip_algorithm=None if run.optimizer.clip_mode == "none" else run.optimizer.clip_mode,
        # Ray, not Lightning, owns the cluster: a plain environment stops Lightning from reading
        # SLURM_* variables inside a trial and installing its SLURM signal handlers.
        plugins=[LightningEnvironment()],
        logger=_loggers(run, run_dir, container) or False,
        callbacks=callbacks,
        default_root_dir=run_dir,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
        # CSVLogger appends to an existing metrics.csv (a resume); its warning says otherwise.
        warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted.*")
        warnings.filterwarnings("ignore", message=".*The `srun` command is available.*")
        trainer.fit(model, datamodule=task, ckpt_path=resume_from if resume_from.exists() else None)

        status = "diverged" if guard.diverged_at is not None else "completed"
        final: dict[str, float] = {}
        if status == "completed":
            final.update(_stage_metrics(trainer.validate(model, datamodule=task, verbose=False)))
            if getattr(task, "has_test", False):
                final.update(_stage_metrics(trainer.test(model, datamodule=task, verbose=False)))
        else:
            final["train/loss"] = float("nan")

    result = RunResult(status, final, run_dir, steps=trainer.global_step, baseline=dict(task.baseline))
    _write_summary(run, task, model, result)
    _write_figures(run_dir, trainer.loggers)
    _print_summary(result, monitor)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update({"status": status, **final})
            logger.experiment.finish()
    return result


def _deterministic(value: str):
    return {"true": True, "false": False}.get(str(value).lower(), "warn")


def _loggers(run: RunConfig, run_dir: Path, container: dict) -> list[Logger]:
    if run.logger.name == "none":
        return []
    loggers: list[Logger] = [CSVLogger(save_dir=run_dir, name="", version="")]
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


def _stage_metrics(results: list[dict]) -> dict[str, float]:
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def _write_summary(run: RunConfig, task, model: SequenceModel, result: RunResult) -> None:
    summary = {
        "status": result.status,
        "task": run.data.name,
        "cell": run.cell.name,
        "gate_init": run.gate_init.scheme,
        "seq_len": run.data.seq_len,
        "seed": run.seed,
        "hidden_size": model.cell.hidden_size,
        "cell_params": sum(p.numel() for p in model.cell.parameters()),
        "monitor": f"val/{task.monitor}",
        "final": {k: (v if math.isfinite(v) else None) for k, v in result.final.items()},
        "baseline": result.baseline,
        "steps": result.steps,
        "run_dir": str(result.run_dir),
    }
    tmp = result.run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, result.run_dir / "summary.json")  # never a half-written summary


def _write_figures(run_dir: Path, loggers) -> None:
    from gru_sweep.plots import write_run_figures

    figures = write_run_figures(run_dir)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for path in figures:
                logger.log_image(key=f"figures/{Path(path).stem}", images=[str(path)])


def _print_summary(result: RunResult, monitor: str) -> None:
    lines = [f"\nrun {result.status} after {result.steps} steps"]
    for key, value in sorted(result.final.items()):
        metric = key.split("/", 1)[1]
        base = result.baseline.get(metric)
        extra = f"   baseline {base:.4g}  ({value / base:.3g}x baseline)" if base and key.startswith("val/") else ""
        marker = "  <- monitor" if key == monitor else ""
        lines.append(f"  {key:<28} {value:.5g}{extra}{marker}")
    lines.append(f"artifacts: {result.run_dir}  (config.yaml, checkpoints/, metrics.csv, gradnorms.csv, figures/)")
    print("\n".join(lines), flush=True)
