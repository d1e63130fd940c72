"""One factory and one interface for the four recurrent cells.

``custom_gru`` is :class:`CustomGRU`; ``cudnn_gru``, ``lstm`` and ``rnn`` are torch's own
``nn.GRU`` / ``nn.LSTM`` / ``nn.RNN`` (cuDNN kernels on a GPU, ATen's fused loop on CPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor, nn

from gru_sweep.cells.custom_gru import CustomGRU
from gru_sweep.cells.unrolled import Unrolled, unroll
from gru_sweep.errors import ConfigError, require_choice, require_int, require_range

CELL_NAMES = ("custom_gru", "cudnn_gru", "lstm", "rnn")
NONLINEARITIES = ("tanh", "relu")
_KIND = {"custom_gru": "gru", "cudnn_gru": "gru", "lstm": "lstm", "rnn": "rnn"}
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


class RecurrentCell(nn.Module):
    """Wraps one recurrent module (batch_first) behind the interface the model uses.

    ``forward(x[B, T, I]) -> output[B, T, H]`` (the last layer's hidden states) and
    ``unroll(x) -> Unrolled`` (step by step on the same parameters, for the gradient probe).
    """

    def __init__(self, name: str, rnn: nn.Module, nonlinearity: str = "tanh"):
        super().__init__()
        self.rnn = rnn
        self.name = name
        self.kind = _KIND[name]
        self.nonlinearity = nonlinearity
        self.hidden_size = rnn.hidden_size
        self.num_layers = rnn.num_layers

    def forward(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0]

    def unroll(self, x: Tensor) -> Unrolled:
        return unroll(self.rnn, x)

    def extra_repr(self) -> str:
        return f"name={self.name}, kind={self.kind}"


def recurrent_params(name: str, input_size: int, hidden_size: int, num_layers: int = 1) -> int:
    """Parameters of the recurrent module: per layer g*H*(in + H) weights and 2*g*H biases."""
    g = _GATES[_KIND[name]]
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


def build_cell(cfg: CellConfig, input_size: int) -> RecurrentCell:
    """Build the cell ``cfg.name`` for per-step inputs of size ``input_size``."""
    require_int("input_size", input_size, 1)
    args = (input_size, hidden_size_for(cfg, input_size), cfg.num_layers)
    kwargs = {"batch_first": True, "dropout": cfg.dropout}
    if cfg.name == "custom_gru":
        rnn = CustomGRU(*args, **kwargs)
    elif cfg.name == "cudnn_gru":
        rnn = nn.GRU(*args, **kwargs)
    elif cfg.name == "lstm":
        rnn = nn.LSTM(*args, **kwargs)
    else:
        rnn = nn.RNN(*args, nonlinearity=cfg.nonlinearity, **kwargs)
    return RecurrentCell(cfg.name, rnn, cfg.nonlinearity)
