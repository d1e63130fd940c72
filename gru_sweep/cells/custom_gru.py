"""CustomGRU: torch.nn.GRU rewritten from the gate equations, so every step is visible.

Same constructor, parameter names/shapes/order and ``forward(input, hx=None) -> (output, h_n)``
as ``torch.nn.GRU`` (unidirectional), so a ``state_dict`` moves between the two either way.
Speed comes from the layout fastrnns and haste use: one GEMM for the input projection of all
steps of a layer, one GEMM per step for the three recurrent gates, and a hand-written
backward (``gru_function.GRULayerFunction``).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from gru_sweep.cells.gru_function import gru_recurrence
from gru_sweep.errors import ConfigError, require_int, require_range


class CustomGRU(nn.Module):
    """Multi-layer GRU, gate order r, z, n, equations as in ``torch.nn.GRU``.

    Inputs are ``[T, B, I]`` (``[B, T, I]`` with ``batch_first``) or unbatched ``[T, I]``;
    ``hx`` is ``[num_layers, B, H]`` (``[num_layers, H]`` unbatched), zeros when omitted.
    Between layers, dropout with probability ``dropout`` in training mode, as in nn.GRU.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        for key, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            require_int(key, value, 1)
        require_range("dropout", dropout, 0.0, 1.0)
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout={dropout} acts between layers only, so it does nothing with num_layers=1",
                stacklevel=2,
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = False  # read by code written against nn.GRU
        factory = {"device": device, "dtype": dtype}
        # Registration order matches nn.GRU so state_dict keys line up one to one.
        for k in range(num_layers):
            layer_in = input_size if k == 0 else hidden_size
            gates = 3 * hidden_size
            setattr(self, f"weight_ih_l{k}", nn.Parameter(torch.empty(gates, layer_in, **factory)))
            setattr(self, f"weight_hh_l{k}", nn.Parameter(torch.empty(gates, hidden_size, **factory)))
            if bias:
                setattr(self, f"bias_ih_l{k}", nn.Parameter(torch.empty(gates, **factory)))
                setattr(self, f"bias_hh_l{k}", nn.Parameter(torch.empty(gates, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.GRU's init: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def layer_parameters(self, k: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of layer ``k``; biases None without bias."""
        return (
            getattr(self, f"weight_ih_l{k}"),
            getattr(self, f"weight_hh_l{k}"),
            getattr(self, f"bias_ih_l{k}", None),
            getattr(self, f"bias_hh_l{k}", None),
        )

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if isinstance(input, PackedSequence):
            raise ConfigError("input", "PackedSequence", "CustomGRU takes padded tensors [T, B, I] or [B, T, I]")
        if input.dim() not in (2, 3):
            raise ConfigError("input", tuple(input.shape), "expected a 3-D (batched) or 2-D (unbatched) tensor")
        if input.shape[-1] != self.input_size:
            raise ConfigError("input", tuple(input.shape), f"last dimension must be input_size={self.input_size}")
        batched = input.dim() == 3
        if not batched:
            input = input.unsqueeze(1)
            hx = None if hx is None else hx.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        batch = input.shape[1]
        state_shape = (self.num_layers, batch, self.hidden_size)
        if hx is None:
            hx = input.new_zeros(state_shape)
        elif tuple(hx.shape) != state_shape:
            expected = state_shape if batched else (self.num_layers, self.hidden_size)
            raise ConfigError("hx", tuple(hx.shape if batched else hx.squeeze(1).shape), f"expected shape {expected}")

        layer_input, h_n = input, []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_parameters(k)
            xp = F.linear(layer_input, w_ih, b_ih)  # all steps in one GEMM
            layer_input = gru_recurrence(xp, hx[k], w_hh, b_hh)  # consumes xp
            h_n.append(layer_input[-1])
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        output, h_n = layer_input, torch.stack(h_n)

        if not batched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s
