"""Fast tests of the sweep config: axes -> Ray Tune search space, validation, trial configs."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from gru_sweep.config import validate
from gru_sweep.errors import ConfigError
from gru_sweep.config import load_group
from gru_sweep.sweep_config import RayConfig, SweepConfig, parse_axis
from gru_sweep.sweep_scheduler import GroupedASHA, build_scheduler
from gru_sweep.sweep_space import (check_axes, compose_group_nodes, freeze_resolvers, param_space, trial_config,
                                   trial_name)
from gru_sweep.sweep_summary import trial_status

CONF = str(Path(__file__).resolve().parent.parent / "conf")
SMOKE = ["+experiment=smoke", "sweep=seq_len_x_init"]


@pytest.fixture
def hydra_conf():
    """compose() against the project's conf/ (what @hydra.main gives run_sweep)."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        yield lambda *overrides: compose(config_name="config", overrides=[*SMOKE, *overrides])


def sweep_cfg(**keys) -> SweepConfig:
    return load_group(SweepConfig, {"name": "t", "axes": {"data.seq_len": {"grid": [5, 10]}}, **keys}, "sweep")


# --- axes and the sweep schema -------------------------------------------------------------

def test_each_domain_parses_to_its_values():
    assert parse_axis("a", {"grid": [1, 2]}).values == (1, 2)
    assert parse_axis("a", {"choice": ["x", "y"]}).kind == "choice"
    assert parse_axis("a", {"uniform": [0, 1]}).values == (0.0, 1.0)
    assert parse_axis("a", {"loguniform": [1e-4, 1e-2]}).is_random


@pytest.mark.parametrize("spec, where", [
    ({"grid": [1], "choice": [2]}, "axes.a"),
    ({"normal": [0, 1]}, "axes.a"),
    ({"grid": []}, "axes.a.grid"),
    ({"grid": [1, 1]}, "axes.a.grid"),
    ({"uniform": [1, 0]}, "axes.a.uniform"),
    ({"loguniform": [0, 1]}, "axes.a.loguniform"),
    ({"uniform": [0, 1, 2]}, "axes.a.uniform"),
])
def test_bad_domain_names_the_axis(spec, where):
    with pytest.raises(ConfigError) as err:
        parse_axis("a", spec)
    assert err.value.key == where


@pytest.mark.parametrize("keys, where", [
    ({"bogus": 1}, "sweep.bogus"),
    ({"name": "none"}, "sweep.name"),
    ({"axes": {}}, "sweep.axes"),
    ({"mode": "best"}, "sweep.mode"),
    ({"num_samples": 0}, "sweep.num_samples"),
    ({"resume": True}, "sweep.dir"),
    ({"resources_per_trial": {"gpu": 1.5}}, "sweep.resources_per_trial.gpu"),
    ({"scheduler": {"name": "hyperband"}}, "sweep.scheduler.name"),
    ({"scheduler": {"name": "asha"}}, "sweep.scheduler.group_by"),  # steps across seq_len
    ({"scheduler": {"name": "asha", "time_attr": "tokens"}}, "sweep.scheduler.max_t"),
    ({"scheduler": {"name": "asha", "group_by": "cell"}}, "sweep.scheduler.group_by"),
])
def test_bad_sweep_key_is_named(keys, where):
    with pytest.raises(ConfigError) as err:
        sweep_cfg(**keys)
    assert err.value.key == where


@pytest.mark.parametrize("keys, value, says", [
    ({"scheduler": {"grace_period": "abc"}}, "abc", "could not be converted"),
    ({"resources_per_trial": {"cpu": "many"}}, "many", "could not be converted"),
    # an unknown nested key lists the keys of its own section, not the sweep's
    ({"scheduler": {"gracee": 3}}, 3,
     "valid keys: name, time_attr, group_by, grace_period, reduction_factor, max_t"),
])
def test_bad_nested_sweep_key_names_its_value_and_choices(keys, value, says):
    with pytest.raises(ConfigError) as err:
        sweep_cfg(**keys)
    assert err.value.value == value and says in err.value.expected


def test_asha_per_seq_len_or_on_tokens_is_accepted():
    assert sweep_cfg(scheduler={"name": "asha", "group_by": "data.seq_len"}).scheduler.group_by == "data.seq_len"
    assert sweep_cfg(scheduler={"name": "asha", "time_attr": "tokens", "max_t": 1e6}).scheduler.max_t == 1e6


def test_ray_resources_only_for_the_embedded_ray():
    assert load_group(RayConfig, {"num_gpus": 4}, "ray").num_gpus == 4
    with pytest.raises(ConfigError, match="ray.num_gpus"):
        load_group(RayConfig, {"address": "auto", "num_gpus": 4}, "ray")


# --- search space and trial names ----------------------------------------------------------

def test_param_space_translates_each_domain():
    axes = [parse_axis("data.seq_len", {"grid": [5, 10]}), parse_axis("gate_init", {"choice": ["a", "b"]}),
            parse_axis("optimizer.lr", {"loguniform": [1e-4, 1e-2]}),
            parse_axis("optimizer.momentum", {"uniform": [0.5, 0.9]})]
    space = param_space(axes, num_samples=3)
    assert space["axes"]["data.seq_len"] == tune.grid_search([5, 10])
    assert space["axes"]["gate_init"].categories == ["a", "b"]
    lr, momentum = space["axes"]["optimizer.lr"], space["axes"]["optimizer.momentum"]
    assert (lr.lower, lr.upper, type(lr.get_sampler()).__name__) == (1e-4, 1e-2, "_LogUniform")
    assert (momentum.lower, momentum.upper, type(momentum.get_sampler()).__name__) == (0.5, 0.9, "_Uniform")
    assert space["rep"] == tune.grid_search([0, 1, 2])
    assert "rep" not in param_space(axes, num_samples=1)


def test_trial_name_depends_on_values_only():
    values = {"data.seq_len": 10, "gate_init": "chrono", "optimizer.lr": 0.0012345678}
    assert trial_name(values) == "seq_len=10,gate_init=chrono,lr=0.00123457"
    assert trial_name(values, rep=2) == trial_name(dict(values), rep=2) == trial_name(values) + ",rep=2"
    # two keys ending alike keep their full names; very long names are cut and hashed
    assert trial_name({"data.seq_len": 5, "probe.seq_len": 6}) == "data.seq_len=5,probe.seq_len=6"
    long = {f"k{i}": "x" * 20 for i in range(10)}
    assert len(trial_name(long)) <= 120 and trial_name(long) != trial_name({**long, "k9": "y" * 20})


# --- axes against the composed config ------------------------------------------------------

@pytest.mark.parametrize("key, spec, message", [
    ("data.seq_lenn", {"grid": [5]}, "'data.seq_lenn' is not a key"),
    ("gate_init", {"grid": ["default", "chrono2"]}, "choose one of chrono, default"),
    ("cell", {"uniform": [0, 1]}, "config group"),
    ("data.seq_len", {"uniform": [5, 10]}, "use grid or choice"),
    ("model", {"grid": ["a"]}, "config section"),
    ("sweep.num_samples", {"grid": [1, 2]}, "cannot vary sweep"),
])
def test_bad_axis_is_named(hydra_conf, key, spec, message):
    cfg = hydra_conf()
    with pytest.raises(ConfigError, match=message) as err:
        check_axes(cfg, [parse_axis(key, spec)])
    assert err.value.key == f"sweep.axes.{key}"


def test_trial_config_equals_composing_its_overrides(hydra_conf):
    """Group axis + value axis merged into the frozen base == a single run's composed config."""
    cfg = hydra_conf()
    axes = [parse_axis("data.seq_len", {"grid": [5, 7]}), parse_axis("gate_init", {"grid": ["default", "chrono"]}),
            parse_axis("optimizer.lr", {"loguniform": [1e-4, 1e-2]})]
    assert check_axes(cfg, axes) == ["gate_init"]
    nodes = compose_group_nodes("config", SMOKE, [axes[1]])
    assert nodes["gate_init"]["chrono"]["t_max"] == "${data.seq_len}"  # kept live for the trial's seq_len

    base = freeze_resolvers(cfg)
    trial = trial_config(base, nodes, {"data.seq_len": 7, "gate_init": "chrono", "optimizer.lr": 0.003})
    OmegaConf.resolve(trial)
    single = hydra_conf("data.seq_len=7", "gate_init=chrono", "optimizer.lr=0.003")
    assert OmegaConf.to_container(trial) == OmegaConf.to_container(single, resolve=True)
    assert trial.gate_init.t_max == 7
    validate(trial)

    # Repeats of a grid point differ only in their seed: base seed + repeat index.
    repeats = [trial_config(base, nodes, {"data.seq_len": 7}, rep=k) for k in range(3)]
    assert [r.seed for r in repeats] == [base["seed"] + k for k in range(3)]
    assert OmegaConf.to_container(repeats[2]) == {**OmegaConf.to_container(repeats[0]), "seed": base["seed"] + 2}


def test_resolver_calls_are_frozen_and_references_kept():
    cfg = OmegaConf.create({"a": 3, "ref": "${a}", "year": "${now:%Y}", "home": "${oc.env:HOME}",
                            "nested": {"path": "${oc.env:HOME}/x", "items": ["${a}", "${oc.env:HOME}"]}})
    frozen = freeze_resolvers(cfg)
    home = OmegaConf.create({"h": "${oc.env:HOME}"}).h
    assert frozen["ref"] == "${a}" and frozen["nested"]["items"][0] == "${a}"
    assert frozen["home"] == home and frozen["nested"]["path"] == home + "/x" and frozen["nested"]["items"][1] == home
    assert frozen["year"].isdigit()


def test_invalid_grid_point_fails_before_ray_starts(hydra_conf, tmp_path):
    from gru_sweep.tune import run_sweep

    cfg = hydra_conf(f"sweep.dir={tmp_path / 'sweep'}", "sweep.axes={data.seq_len:{grid:[5]},gate_init:{grid:[chrono]}}",
                     "++sweep.axes={cell:{grid:[custom_gru,rnn]}}")
    with pytest.raises(ConfigError, match=r"gate_init.*\(in trial seq_len=5,gate_init=chrono,cell=rnn\)"):
        run_sweep(cfg)
    assert not (tmp_path / "sweep").exists()  # nothing written that looks like a sweep


# --- schedulers and statuses ---------------------------------------------------------------

def _trial(trial_id, seq_len):
    return SimpleNamespace(trial_id=trial_id, config={"axes": {"data.seq_len": seq_len}})


def test_grouped_asha_compares_trials_only_within_their_group():
    kwargs = dict(time_attr="step", max_t=40, grace_period=10, reduction_factor=2, stop_last_trials=False)
    grouped = GroupedASHA("data.seq_len", **kwargs)
    grouped.set_search_properties("val/loss", "min")
    plain = AsyncHyperBandScheduler(metric="val/loss", mode="min", **kwargs)
    a1, a2, b1 = _trial("a1", 5), _trial("a2", 5), _trial("b1", 50)
    decisions = {}
    for sched in (grouped, plain):
        for trial in (a1, a2, b1):
            sched.on_trial_add(None, trial)
        decisions[sched] = [sched.on_trial_result(None, t, {"step": 10, "val/loss": loss})
                            for t, loss in ((a1, 1.0), (a2, 2.0), (b1, 5.0))]
    # a2 loses to a1 in both; b1 (a harder, longer sequence) only loses to the short ones in plain ASHA
    assert decisions[grouped] == [TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.CONTINUE]
    assert decisions[plain] == [TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.STOP]


def test_build_scheduler_defaults_max_t_to_the_run_length():
    assert type(build_scheduler(sweep_cfg().scheduler, 1000, 100)) is FIFOScheduler
    asha = build_scheduler(sweep_cfg(scheduler={"name": "asha", "group_by": "data.seq_len"}).scheduler, 1000, 100)
    assert isinstance(asha, GroupedASHA) and asha.asha_kwargs["max_t"] == 1000
    iters = sweep_cfg(scheduler={"name": "asha", "group_by": "data.seq_len", "time_attr": "training_iteration"})
    assert build_scheduler(iters.scheduler, 1000, 100).asha_kwargs["max_t"] == 10


@pytest.mark.parametrize("status, last, expected", [
    (Trial.TERMINATED, {"status": "completed"}, "completed"),
    (Trial.TERMINATED, {"status": "diverged"}, "diverged"),
    (Trial.TERMINATED, {"step": 10}, "stopped"),
    (Trial.ERROR, {"step": 10}, "error"),
    (Trial.PENDING, {}, "unfinished"),
    (Trial.RUNNING, {"step": 10}, "unfinished"),
])
def test_trial_status(status, last, expected):
    assert trial_status(SimpleNamespace(status=status, last_result=last)) == expected


def test_the_sweep_driver_loads_neither_torch_nor_lightning():
    # validating every grid point, scheduling, the summary and the report need no training
    # stack: importing it would add ~2 s to every sweep's start (benchmarks/README.md)
    code = ("import sys, gru_sweep.__main__, gru_sweep.tune, gru_sweep.report, gru_sweep.config; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
