"""A sweep: the `sweep:` group of a composed Hydra config -> Ray Tune trials -> summary and report.

``python -m gru_sweep +experiment=NAME`` calls `run_sweep` when the experiment declares a sweep.
Each trial is one `gru_sweep.run.train_run` (see sweep_trial.py) in
``<sweep_dir>/trials/<name>``; the sweep directory also holds Ray's experiment (``ray/``), the
sweep's own frozen inputs (``sweep.yaml``), ``summary.csv`` and the report.

An interrupted sweep (Ctrl-C, a killed driver) continues with the same command plus
``sweep.resume=true sweep.dir=<sweep_dir>``: Tune restores its trials (finished ones are kept, not
re-run) and every unfinished trial resumes from the newest Lightning checkpoint in its run
directory. If Ray never got to write its experiment state, the sweep starts over in the same
directory and the trials still resume from their run directories.
"""
from __future__ import annotations

import itertools
import logging
import shlex
import time
from contextlib import contextmanager
from pathlib import Path

import ray
from omegaconf import DictConfig, OmegaConf
from ray import tune
from ray.tune.search import BasicVariantGenerator

from gru_sweep.errors import ConfigError, SweepInterrupted
from gru_sweep.config import load_group
from gru_sweep.sweep_config import RayConfig, SweepConfig
from gru_sweep.sweep_scheduler import build_scheduler
from gru_sweep.sweep_space import (check_axes, compose_group_nodes, freeze_resolvers, param_space, trial_config,
                                   trial_name)
from gru_sweep.sweep_summary import format_table, summary_rows, write_summary
from gru_sweep.sweep_trial import TrialSpec, run_trial

log = logging.getLogger(__name__)

RAY_EXPERIMENT = "ray"  # Ray's experiment directory inside the sweep directory
SPEC_FILE = "sweep.yaml"  # the driver's frozen trial base and group nodes


def run_sweep(cfg: DictConfig) -> Path:
    """Run (or resume) the sweep declared in cfg.sweep; return the sweep directory."""
    requested = load_group(SweepConfig, cfg.sweep, "sweep")
    ray_cfg = load_group(RayConfig, cfg.get("ray"), "ray")
    sweep_dir = _sweep_dir(requested)
    if requested.resume:
        base, group_nodes = _load_spec(sweep_dir)
        sweep = load_group(SweepConfig, base["sweep"], "sweep")
    else:
        sweep = requested
        base, group_nodes = _freeze(cfg, sweep, sweep_dir)
    scheduler = build_scheduler(sweep.scheduler, base["trainer"]["max_steps"], base["trainer"]["val_check_interval"])
    spec = TrialSpec(sweep_name=sweep.name, sweep_dir=str(sweep_dir), base=base, group_nodes=group_nodes,
                     metric=sweep.metric, skip_invalid=sweep.skip_invalid)
    resume_hint = shlex.join([*_overrides_without_resume(), "sweep.resume=true", f"sweep.dir={sweep_dir}"])
    print(f"sweep {sweep.name}: {sweep_dir}\n  resume with: python -m gru_sweep {resume_hint}", flush=True)

    with _ray(ray_cfg):
        tuner = _tuner(sweep, spec, scheduler, sweep_dir, resume=requested.resume)
        tuner.fit()
        trials = tune.ExperimentAnalysis(str(sweep_dir / RAY_EXPERIMENT)).trials

    frame = summary_rows(trials, [a.key for a in sweep.axis_list], sweep_dir)
    write_summary(frame, sweep_dir)
    print(f"\nsweep {sweep.name}: {len(frame)} trials\n{format_table(frame, sweep.metric)}\n"
          f"summary: {sweep_dir / 'summary.csv'}", flush=True)
    if (frame["status"] == "unfinished").any():
        raise SweepInterrupted(f"sweep interrupted; resume with: python -m gru_sweep {resume_hint}")
    _write_report(sweep_dir)
    return sweep_dir


def _sweep_dir(sweep: SweepConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if sweep.dir:
        path = Path(sweep.dir)
    elif HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.output_dir)
    else:
        path = Path("outputs/sweeps") / f"{sweep.name}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return path.resolve()


def _hydra_command() -> tuple[list[str], str]:
    """The command line's overrides and config name (none outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], "config"
    hydra_cfg = HydraConfig.get()
    return list(hydra_cfg.overrides.task), hydra_cfg.job.config_name


def _overrides_without_resume() -> list[str]:
    keys = ("sweep.resume", "sweep.dir", "hydra.run.dir")
    return [o for o in _hydra_command()[0] if not o.lstrip("+~").startswith(keys)]


def _freeze(cfg: DictConfig, sweep: SweepConfig, sweep_dir: Path) -> tuple[dict, dict]:
    """The trial base and group nodes of a new sweep, checked and written to sweep.yaml."""
    spec_path = sweep_dir / SPEC_FILE
    if spec_path.exists():
        raise ConfigError("sweep.dir", str(sweep_dir), "already holds a sweep: add sweep.resume=true to "
                                                       "continue it, or choose another sweep.dir")
    group_keys = check_axes(cfg, sweep.axis_list)
    overrides, config_name = _hydra_command()
    group_nodes = compose_group_nodes(config_name, overrides, [a for a in sweep.axis_list if a.key in group_keys])
    base = freeze_resolvers(cfg)
    base["sweep"].update(dir=str(sweep_dir), resume=False)
    _check_scheduler(sweep, base)
    _check_trials(base, group_nodes, sweep)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create({"base": base, "group_nodes": group_nodes}), spec_path)
    return base, group_nodes


def _load_spec(sweep_dir: Path) -> tuple[dict, dict]:
    spec_path = sweep_dir / SPEC_FILE
    if not spec_path.exists():
        raise ConfigError("sweep.dir", str(sweep_dir), f"holds no sweep to resume (no {SPEC_FILE})")
    spec = OmegaConf.to_container(OmegaConf.load(spec_path), resolve=False)
    return spec["base"], spec["group_nodes"]


def _check_scheduler(sweep: SweepConfig, base: dict) -> None:
    sched = sweep.scheduler
    if sched.name == "asha" and sched.max_t is None:
        steps, interval = base["trainer"]["max_steps"], base["trainer"]["val_check_interval"]
        max_t = steps if sched.time_attr == "step" else max(1, steps // interval)
        if sched.grace_period > max_t:
            raise ConfigError("sweep.scheduler.grace_period", sched.grace_period,
                              f"must be <= max_t ({max_t} {sched.time_attr}s)")


def _check_trials(base: dict, group_nodes: dict, sweep: SweepConfig) -> None:
    """Validate every grid point's config before any trial starts (random axes at their low end).

    With sweep.skip_invalid the invalid points are listed (their trials end as 'skipped');
    otherwise the first one stops the sweep.
    """
    from gru_sweep.config import validate

    keys = [a.key for a in sweep.axis_list]
    combos = list(itertools.product(*[a.values[:1] if a.is_random else a.values for a in sweep.axis_list]))
    invalid = []
    for combo in combos:
        values = dict(zip(keys, combo))
        cfg = trial_config(base, group_nodes, values)
        try:
            OmegaConf.resolve(cfg)
            validate(cfg)
        except ConfigError as err:
            if not sweep.skip_invalid:
                raise ConfigError(err.key, err.value, f"{err.expected} (in trial {trial_name(values)})") from None
            invalid.append(f"{trial_name(values)}: {err}")
    if len(invalid) == len(combos):
        raise ConfigError("sweep.axes", dict(sweep.axes), "no grid point is a valid config:\n  " + "\n  ".join(invalid))
    if invalid:
        print(f"skipping {len(invalid)} invalid grid point(s) (sweep.skip_invalid=true):\n  " + "\n  ".join(invalid),
              flush=True)


@contextmanager
def _ray(cfg: RayConfig):
    """Embedded local Ray (address null) or a running cluster; shut down again if started here."""
    if ray.is_initialized():  # the caller's Ray session
        yield
        return
    if cfg.address is None:
        ray.init(address="local", num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, _temp_dir=cfg.temp_dir,
                 include_dashboard=cfg.include_dashboard, _node_ip_address=cfg.node_ip)
    else:
        ray.init(address=cfg.address, _node_ip_address=cfg.node_ip)
    try:
        yield
    finally:
        ray.shutdown()


def _trial_dir_name(trial) -> str:
    return trial_name(trial.config["axes"], trial.config.get("rep"))


def _tuner(sweep: SweepConfig, spec: TrialSpec, scheduler, sweep_dir: Path, resume: bool) -> tune.Tuner:
    res = sweep.resources_per_trial
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec), {"cpu": res.cpu, "gpu": res.gpu})
    experiment = sweep_dir / RAY_EXPERIMENT
    if resume and tune.Tuner.can_restore(experiment):
        return tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=True)
    if resume:
        log.warning("no Ray experiment state in %s: starting its trials again; each resumes from the "
                    "checkpoints in its run directory", experiment)
    return tune.Tuner(
        trainable,
        param_space=param_space(sweep.axis_list, sweep.num_samples),
        tune_config=tune.TuneConfig(
            metric=sweep.metric, mode=sweep.mode, scheduler=scheduler, num_samples=1,
            # Seeded, so random axes draw the same values again when a sweep starts over.
            # (TuneConfig.max_concurrent_trials is ignored with a search_alg of this kind.)
            search_alg=BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent_trials or 0),
            reuse_actors=True,  # a trial process imports torch and Lightning once, not per trial
            trial_name_creator=_trial_dir_name, trial_dirname_creator=_trial_dir_name,
        ),
        run_config=tune.RunConfig(
            name=RAY_EXPERIMENT, storage_path=str(sweep_dir),
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        ),
    )


def _write_report(sweep_dir: Path) -> None:
    from gru_sweep.report import write_report  # matplotlib: only at the end of a sweep

    try:
        path = write_report(sweep_dir)
    except Exception:  # noqa: BLE001 - the results are written; the report is made from them
        log.exception("the report failed; the results are in %s. Retry with: python -m "
                      "gru_sweep.report %s", sweep_dir / "summary.csv", sweep_dir)
        return
    print(f"report: {path}", flush=True)
