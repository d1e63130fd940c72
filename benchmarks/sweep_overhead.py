"""The sweep section: a Ray Tune sweep's wall time against the ideal (issue 5).

A grid of `trials` copy-task trials, each sized to about `trial_seconds` of training, runs
through the real CLI (`python -m gru_sweep`, embedded Ray with `concurrency` CPUs, one CPU and
one thread per trial). Ideal = the sum of the trials' own times / concurrency, where a trial's
time is its whole `train_run` (started..ended in its trial.json): what the same run costs on
its own, Trainer setup, validations and figures included. Two ratios to it:

- command: the whole `python -m gru_sweep` call (Python and Hydra start, Ray start, the trials,
  summary, report, shutdown): what the researcher waits for;
- span: first trial start to last trial end, the scheduling overhead alone.

The trial length is calibrated first, from short runs of the same config in this process (see
`seconds_per_step`; setup is left out, so trials come out a little longer than asked).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CALIBRATION_STEPS = 60
# The trial: a small copy-task run with the default probe, validation every quarter.
TRIAL_OVERRIDES = ["data.seq_len=50", "data.batch_size=32", "cell.hidden_size=64",
                   "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false",
                   "trainer.num_threads=1", "trainer.accelerator=cpu", "logger=none"]


def _steps_overrides(steps: int) -> list[str]:
    return [f"trainer.max_steps={steps}", f"trainer.val_check_interval={max(1, steps // 4)}"]


def seconds_per_step(workdir: Path) -> float:
    """The marginal time of a training step of the trial config, from runs in this process of
    CALIBRATION_STEPS and 3x that (their difference leaves the setup out), after a first run
    that takes the one-time costs (lazy imports, first calls)."""
    import torch
    from hydra import compose, initialize_config_dir

    from gru_sweep.__main__ import CONF_DIR
    from gru_sweep.run import train_run

    threads = torch.get_num_threads()
    times = []
    try:
        for steps in (CALIBRATION_STEPS, CALIBRATION_STEPS, 3 * CALIBRATION_STEPS):
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                cfg = compose(config_name="config",
                              overrides=[*TRIAL_OVERRIDES, *_steps_overrides(steps)])
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # the run's own summary: not ours
                train_run(cfg, workdir / f"calibration_{len(times)}")
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)  # the run sets trainer.num_threads for this process
    return (times[2] - times[1]) / (2 * CALIBRATION_STEPS)


def sweep_overhead(trials: int = 8, trial_seconds: float = 20.0, concurrency: int = 2) -> dict:
    """Run the sweep and return its timings and the two ratios (see the module docstring)."""
    missing = [name for name in ("hydra", "ray") if importlib.util.find_spec(name) is None]
    if missing:  # e.g. a GPU image with torch alone
        return {"skipped": f"not installed: {', '.join(missing)}"}
    with tempfile.TemporaryDirectory(prefix="gru_sweep_bench_") as tmp:
        workdir = Path(tmp)
        per_step = seconds_per_step(workdir)
        # a multiple of 4, so the last of the 4 validations falls on the last step (no extra one)
        steps = 4 * max(CALIBRATION_STEPS // 4, round(trial_seconds / per_step / 4))
        sweep_dir = workdir / "sweep"
        command = [sys.executable, "-m", "gru_sweep", *TRIAL_OVERRIDES, *_steps_overrides(steps),
                   "sweep=base", "sweep.name=overhead", f"++sweep.axes={{seed:{{grid:{list(range(trials))}}}}}",
                   "sweep.resources_per_trial.cpu=1", f"ray.num_cpus={concurrency}",
                   f"sweep.dir={sweep_dir}", f"hydra.run.dir={workdir / 'hydra'}"]
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # loopback only
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=max(600, 5 * trials * trial_seconds / concurrency))
        command_s = time.perf_counter() - started
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise RuntimeError(f"the sweep failed (exit {done.returncode}):\n{tail}")
        attempts = [attempt for path in sorted(sweep_dir.glob("trials/*/trial.json"))
                    for attempt in json.loads(path.read_text())["attempts"]]
    if len(attempts) != trials or any("ended" not in a for a in attempts):
        raise RuntimeError(f"expected {trials} finished trials, found {len(attempts)} attempts")
    durations = [a["ended"] - a["started"] for a in attempts]
    ideal = sum(durations) / concurrency
    span = max(a["ended"] for a in attempts) - min(a["started"] for a in attempts)
    return {"setup": f"{trials} trials of `{' '.join(TRIAL_OVERRIDES[:3])}` for {steps} steps, "
                     f"{concurrency} at a time on {concurrency} CPUs, one thread each",
            "trials": trials, "concurrency": concurrency, "most at once": most_at_once(attempts),
            "calibrated s/step": per_step,
            "trial s (mean)": sum(durations) / trials, "ideal s": ideal, "span s": span,
            "command s": command_s, "overhead s": command_s - ideal,
            "span / ideal": span / ideal, "command / ideal": command_s / ideal}


def most_at_once(attempts: list[dict]) -> int:
    """The largest number of trials training at the same moment."""
    events = sorted([(a["started"], 1) for a in attempts] + [(a["ended"], -1) for a in attempts])
    running = most = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start
        running += change
        most = max(most, running)
    return most


def projected_ratio(result: dict, trial_seconds: float) -> float:
    """command / ideal had the trials taken trial_seconds each: the overhead is a fixed cost
    (start, trial processes' imports, summary, report, shutdown), not a share of the trials."""
    return 1 + result["overhead s"] / (result["trials"] * trial_seconds / result["concurrency"])
