"""One factory and one interface for the four recurrent cells.

``custom_gru`` is :class:`CustomGRU`; ``cudnn_gru``, ``lstm`` and ``rnn`` are torch's own
``nn.GRU`` / ``nn.LSTM`` / ``nn.RNN`` (cuDNN kernels on a GPU, ATen's fused loop on CPU).
"""
from __future__ import annotations

from torch import Tensor, nn

from gru_sweep.cell_schema import CELL_KINDS, CellConfig, hidden_size_for
from gru_sweep.cells.custom_gru import CustomGRU
from gru_sweep.cells.unrolled import Unrolled, unroll
from gru_sweep.errors import require_int

class RecurrentCell(nn.Module):
    """Wraps one recurrent module (batch_first) behind the interface the model uses.

    ``forward(x[B, T, I]) -> output[B, T, H]`` (the last layer's hidden states) and
    ``unroll(x) -> Unrolled`` (step by step on the same parameters, for the gradient probe).
    """

    def __init__(self, name: str, rnn: nn.Module, nonlinearity: str = "tanh"):
        super().__init__()
        self.rnn = rnn
        self.name = name
        self.kind = CELL_KINDS[name]
        self.nonlinearity = nonlinearity
        self.hidden_size = rnn.hidden_size
        self.num_layers = rnn.num_layers

    def forward(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0]

    def unroll(self, x: Tensor) -> Unrolled:
        return unroll(self.rnn, x)

    def extra_repr(self) -> str:
        return f"name={self.name}, kind={self.kind}"


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
