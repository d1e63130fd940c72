"""One GRU layer's recurrence as a hand-written autograd Function (after lmnt-com/haste).

Given the input projection ``xp = x @ W_ih^T + b_ih`` for the whole sequence (computed by the
caller as one matmul, so its autograd gives dW_ih, db_ih and dx as single matmuls too), this
runs the recurrence (PyTorch gate order r, z, n)::

    r, z = sigmoid(xp_rz + h @ W_hrz^T + b_hrz)
    n    = tanh(xp_n + r * (h @ W_hn^T + b_hn))
    h'   = n + z * (h - n)                          # = (1 - z) * n + z * h

Why by hand: autograd through a per-step Python loop records ~10 nodes per step and its
backward does a weight-gradient matmul and a few allocations at every step. Here the forward
does one [B,H]x[H,3H] matmul and four fused pointwise ops per step, writing r, z, the
hidden-side n pre-activation ``hn`` and n into preallocated [T,B,...] buffers; the backward
does one [B,3H]x[3H,H] matmul and five pointwise ops per step, and dW_hh, db_hh come out of one
matmul and one sum over batch x time after the loop.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["GRULayerFunction", "gru_recurrence"]


class GRULayerFunction(torch.autograd.Function):
    """``forward(xp [T,B,3H], h0 [B,H], w_hh [3H,H], b_hh [3H] | None) -> h [T,B,H]``.

    ``h[t]`` is the hidden state after step t (so ``h[-1]`` is h_n). Double backward is not
    supported (``once_differentiable`` raises if it is attempted).
    """

    @staticmethod
    def forward(ctx, xp, h0, w_hh, b_hh):
        T, B, H3 = xp.shape
        H = H3 // 3
        # gates[t] = [r, z, hn]: start from [xp_r + b_hr, xp_z + b_hz, b_hn] so that one in-place
        # addmm per step adds h @ W_hh^T to all three blocks (no separate bias or input add).
        gates = torch.empty(T, B, H3, dtype=xp.dtype, device=xp.device)
        if b_hh is None:
            gates[..., : 2 * H] = xp[..., : 2 * H]
            gates[..., 2 * H :] = 0
        else:
            torch.add(xp[..., : 2 * H], b_hh[: 2 * H], out=gates[..., : 2 * H])
            gates[..., 2 * H :] = b_hh[2 * H :]
        # tanh(a) is computed as 2*sigmoid(2a) - 1: CPU tanh goes through MKL's accurate VML
        # routine, 4-5x slower than sigmoid at these sizes (1.8e-7 worst float32 error here, vs
        # 3e-8); so n starts as 2*xp_n and each step adds 2*r*hn.
        n = torch.mul(xp[..., 2 * H :], 2)
        minus_one = torch.full((1, 1), -1.0, dtype=xp.dtype, device=xp.device)
        out = torch.empty(T, B, H, dtype=xp.dtype, device=xp.device)

        w_t = w_hh.t()
        # Per-step views made once: indexing a Python tuple is much cheaper than a tensor.
        g_all, rz, r, z, hn = _gate_views(gates, H)
        n_t, out_t = n.unbind(0), out.unbind(0)
        h = h0
        for t in range(T):
            g_all[t].addmm_(h, w_t)
            rz[t].sigmoid_()
            n_t[t].addcmul_(r[t], hn[t], value=2).sigmoid_()
            torch.add(minus_one, n_t[t], alpha=2, out=n_t[t])
            torch.lerp(n_t[t], h, z[t], out=out_t[t])
            h = out_t[t]
        ctx.save_for_backward(h0, w_hh, gates, n, out)
        ctx.has_bias = b_hh is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        h0, w_hh, gates, n, out = ctx.saved_tensors
        T, B, H = out.shape
        r, z, hn = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H :]

        # grads[t] = [dhn, dr_pre, dz_pre, dn_pre]. Blocks 1..3 are d(xp) in gate order r,z,n;
        # blocks 0..2 are d(h @ W_hh^T + b_hh) in the order n,r,z, which the per-step matmul
        # uses against W_hh's rows permuted to match: both are views, no copies.
        grads = torch.empty(T, B, 4 * H, dtype=out.dtype, device=out.device)
        g_h = grads[..., : 3 * H]
        w_perm = torch.cat((w_hh[2 * H :], w_hh[: 2 * H]))
        dhn_t, dr_t, dz_t, dn_t = (grads[..., k * H : (k + 1) * H].unbind(0) for k in range(4))
        g_h_t, r_t, z_t, grad_out_t = g_h.unbind(0), r.unbind(0), z.unbind(0), grad_out.unbind(0)

        # The local derivatives are computed chunk by chunk as a few big vectorised ops (off
        # the serial path), into buffers of CHUNK steps so they cost no O(T) memory.
        chunk = min(T, _CHUNK)
        local = torch.empty(3, chunk, B, H, dtype=out.dtype, device=out.device)
        dh = grad_out_t[T - 1]
        for stop in range(T, 0, -chunk):
            start = max(0, stop - chunk)
            h_prev = out[start - 1 : stop - 1] if start > 0 else torch.cat((h0[None], out[: stop - 1]))
            d_z, d_n, d_r = _local_derivatives(
                r[start:stop], z[start:stop], hn[start:stop], n[start:stop], h_prev,
                local[:, : stop - start])
            for t in range(stop - 1, start - 1, -1):
                k = t - start
                torch.mul(dh, d_z[k], out=dz_t[t])
                torch.mul(dh, d_n[k], out=dn_t[t])
                torch.mul(dn_t[t], d_r[k], out=dr_t[t])
                torch.mul(dn_t[t], r_t[t], out=dhn_t[t])
                # dL/dh_{t-1} = its direct part + z * dh_t + d(h W_hh^T) @ W_hh
                if t > 0:
                    dh = torch.addcmul(grad_out_t[t - 1], dh, z_t[t])
                else:
                    dh = dh * z_t[t]
                dh.addmm_(g_h_t[t], w_perm)

        # Weight and bias gradients: one matmul / one sum over batch x time (split at t=0 only
        # because h_prev[0] = h0 lives outside the `out` buffer).
        dw_perm = g_h[1:].reshape(-1, 3 * H).t().mm(out[:-1].reshape(-1, H))
        dw_perm.addmm_(g_h[0].t(), h0)
        grad_w = torch.cat((dw_perm[H:], dw_perm[:H]))
        grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[3]:
            db_perm = g_h.sum((0, 1))
            grad_b = torch.cat((db_perm[H:], db_perm[:H]))
        return grads[..., H:], dh, grad_w, grad_b


_CHUNK = 64  # steps per block of vectorised local derivatives in the backward


def _local_derivatives(r, z, hn, n, h_prev, buf):
    """d(pre-activation)/d(h_t) factors for a block of steps, written into buf [3,K,B,H]:

    dz_pre = dh * (h_prev - n) * z(1-z),  dn_pre = dh * (1-z)(1-n^2),  dr_pre = dn_pre * hn * r(1-r)
    (x * (1 - y) is formed as x - x*y in place, so no temporaries).
    """
    d_z, d_n, d_r = buf.unbind(0)
    torch.sub(h_prev, n, out=d_z).mul_(z)
    d_z.addcmul_(d_z, z, value=-1)
    torch.mul(n, n, out=d_n).neg_().add_(1)
    d_n.addcmul_(d_n, z, value=-1)
    torch.mul(hn, r, out=d_r)
    d_r.addcmul_(d_r, r, value=-1)
    return d_z.unbind(0), d_n.unbind(0), d_r.unbind(0)


def _gate_views(gates: torch.Tensor, H: int):
    """Per-step views of the [T,B,3H] gate buffer: whole row, [r,z], r, z, hn."""
    return (
        gates.unbind(0),
        gates[..., : 2 * H].unbind(0),
        gates[..., :H].unbind(0),
        gates[..., H : 2 * H].unbind(0),
        gates[..., 2 * H :].unbind(0),
    )


def gru_recurrence(xp: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
                   b_hh: torch.Tensor | None) -> torch.Tensor:
    """Hidden states [T,B,H] of one GRU layer from its input projection xp [T,B,3H]."""
    return GRULayerFunction.apply(xp, h0, w_hh, b_hh)
