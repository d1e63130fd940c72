"""The time loop of one GRU layer: the only code that runs once per step.

Kept as one plain function with a small signature so that it can be swapped for a
fused kernel (a custom ``torch.autograd.Function`` in the style of lmnt-com/haste)
without touching :class:`~gru_sweep.cells.custom_gru.CustomGRU`.
"""
from __future__ import annotations

import torch
from torch import Tensor


def gru_layer(xp: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> tuple[Tensor, Tensor]:
    """Run the GRU recurrence of one layer over all time steps.

    Args:
        xp: ``[T, B, 3H]`` input projections of every step, ``x_t W_ih^T + b_ih``, time-major,
            gate order r, z, n (computed by the caller in one matmul over all steps).
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
    hidden = h0.shape[-1]
    w_hh_t = w_hh.t()
    h = h0
    outs = []
    # unbind once: indexing xp[t] inside the loop would make every step's backward
    # allocate a zero gradient the size of all of xp, i.e. quadratic in T.
    for x_t in xp.unbind(0):
        hp = h @ w_hh_t if b_hh is None else torch.addmm(b_hh, h, w_hh_t)
        rz = torch.sigmoid(x_t[:, : 2 * hidden] + hp[:, : 2 * hidden])
        r, z = rz.chunk(2, 1)
        n = torch.tanh(x_t[:, 2 * hidden :] + r * hp[:, 2 * hidden :])
        h = n + z * (h - n)
        outs.append(h)
    return torch.stack(outs), h
