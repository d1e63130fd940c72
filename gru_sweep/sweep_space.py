"""From a composed Hydra config and its sweep axes to Ray Tune's search space and back to one
trial's config.

The driver turns the composed config into a *trial base*: plain data in which every resolver call
(``${hydra:...}``, ``${now:...}``, ``${oc.env:...}``) is already evaluated, since workers have no
Hydra, while plain references such as ``gate_init.t_max: ${data.seq_len}`` stay live, so that a
trial's own axis values flow into whatever depends on them. An axis that names a config group
(``cell``, ``gate_init``, ``data``, ...) takes option names; for each option the driver composes the
config once more with ``<group>=<option>`` added to the command line's overrides (exactly what a
single run with that option would get, experiment overrides included) and keeps the group's node.
A trial then merges its values into the base (group nodes replaced whole, values by dotted key) and
resolves: the same config a single run with those overrides would have.
"""
from __future__ import annotations

import copy
import hashlib
import re
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from ray import tune

from gru_sweep.errors import ConfigError
from gru_sweep.sweep_config import Axis

_RESOLVER_CALL = re.compile(r"\$\{\s*[\w.\-]+\s*:")
_RESERVED = ("sweep", "ray", "hydra")
_MISSING = object()


def freeze_resolvers(cfg: DictConfig) -> dict:
    """cfg as plain data with every resolver call evaluated and every plain reference kept."""

    def walk(raw: Any, node: Any) -> Any:
        if isinstance(raw, dict):
            return {k: walk(v, node[k]) if isinstance(v, (dict, list)) else leaf(v, node, k) for k, v in raw.items()}
        if isinstance(raw, list):
            return [walk(v, node[i]) if isinstance(v, (dict, list)) else leaf(v, node, i) for i, v in enumerate(raw)]
        return raw

    def leaf(raw: Any, node: Any, key: Any) -> Any:
        if not (isinstance(raw, str) and _RESOLVER_CALL.search(raw)):
            return raw
        value = node[key]
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value

    return walk(OmegaConf.to_container(cfg, resolve=False), cfg)


def _config_loader():
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None


def group_options(key: str) -> list[str]:
    """The options of config group `key` ([] when `key` is no group or Hydra is not running)."""
    loader = _config_loader()
    return sorted(loader.get_group_options(key.replace(".", "/"))) if loader else []


def check_axes(cfg: DictConfig, axes: list[Axis]) -> list[str]:
    """Check every axis against the composed config; return the keys of group-valued axes."""
    groups = []
    for axis in axes:
        where = f"sweep.axes.{axis.key}"
        if axis.key.split(".")[0] in _RESERVED:
            raise ConfigError(where, list(axis.values), "the sweep cannot vary sweep.*, ray.* or hydra.* keys")
        node = OmegaConf.select(cfg, axis.key, default=_MISSING, throw_on_missing=False)
        options = group_options(axis.key)
        if node is _MISSING and not options:
            raise ConfigError(where, list(axis.values), f"'{axis.key}' is not a key of the composed config "
                                                        "nor a config group")
        if options and (node is _MISSING or isinstance(node, DictConfig)):
            if axis.is_random:
                raise ConfigError(where, list(axis.values), f"{axis.key} is a config group: use grid or choice "
                                                            "over its options")
            for value in axis.values:
                if value not in options:
                    raise ConfigError(where, value, f"not an option of group {axis.key}; choose one of "
                                                    + ", ".join(options))
            groups.append(axis.key)
        elif isinstance(node, (DictConfig, ListConfig)):
            raise ConfigError(where, list(axis.values), f"'{axis.key}' is a config section, not a value; "
                                                        "sweep one of its keys")
        elif axis.is_random and not (isinstance(node, float) or node is None):
            raise ConfigError(where, list(axis.values), f"{axis.kind} draws floats but {axis.key} is "
                                                        f"{node!r}; use grid or choice")
    return groups


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def compose_group_nodes(config_name: str, overrides: list[str], group_axes: list[Axis]) -> dict:
    """{group key: {option: the group's node, composed as a single run with that option}}."""
    from hydra import compose

    nodes: dict[str, dict[str, Any]] = {}
    for axis in group_axes:
        kept = [o for o in overrides if _override_key(o) != axis.key]
        nodes[axis.key] = {}
        for option in axis.values:
            composed = compose(config_name=config_name, overrides=[*kept, f"{axis.key}={option}"])
            nodes[axis.key][option] = _select_frozen(freeze_resolvers(composed), axis.key)
    return nodes


def _select_frozen(data: dict, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def param_space(axes: list[Axis], num_samples: int) -> dict:
    """Ray Tune's search space: {"axes": {key: domain}} (+ "rep" when the grid is repeated).

    Repeats are a grid axis of their own rather than Tune's num_samples so that every trial has a
    name that depends only on its values: the run directory a resumed trial finds again.
    """
    domains = {
        "grid": lambda a: tune.grid_search(list(a.values)),
        "choice": lambda a: tune.choice(list(a.values)),
        "uniform": lambda a: tune.uniform(*a.values),
        "loguniform": lambda a: tune.loguniform(*a.values),
    }
    space: dict[str, Any] = {"axes": {a.key: domains[a.kind](a) for a in axes}}
    if num_samples > 1:
        space["rep"] = tune.grid_search(list(range(num_samples)))
    return space


def _short_keys(keys: list[str]) -> dict[str, str]:
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _format(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def trial_name(values: dict[str, Any], rep: Optional[int] = None) -> str:
    """A file-safe name that depends only on the trial's values, e.g. 'seq_len=20,gate_init=chrono'."""
    short = _short_keys(list(values))
    parts = [f"{short[k]}={_format(v)}" for k, v in values.items()]
    if rep is not None:
        parts.append(f"rep={rep}")
    name = re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(parts))
    if len(name) > 120:  # keep paths short; the hash keeps names unique
        name = name[:100] + "-" + hashlib.sha1(repr(sorted(values.items())).encode()).hexdigest()[:10]
    return name


def axis_tags(values: dict[str, Any]) -> list[str]:
    short = _short_keys(list(values))
    return [f"{short[k]}={_format(v)}" for k, v in values.items()]


def trial_config(base: dict, group_nodes: dict, values: dict[str, Any], rep: Optional[int] = None) -> DictConfig:
    """The base with the trial's values merged in (group nodes replaced whole), not yet resolved.

    Repeat `rep` of a grid (num_samples > 1) trains with seed base seed + rep.
    """
    cfg = OmegaConf.create(copy.deepcopy(base))
    if rep is not None:
        cfg.seed = cfg.seed + rep
    ordered = sorted(values.items(), key=lambda kv: kv[0] not in group_nodes)  # groups first
    for key, value in ordered:
        OmegaConf.update(cfg, key, copy.deepcopy(group_nodes[key][value]) if key in group_nodes else value,
                         merge=False)
    return cfg
