"""Run any of the four cells step by step on its own parameters.

Fused kernels (cuDNN, ATen's RNN loop) keep the per-step states to themselves; the
gradient probe needs them as graph nodes, so ``unroll`` recomputes the same network from
the gate equations, one step at a time, with the module's parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gru_sweep.cells.custom_gru import CustomGRU
from gru_sweep.errors import ConfigError


@dataclass
class Unrolled:
    """Per-step results of :func:`unroll`.

    ``output``: as the module's own output (``[B, T, H]`` if batch_first, else ``[T, B, H]``).
    ``h[l][t]``: ``[B, H]`` hidden state of layer ``l`` after step ``t`` -- the very tensor fed
    to step ``t + 1`` and to layer ``l + 1``, so ``autograd.grad(loss, h[l][t])`` is the total
    derivative dL/dh_t. ``c``: the same for the LSTM cell state (dL/dc_t includes the path
    through h_t = o * tanh(c_t)), else ``None``.
    ``gates``: name -> ``[L, B, T, H]``; ``r, z`` (GRU), ``i, f, o`` (LSTM), none (RNN).
    """

    output: Tensor
    h: list[list[Tensor]]
    c: list[list[Tensor]] | None
    gates: dict[str, Tensor]

    @property
    def h_n(self) -> Tensor:
        """``[L, B, H]`` final hidden states, as the fused module's ``h_n``."""
        return torch.stack([h_l[-1] for h_l in self.h])

    @property
    def c_n(self) -> Tensor | None:
        return None if self.c is None else torch.stack([c_l[-1] for c_l in self.c])


def _gru_step(xp_t, h, w_hh, b_hh, c=None):
    hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, 1)
    xr, xz, xn = xp_t.chunk(3, 1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h, None, {"r": r, "z": z}


def _lstm_step(xp_t, h, w_hh, b_hh, c):
    i, f, g, o = (xp_t + F.linear(h, w_hh, b_hh)).chunk(4, 1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return o * torch.tanh(c), c, {"i": i, "f": f, "o": o}


def _rnn_step(activation):
    def step(xp_t, h, w_hh, b_hh, c=None):
        return activation(xp_t + F.linear(h, w_hh, b_hh)), None, {}

    return step


def _step_function(module: nn.Module):
    if isinstance(module, (CustomGRU, nn.GRU)):
        return _gru_step
    if isinstance(module, nn.LSTM):
        if module.proj_size:
            raise ConfigError("proj_size", module.proj_size, "unroll supports LSTMs without projection (0)")
        return _lstm_step
    if isinstance(module, nn.RNN):
        return _rnn_step(torch.relu if module.nonlinearity == "relu" else torch.tanh)
    raise ConfigError(
        "module", type(module).__name__, "unroll takes CustomGRU, nn.GRU, nn.LSTM, nn.RNN or a RecurrentCell"
    )


def unroll(module: nn.Module, input: Tensor, hx=None) -> Unrolled:
    """Run ``module`` step by step on its own parameters; see :class:`Unrolled`.

    ``module``: CustomGRU, nn.GRU, nn.LSTM, nn.RNN, or a wrapper holding one as ``.rnn``
    (RecurrentCell). ``input``: batched, laid out as ``module.batch_first`` says. ``hx``: as
    the module's forward takes it (``(h0, c0)`` for the LSTM), zeros when omitted.
    No inter-layer dropout: this is the network the probe measures, not a training pass.
    """
    if not isinstance(module, (CustomGRU, nn.RNNBase)) and isinstance(getattr(module, "rnn", None), nn.Module):
        module = module.rnn
    step = _step_function(module)
    if module.bidirectional:
        raise ConfigError("bidirectional", True, "unroll supports unidirectional cells only")
    if input.dim() != 3:
        raise ConfigError("input", tuple(input.shape), "unroll expects a batched 3-D tensor")
    x = input.transpose(0, 1) if module.batch_first else input  # time-major from here on
    batch, layers, hidden = x.shape[1], module.num_layers, module.hidden_size
    is_lstm = isinstance(module, nn.LSTM)
    h0, c0 = hx if is_lstm and hx is not None else (hx, None)
    if h0 is None:
        h0 = x.new_zeros(layers, batch, hidden)
    if is_lstm and c0 is None:
        c0 = x.new_zeros(layers, batch, hidden)

    hs, cs, gates = [], [] if is_lstm else None, {}
    layer_input = x
    for k in range(layers):
        w_ih, w_hh = getattr(module, f"weight_ih_l{k}"), getattr(module, f"weight_hh_l{k}")
        b_ih, b_hh = getattr(module, f"bias_ih_l{k}", None), getattr(module, f"bias_hh_l{k}", None)
        h, c = h0[k], c0[k] if is_lstm else None
        h_layer, c_layer, gate_layer = [], [], {}
        for xp_t in F.linear(layer_input, w_ih, b_ih).unbind(0):
            h, c, g = step(xp_t, h, w_hh, b_hh, c)
            h_layer.append(h)
            c_layer.append(c)
            for name, value in g.items():
                gate_layer.setdefault(name, []).append(value)
        hs.append(h_layer)
        if is_lstm:
            cs.append(c_layer)
        for name, values in gate_layer.items():
            gates.setdefault(name, []).append(torch.stack(values, 1))  # [B, T, H]
        layer_input = torch.stack(h_layer)  # built from the h_layer tensors themselves
    output = layer_input.transpose(0, 1) if module.batch_first else layer_input
    return Unrolled(output, hs, cs, {name: torch.stack(v) for name, v in gates.items()})
