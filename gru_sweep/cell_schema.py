"""The ``cell`` and ``gate_init`` config groups: their schemas and the checks between them.

Plain Python (no torch), so a sweep's driver validates every grid point without loading the
training stack; gru_sweep.cells builds what these describe.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from gru_sweep.errors import ConfigError, require_choice, require_int, require_positive, require_range

CELL_NAMES = ("custom_gru", "cudnn_gru", "lstm", "rnn")
NONLINEARITIES = ("tanh", "relu")
CELL_KINDS = {"custom_gru": "gru", "cudnn_gru": "gru", "lstm": "lstm", "rnn": "rnn"}  # equations by cell
_GATES = {"gru": 3, "lstm": 4, "rnn": 1}  # weight blocks per layer


@dataclass
class CellConfig:
    """The ``cell`` config group. ``nonlinearity`` is the vanilla RNN's (relu for IRNN)."""

    name: str
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.0
    nonlinearity: str = "tanh"
    # Set: hidden_size is the largest whose recurrent parameters fit this many (cells compared
    # at equal parameter count, e.g. GRU vs LSTM vs RNN); hidden_size is then ignored.
    param_budget: Optional[int] = None

    def __post_init__(self):
        require_choice("name", self.name, CELL_NAMES)
        require_int("hidden_size", self.hidden_size, 1)
        if self.param_budget is not None:
            require_int("param_budget", self.param_budget, 1)
        require_int("num_layers", self.num_layers, 1)
        require_range("dropout", self.dropout, 0.0, 1.0)
        require_choice("nonlinearity", self.nonlinearity, NONLINEARITIES)
        if self.nonlinearity != "tanh" and self.name != "rnn":
            raise ConfigError(
                "nonlinearity", self.nonlinearity, f"only name=rnn has a choice; {self.name} needs tanh (the default)"
            )


def recurrent_params(name: str, input_size: int, hidden_size: int, num_layers: int = 1) -> int:
    """Parameters of the recurrent module: per layer g*H*(in + H) weights and 2*g*H biases."""
    g = _GATES[CELL_KINDS[name]]
    return sum(g * hidden_size * ((input_size if k == 0 else hidden_size) + hidden_size + 2) for k in range(num_layers))


def hidden_size_for(cfg: CellConfig, input_size: int) -> int:
    """cfg.hidden_size, or the largest size within cfg.param_budget."""
    if cfg.param_budget is None:
        return cfg.hidden_size
    size = 0
    while recurrent_params(cfg.name, input_size, size + 1, cfg.num_layers) <= cfg.param_budget:
        size += 1
    if size == 0:
        raise ConfigError("cell.param_budget", cfg.param_budget,
                          f"too small for one {cfg.name} unit ({recurrent_params(cfg.name, input_size, 1, cfg.num_layers)} parameters)")
    return size


GATE_INITS = ("default", "gate_bias", "chrono", "uniform", "orthogonal", "identity")

_ALL = CELL_NAMES
_GATED = tuple(name for name in CELL_NAMES if name != "rnn")
# The cells each scheme fits; identity also needs nonlinearity=relu.
FITS = {
    "default": _ALL,
    "gate_bias": _GATED,
    "chrono": _GATED,
    "uniform": _GATED,
    "orthogonal": _ALL,
    "identity": ("rnn",),
}


@dataclass
class GateInitConfig:
    """The ``gate_init`` config group: ``scheme`` and its parameters.

    ``value``: keep-gate bias for gate_bias. ``t_max``: chrono's longest expected dependency
    (required there, an integer >= 2). ``gain``: scale of the orthogonal / identity W_hh.
    """

    scheme: str = "default"
    value: float = 1.0
    t_max: Optional[int] = None
    gain: float = 1.0

    def __post_init__(self):
        require_choice("scheme", self.scheme, GATE_INITS)
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise ConfigError("value", self.value, "must be a finite number")
        require_positive("gain", self.gain)
        if self.scheme == "chrono" and (
            isinstance(self.t_max, bool) or not isinstance(self.t_max, int) or self.t_max < 2
        ):
            raise ConfigError("t_max", self.t_max, "chrono needs an integer t_max >= 2 (e.g. the sequence length)")


def check_scheme_fits(scheme: str, name: str, nonlinearity: str, hidden_size: int) -> None:
    """ConfigError naming scheme, cell and the cells the scheme fits, if they do not fit."""
    fits = ", ".join(FITS[scheme])
    if scheme == "identity":
        fits += " with nonlinearity=relu (config cell=irnn)"
    if name not in FITS[scheme] or (scheme == "identity" and nonlinearity != "relu"):
        cell = name if name != "rnn" else f"rnn with nonlinearity={nonlinearity}"
        raise ConfigError("gate_init.scheme", scheme, f"does not fit cell {cell}; {scheme} fits cells {fits}")
    if scheme == "uniform" and hidden_size < 2:
        raise ConfigError(
            "gate_init.scheme", scheme, f"needs hidden_size >= 2 for U[1/d, 1-1/d]; cell {name} has {hidden_size}"
        )


def check_gate_init(cfg: GateInitConfig, cell: CellConfig) -> None:
    """check_scheme_fits for a gate_init and a cell config."""
    check_scheme_fits(cfg.scheme, cell.name, cell.nonlinearity, cell.hidden_size)
