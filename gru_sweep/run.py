"""One training run: validated config -> task, model, loggers, trainer -> run directory.

This is the single training path: a sweep trial calls `train_run` exactly as the CLI does.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

from gru_sweep.callbacks import DivergenceGuard, GradNormProbe, KeepMetricsHistory
from gru_sweep.config import RunConfig, to_container, validate
from gru_sweep.errors import ConfigError
from gru_sweep.loggers import build_loggers
from gru_sweep.model import SequenceModel
from gru_sweep.tasks import build_task


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
    resume_from = run_dir / "checkpoints" / "last.ckpt"
    if resume_from.exists():
        _check_same_config(run_dir / "config.yaml", container)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(container, sort_keys=False))

    if run.trainer.num_threads:
        torch.set_num_threads(run.trainer.num_threads)
    pl.seed_everything(run.seed, workers=True, verbose=False)
    task = build_task(run.data, seed=run.seed)
    model = SequenceModel(run, task, hparams=container)

    monitor = f"val/{task.monitor}"
    checkpoint = ModelCheckpoint(dirpath=resume_from.parent, filename="best", monitor=monitor, mode=task.mode,
                                 save_last=True, enable_version_counter=False)
    guard = DivergenceGuard()
    callbacks = [checkpoint, guard, KeepMetricsHistory(run_dir / "metrics.csv"), *extra_callbacks]
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
        logger=build_loggers(run, run_dir, container) or False,
        callbacks=callbacks,
        default_root_dir=run_dir,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*The `srun` command is available.*")
        trainer.fit(model, datamodule=task, ckpt_path=resume_from if resume_from.exists() else None)

        status = "diverged" if guard.diverged_at is not None else "completed"
        final: dict[str, float] = {}
        if status == "completed":
            if trainer.global_step % run.trainer.val_check_interval == 0:  # fit ended on a validation
                final.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
            if not final:
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


# What a resumed run may change: how long it trains and how it reports, not what it trains.
_RESUMABLE = ("trainer.max_steps", "trainer.enable_progress_bar", "trainer.num_threads",
              "trainer.log_every_n_steps", "trainer.val_check_interval", "logger.", "probe.")


def _check_same_config(path: Path, container: dict) -> None:
    """A resume must train the model its checkpoint holds: refuse a changed setting by name."""
    if not path.exists():
        return
    old, new = _flatten(yaml.safe_load(path.read_text())), _flatten(container)
    for key in sorted(set(old) | set(new)):
        if not key.startswith(_RESUMABLE) and old.get(key) != new.get(key):
            raise ConfigError(key, new.get(key), f"differs from {old.get(key)!r} in the checkpoint of {path.parent}; "
                                                 "resume with the same value or use a new run directory")


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _deterministic(value: str):
    return {"true": True, "false": False}.get(str(value).lower(), "warn")


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
