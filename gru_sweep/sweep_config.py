"""Schemas of the `sweep:` and `ray:` config groups, and the parsed form of a sweep's axes.

Validated like every other group (see gru_sweep/config.py): merge into the dataclass, let
``__post_init__`` check ranges and choices, turn every failure into one `ConfigError` that names
the key (prefixed with the group), the value and what would be valid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


from gru_sweep.errors import ConfigError, require_choice, require_positive

DOMAINS = ("grid", "choice", "uniform", "loguniform")
TIME_ATTRS = ("step", "tokens", "training_iteration")


@dataclass(frozen=True)
class Axis:
    """One axis of a sweep: a dotted config key (or a config group) and its domain."""

    key: str
    kind: str  # one of DOMAINS
    values: tuple  # grid/choice: the values; uniform/loguniform: (low, high)

    @property
    def is_random(self) -> bool:
        return self.kind in ("uniform", "loguniform")


def parse_axis(key: str, spec: Any) -> Axis:
    where = f"axes.{key}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DOMAINS:
        raise ConfigError(where, spec, "give exactly one domain: {grid: [...]}, {choice: [...]}, "
                                       "{uniform: [low, high]} or {loguniform: [low, high]}")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{where}.{kind}", values, "must be a non-empty list")
    if kind in ("grid", "choice"):
        if any(isinstance(v, (dict, list)) for v in values):
            raise ConfigError(f"{where}.{kind}", values, "values must be numbers, strings or booleans")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{where}.{kind}", values, "values must be distinct")
        return Axis(key, kind, tuple(values))
    numbers = len(values) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numbers or not values[0] < values[1] or (kind == "loguniform" and values[0] <= 0):
        lowest = "0 < low" if kind == "loguniform" else "low"
        raise ConfigError(f"{where}.{kind}", values, f"must be [low, high] with {lowest} < high")
    return Axis(key, kind, (float(values[0]), float(values[1])))


@dataclass
class SchedulerConfig:
    name: str = "fifo"  # fifo | asha
    # What ASHA counts progress in: "step" (optimizer steps), "tokens" (train/tokens, comparable
    # across sequence lengths) or "training_iteration" (Ray's count of reports = validations).
    time_attr: str = "step"
    # An axis key (e.g. data.seq_len): trials compete only within their own value of it.
    group_by: Optional[str] = None
    grace_period: float = 1  # in units of time_attr
    reduction_factor: float = 2
    max_t: Optional[float] = None  # null: trainer.max_steps (step) / number of validations

    def check(self):
        require_choice("name", self.name, ("fifo", "asha"))
        require_choice("time_attr", self.time_attr, TIME_ATTRS)
        require_positive("grace_period", self.grace_period)
        if not self.reduction_factor > 1:
            raise ConfigError("reduction_factor", self.reduction_factor, "must be a number > 1")
        if self.max_t is not None:
            require_positive("max_t", self.max_t)
            if self.max_t < self.grace_period:
                raise ConfigError("max_t", self.max_t, f"must be >= grace_period ({self.grace_period})")


@dataclass
class ResourcesConfig:
    cpu: float = 1
    gpu: float = 0  # fractions share a GPU: 0.25 puts four trials on one device

    def check(self):
        require_positive("cpu", self.cpu)
        if isinstance(self.gpu, bool) or not isinstance(self.gpu, (int, float)) or self.gpu < 0:
            raise ConfigError("gpu", self.gpu, "must be a number >= 0")
        if self.gpu > 1 and self.gpu != int(self.gpu):
            raise ConfigError("gpu", self.gpu, "must be a fraction <= 1 or a whole number of GPUs")


@dataclass
class SweepConfig:
    name: str = "none"
    axes: dict[str, Any] = field(default_factory=dict)
    metric: str = "val/loss"
    mode: str = "min"
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    num_samples: int = 1  # repeats of the grid, repeat k with seed + k; random axes draw anew for each
    seed: int = 0  # draws of the random axes
    resources_per_trial: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_concurrent_trials: Optional[int] = None  # null: as many as the resources allow
    max_failures: int = 2  # retries of a crashed trial, each from its last checkpoint
    dir: Optional[str] = None  # null: the Hydra run directory
    resume: bool = False
    # true: grid points whose config is invalid (e.g. chrono on a vanilla RNN) become 'skipped'
    # rows instead of stopping the sweep before it starts.
    skip_invalid: bool = False

    def __post_init__(self):
        if not self.name or self.name in ("none", "base"):
            raise ConfigError("name", self.name, "name the sweep (it names its W&B group and directory)")
        if not self.axes:
            raise ConfigError("axes", {}, "give at least one axis, e.g. {data.seq_len: {grid: [50, 100]}}")
        self.axis_list = [parse_axis(key, spec) for key, spec in self.axes.items()]
        for group in ("scheduler", "resources_per_trial"):  # nested: prefix their keys
            try:
                getattr(self, group).check()
            except ConfigError as err:
                raise err.under(group) from None
        if not self.metric.startswith(("val/", "train/", "test/")):
            raise ConfigError("metric", self.metric, "name a logged metric, e.g. val/loss")
        require_choice("mode", self.mode, ("min", "max"))
        require_positive("num_samples", self.num_samples)
        if self.max_concurrent_trials is not None:
            require_positive("max_concurrent_trials", self.max_concurrent_trials)
        if self.max_failures < 0:
            raise ConfigError("max_failures", self.max_failures, "must be an integer >= 0")
        if self.resume and not self.dir:
            raise ConfigError("dir", self.dir, "set sweep.dir to the directory of the sweep to resume")
        sched = self.scheduler
        if sched.group_by is not None and sched.group_by not in self.axes:
            raise ConfigError("scheduler.group_by", sched.group_by, "choose one of the axes: " + ", ".join(self.axes))
        if sched.name == "asha" and sched.time_attr != "tokens" and sched.group_by is None:
            # Steps at different sequence lengths see different amounts of data: comparing them
            # would stop long-sequence trials for being slow, not for being bad.
            varied = [a.key for a in self.axis_list if a.key.endswith("seq_len") and len(a.values) > 1]
            if varied:
                raise ConfigError("scheduler.group_by", None,
                                  f"ASHA over {varied[0]} needs group_by={varied[0]} or time_attr=tokens")
        if sched.name == "asha" and sched.time_attr == "tokens" and sched.max_t is None:
            raise ConfigError("scheduler.max_t", None, "set the token budget when time_attr=tokens")


@dataclass
class RayConfig:
    address: Optional[str] = None  # null: embedded local Ray; "auto" or host:port: join a cluster
    include_dashboard: bool = False
    node_ip: Optional[str] = None  # the driver's (and embedded node's) IP, e.g. 127.0.0.1
    num_cpus: Optional[float] = None  # embedded Ray only: null = the machine's
    num_gpus: Optional[float] = None  # embedded Ray only: may advertise GPUs a CPU box lacks
    temp_dir: Optional[str] = None  # Ray's session directory (keep it short: socket paths)

    def __post_init__(self):
        for key in ("num_cpus", "num_gpus"):
            value = getattr(self, key)
            if value is not None and self.address is not None:
                raise ConfigError(key, value, "only for the embedded Ray (address: null); "
                                              "a cluster's nodes declare their own resources")
            if value is not None and value < 0:
                raise ConfigError(key, value, "must be a number >= 0")
