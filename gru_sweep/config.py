"""Structured configs for the run-level groups and validation of a composed Hydra config.

Each group has a schema dataclass; `validate` merges every group of the composed config into its
schema (so types are checked by OmegaConf and ranges by the dataclass's ``__post_init__``) and turns
any failure into one `ConfigError` naming the key, the value and the valid choices. The task and
cell schemas are in data_schema.py and cell_schema.py. None of these imports torch or Lightning,
so a sweep's driver validates every grid point in about a second and never loads the training
stack (its trials do).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from gru_sweep.cell_schema import CellConfig, GateInitConfig, check_gate_init
from gru_sweep.errors import ConfigError, require_choice, require_int, require_positive, require_range
from gru_sweep.data_schema import DATA_SCHEMAS


@dataclass
class ModelConfig:
    encoding: str = "onehot"
    embedding_dim: int = 32

    def __post_init__(self):
        require_choice("encoding", self.encoding, ("onehot", "embedding"))
        require_positive("embedding_dim", self.embedding_dim)


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    clip_mode: str = "norm"
    clip_value: float = 1.0
    schedule: str = "none"
    warmup_steps: int = 0
    step_size: int = 1000
    gamma: float = 0.5

    def __post_init__(self):
        require_choice("name", self.name, ("adam", "rmsprop", "sgd"))
        require_positive("lr", self.lr)
        require_range("weight_decay", self.weight_decay, 0.0, 1.0)
        require_range("momentum", self.momentum, 0.0, 0.999999)
        require_choice("clip_mode", self.clip_mode, ("norm", "value", "none"))
        require_positive("clip_value", self.clip_value)
        require_choice("schedule", self.schedule, ("none", "cosine", "step", "warmup_cosine"))
        require_int("warmup_steps", self.warmup_steps, 0)
        require_positive("step_size", self.step_size)
        require_range("gamma", self.gamma, 0.0, 1.0)


@dataclass
class TrainerConfig:
    max_steps: int = 2000
    val_check_interval: int = 200
    limit_val_batches: Optional[int] = None
    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    deterministic: str = "warn"
    log_every_n_steps: int = 20
    enable_progress_bar: bool = True
    num_threads: Optional[int] = None

    def __post_init__(self):
        require_positive("max_steps", self.max_steps)
        require_positive("val_check_interval", self.val_check_interval)
        require_choice("accelerator", self.accelerator, ("auto", "cpu", "gpu", "cuda"))
        # Mixed precision is not supported yet: the custom GRU's recurrence and the probe assume one dtype.
        require_choice("precision", self.precision, ("32-true", "64-true"))
        require_choice("deterministic", str(self.deterministic).lower(), ("true", "false", "warn"))
        require_positive("log_every_n_steps", self.log_every_n_steps)
        if self.num_threads is not None:
            require_positive("num_threads", self.num_threads)


@dataclass
class LoggerConfig:
    name: str = "wandb"
    project: str = "gru_sweep"
    entity: Optional[str] = None
    mode: str = "offline"
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    run_name: Optional[str] = None
    init_timeout: float = 60.0  # seconds W&B may take to start before the run goes on without it

    def __post_init__(self):
        require_choice("name", self.name, ("wandb", "csv", "none"))
        require_positive("init_timeout", self.init_timeout)
        require_choice("mode", self.mode, ("offline", "online", "disabled"))


@dataclass
class ProbeConfig:
    enabled: bool = True
    every_n_steps: int = 100
    batch_size: int = 32
    horizon_fraction: float = 1e-3
    max_wandb_points: int = 10_000

    def __post_init__(self):
        require_positive("every_n_steps", self.every_n_steps)
        require_positive("batch_size", self.batch_size)
        require_range("horizon_fraction", self.horizon_fraction, 1e-12, 1.0)
        require_positive("max_wandb_points", self.max_wandb_points)


@dataclass
class RunConfig:
    """The validated groups of one training run, as typed objects."""

    data: Any
    cell: CellConfig
    gate_init: GateInitConfig
    optimizer: OptimizerConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    probe: ProbeConfig
    model: ModelConfig
    seed: int
    experiment_name: str


_GROUP_SCHEMAS = {
    "cell": CellConfig,
    "gate_init": GateInitConfig,
    "optimizer": OptimizerConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "probe": ProbeConfig,
    "model": ModelConfig,
}


_TOP_LEVEL = {*_GROUP_SCHEMAS, "data", "seed", "experiment_name", "sweep", "ray"}


def load_group(schema: type, node: Any, group: str) -> Any:
    """Merge one config group into its schema dataclass; any failure becomes a ConfigError."""
    try:
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node or {}))
    except ConfigError as err:
        raise err.under(group) from None
    except ConfigKeyError as err:
        key = str(err.full_key or err.key)
        value, holder = _locate(schema, node, key)
        valid = ", ".join(holder.__dataclass_fields__)
        raise ConfigError(f"{group}.{key}", value, f"unknown key; valid keys: {valid}") from None
    except ValidationError as err:
        key = str(err.full_key or err.key)
        raise ConfigError(f"{group}.{key}", _locate(schema, node, key)[0],
                          str(err).splitlines()[0]) from None


def _locate(schema: type, node: Any, dotted: str) -> tuple[Any, type]:
    """The value at a dotted key of a group's node, and the schema dataclass whose field its
    last part is (a nested one such as sweep.scheduler's), for the error message."""
    parts = dotted.split(".")
    holder = schema
    for part in parts[:-1]:
        node = _value_at(node, part)
        hint = typing.get_type_hints(holder).get(part)
        if not dataclasses.is_dataclass(hint):
            break
        holder = hint
    return _value_at(node, parts[-1]), holder


def _value_at(node: Any, key: Any) -> Any:
    try:
        return node[key]
    except (KeyError, TypeError, OmegaConfBaseException):
        return None


def validate(cfg: DictConfig) -> RunConfig:
    """Check every group of a composed run config; raise one ConfigError on the first problem."""
    try:  # resolve interpolations against the whole config before groups are merged one by one
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    except OmegaConfBaseException as err:
        raise ConfigError(str(err.full_key), None, str(err).splitlines()[0]) from None
    unknown = set(cfg) - _TOP_LEVEL
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(key, cfg[key], "unknown top-level key; valid keys: " + ", ".join(sorted(_TOP_LEVEL)))
    groups = {}
    for group, schema in _GROUP_SCHEMAS.items():
        groups[group] = load_group(schema, cfg.get(group) or {}, group)

    data_node = cfg.get("data")
    if data_node is None or "name" not in data_node:
        raise ConfigError("data.name", None, "choose one of " + ", ".join(DATA_SCHEMAS))
    require_choice("data.name", data_node.name, DATA_SCHEMAS)
    groups["data"] = load_group(DATA_SCHEMAS[data_node.name], data_node, "data")

    seed = cfg.get("seed", 0)
    require_int("seed", seed, 0)
    run = RunConfig(**groups, seed=seed, experiment_name=str(cfg.get("experiment_name", "default")))
    check_gate_init(run.gate_init, run.cell)
    return run


def to_container(run: RunConfig) -> dict:
    """The validated run config as plain data (for config.yaml, checkpoints and W&B)."""
    out = {}
    for group in ("data", *_GROUP_SCHEMAS):
        out[group] = OmegaConf.to_container(OmegaConf.structured(getattr(run, group)))
    out["seed"] = run.seed
    out["experiment_name"] = run.experiment_name
    return out
