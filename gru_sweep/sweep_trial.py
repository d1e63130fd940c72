"""What runs inside a Ray Tune trial: build the trial's config, call `train_run`, report to Tune.

A trial's run directory is ``<sweep_dir>/trials/<trial_name>``, a name made from its axis values
only, and `train_run` resumes from ``checkpoints/last.ckpt`` found there. That, not Ray's
checkpoints, is what makes a retried trial (FailureConfig) and a restored sweep (Tuner.restore,
even after a SIGKILL that lost Ray's latest experiment snapshot) continue where training stopped.
So the trial reports metrics only; Ray checkpoints would copy the same weights a second time.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from omegaconf import OmegaConf
from ray import tune

from gru_sweep.sweep_space import axis_tags, trial_config, trial_name

FINISHED = ("completed", "diverged", "skipped")


@dataclass
class TrialSpec:
    """Everything a trial needs from the driver (shipped once through Ray's object store)."""

    sweep_name: str
    sweep_dir: str
    base: dict  # the composed config, resolver calls evaluated (see sweep_space)
    group_nodes: dict  # {group key: {option: node}}
    metric: str
    skip_invalid: bool = False  # an invalid config ends the trial as 'skipped', not as an error


def placement() -> dict[str, Any]:
    """Where this trial runs: node, process and the GPUs Ray gave it (CUDA_VISIBLE_DEVICES)."""
    node_id = ray.get_runtime_context().get_node_id()
    node_ip = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), "")
    return {"node_id": node_id, "node_ip": node_ip, "pid": os.getpid(),
            "gpu_ids": ",".join(map(str, ray.get_gpu_ids()))}


class TrialLog:
    """run_dir/trial.json: one entry per attempt (placement, start/end time, resumed step)."""

    def __init__(self, path: Path):
        self.path = path
        self.attempts = json.loads(path.read_text())["attempts"] if path.exists() else []

    def start(self, trial_id: str, where: dict) -> None:
        self.attempts.append({"trial_id": trial_id, **where, "started": time.time(),
                              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")})
        self._write()

    def update(self, **fields) -> None:
        self.attempts[-1].update(fields)
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"attempts": self.attempts}, indent=1))
        os.replace(tmp, self.path)


def _finished(run_dir: Path) -> dict | None:
    """The summary of a run that already finished (a trial re-run after a driver crash)."""
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    if summary.get("status") not in FINISHED:
        return None
    final = {k: math.nan if v is None else v for k, v in summary.get("final", {}).items()}
    return {"status": summary["status"], "step": summary.get("steps", 0), **final}


def run_trial(config: dict, spec: TrialSpec) -> None:
    """Ray Tune function trainable: one training run with this trial's axis values."""
    from gru_sweep.run import train_run  # the training stack: imported in the trial only
    from gru_sweep.sweep_callback import ReportToTune

    values, rep = config["axes"], config.get("rep")
    name = trial_name(values, rep)
    run_dir = Path(spec.sweep_dir) / "trials" / name
    cfg = trial_config(spec.base, spec.group_nodes, values, rep)
    # W&B: one group per sweep, each run tagged with its axis values (train_run honours these).
    OmegaConf.update(cfg, "logger.group", spec.sweep_name, force_add=True)
    OmegaConf.update(cfg, "logger.tags", axis_tags(values) + ([f"rep={rep}"] if rep is not None else []),
                     force_add=True)
    OmegaConf.update(cfg, "logger.run_name", name, force_add=True)
    # Tune prints the trials' progress; per-trial progress bars would interleave in the driver's log.
    OmegaConf.update(cfg, "trainer.enable_progress_bar", False, force_add=True)
    OmegaConf.resolve(cfg)
    if spec.skip_invalid:
        from gru_sweep.config import validate
        from gru_sweep.errors import ConfigError

        try:
            validate(cfg)
        except ConfigError as err:
            tune.report({"status": "skipped", "step": 0, "error": str(err), spec.metric: math.nan})
            return

    where = placement()
    log = TrialLog(run_dir / "trial.json")
    log.start(tune.get_context().get_trial_id(), where)
    final = _finished(run_dir)
    reporter = ReportToTune(spec, where, log)
    if final is None:
        result = train_run(cfg, run_dir, extra_callbacks=[reporter])
        final = {"status": result.status, "step": result.steps, **result.final}
    last = {k: v for k, v in reporter.last.items() if k in ("tokens", "train/tokens")}
    final.setdefault(spec.metric, math.nan)  # Tune wants the metric in every result
    log.update(ended=time.time(), status=final["status"], end_step=final["step"])
    tune.report({**last, **final, **where})
