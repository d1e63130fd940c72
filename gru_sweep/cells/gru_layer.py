"""The time loop of one GRU layer: the only code that runs once per step.

Kept as one plain function with a small signature so that it can be swapped for a
fused kernel (a custom ``torch.autograd.Function`` in the style of lmnt-com/haste)
without touching :class:`~gru_sweep.cells.custom_gru.CustomGRU`.
"""
from __future__ import annotations

from torch import Tensor

from gru_sweep.cells.gru_function import gru_recurrence


def gru_layer(xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
    """Run the GRU recurrence of one layer over all time steps.

    Args:
        xp: ``[T, B, 3H]`` input projections of every step, ``x_t W_ih^T + b_ih``, time-major,
            gate order r, z, n (computed by the caller in one matmul over all steps).
            Consumed: its memory is reused for the gates, so do not use it afterwards.
        h0: ``[B, H]`` initial hidden state.
        w_hh: ``[3H, H]`` recurrent weights, gate order r, z, n.
        b_hh: ``[3H]`` recurrent bias, or ``None`` for a layer without bias.

    Returns:
        ``(out, h_n)``: ``out`` is ``[T, B, H]`` with every step's hidden state, ``h_n`` is
        ``[B, H]``, the last one.

    Per step, with ``xr, xz, xn`` and ``hr, hz, hn`` the r, z, n slices of ``xp[t]`` and of
    ``h W_hh^T + b_hh`` (one matmul for all three gates)::

        r = sigmoid(xr + hr);  z = sigmoid(xz + hz);  n = tanh(xn + r * hn)
        h = (1 - z) * n + z * h
    """
    # The loop itself is GRULayerFunction's: a hand-written backward, so the weight gradients
    # are one matmul over batch x time instead of one per step (see gru_function.py).
    out = gru_recurrence(xp, h0, w_hh, b_hh)
    return out, out[-1]
