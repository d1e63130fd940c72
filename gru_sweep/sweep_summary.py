"""The sweep's summary table: one row per trial, built from Tune's trials at the end of a sweep."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune.experiment import Trial

from gru_sweep.sweep_space import trial_name
from gru_sweep.sweep_trial import FINISHED

PLACEMENT = ("node_ip", "node_id", "gpu_ids")


def trial_status(trial: Trial) -> str:
    """completed | diverged (the run's own status), stopped (by the scheduler), error, unfinished."""
    if trial.status == Trial.ERROR:
        return "error"
    if trial.status != Trial.TERMINATED:
        return "unfinished"
    status = trial.last_result.get("status")
    return status if status in FINISHED else "stopped"


def _attempts(run_dir: Path) -> int:
    path = run_dir / "trial.json"
    return len(json.loads(path.read_text())["attempts"]) if path.exists() else 0


def summary_rows(trials: list[Trial], axis_keys: list[str], sweep_dir: Path) -> pd.DataFrame:
    rows = []
    for trial in sorted(trials, key=lambda t: t.trial_id.rsplit("_", 1)[-1]):  # Tune's creation order
        values, rep = trial.config["axes"], trial.config.get("rep")
        run_dir = sweep_dir / "trials" / trial_name(values, rep)
        result = trial.last_result or {}
        row: dict[str, Any] = {"trial_id": trial.trial_id, "status": trial_status(trial)}
        row.update({key: values[key] for key in axis_keys})
        if rep is not None:
            row["rep"] = rep
        row.update({k: v for k, v in sorted(result.items()) if k.startswith(("val/", "test/"))})
        row["step"] = result.get("step", math.nan)
        row.update({k: result.get(k, "") for k in PLACEMENT})
        row["attempts"] = _attempts(run_dir)
        row["run_dir"] = str(run_dir)
        row["error"] = _error_line(trial)
        rows.append(row)
    frame = pd.DataFrame(rows)
    metrics = sorted(c for c in frame.columns if c.startswith(("val/", "test/")))
    fixed = ["trial_id", "status", *axis_keys, *(["rep"] if "rep" in frame else [])]
    return frame[fixed + metrics + ["step", *PLACEMENT, "attempts", "run_dir", "error"]]


def _error_line(trial: Trial) -> str:
    if trial.status != Trial.ERROR:
        return ""
    error = trial.get_error()
    lines = [line for line in str(error).splitlines() if line.strip()] if error else []
    return lines[-1][:300] if lines else "error"


def write_summary(frame: pd.DataFrame, sweep_dir: Path) -> Path:
    path = sweep_dir / "summary.csv"
    tmp = path.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def format_table(frame: pd.DataFrame, metric: str) -> str:
    """The printed table: status, axes, the sweep's metric and step (run dirs are in the CSV)."""
    axis_cols = [c for c in frame.columns[2:] if not c.startswith(("val/", "test/"))
                 and c not in ("step", *PLACEMENT, "attempts", "run_dir", "error")]
    cols = ["status", *axis_cols, *([metric] if metric in frame else []), "step", "node_ip", "attempts"]
    return frame[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")
