"""One GRU layer's recurrence as a hand-written autograd Function (after lmnt-com/haste).

Given the input projection ``xp = x @ W_ih^T + b_ih`` for the whole sequence (computed by the
caller as one matmul, so its autograd gives dW_ih, db_ih and dx as single matmuls too), this
runs the recurrence (PyTorch gate order r, z, n)::

    r, z = sigmoid(xp_rz + h @ W_hrz^T + b_hrz)
    n    = tanh(xp_n + r * (h @ W_hn^T + b_hn))
    h'   = n + z * (h - n)                          # = (1 - z) * n + z * h

Why by hand: autograd through a per-step Python loop records ~10 nodes per step, and its
backward does the weight-gradient matmul and several allocations at every step. Here:

- forward: per step one [B,H]x[H,3H] matmul and five in-place pointwise ops; r, z and the
  hidden-side n pre-activation ``hn`` are written over xp itself (the caller's temporary: no
  second [T,B,3H] buffer to allocate and page in), n and h into two [T,B,H] buffers;
- backward: per step two small matmuls for dh_{t-1} and five pointwise ops, writing d(xp) into
  one contiguous [T,B,3H] buffer; dW_hh and db_hh come from matmuls and sums over batch x time
  (for the n rows, over batch x 64-step chunks), never from per-step weight-gradient matmuls.

Measured on 2 CPU cores (benchmarks/, issue 7): 0.7x nn.GRU's training step at H=128.

On a GPU (float32, Triton installed, as it is with PyTorch's CUDA wheels) the two time loops run
instead as one persistent kernel each (gru_triton.py): launched step by step they are ~13 launches
per step and launch-bound. ``GRU_SWEEP_FUSED_GRU=0`` in the environment keeps the step-by-step
loops (to compare, or to rule the kernels out).
"""
from __future__ import annotations

import importlib.util
import os

import torch
from torch.autograd.function import once_differentiable

__all__ = ["GRULayerFunction", "gru_recurrence"]

_CHUNK = 64  # steps per block of vectorised local derivatives in the backward


class GRULayerFunction(torch.autograd.Function):
    """``forward(xp [T,B,3H], h0 [B,H], w_hh [3H,H], b_hh [3H] | None) -> h [T,B,H]``.

    ``h[t]`` is the hidden state after step t (so ``h[-1]`` is h_n). ``xp`` is consumed: its
    memory is overwritten with the gates [r, z, hn] (see :func:`gru_recurrence`). Double backward
    is not supported (``once_differentiable`` raises if it is attempted).
    """

    @staticmethod
    def forward(ctx, xp, h0, w_hh, b_hh):
        ctx.has_bias = b_hh is not None
        ctx.fused = use_fused_kernels(xp)
        if ctx.fused:
            from gru_sweep.cells.gru_triton import fused_forward  # imports Triton: only where used

            gates = xp.contiguous()  # a copy only if xp was strided; then xp stays as it was
            n, h_ext = fused_forward(gates, h0, w_hh, b_hh)
            if gates is xp:  # autograd cannot see a kernel's writes: count them as in-place ops
                torch.autograd.graph.increment_version(xp)
            ctx.save_for_backward(w_hh, gates, n, h_ext)
            return h_ext[1:]
        T, B, H3 = xp.shape
        H = H3 // 3
        # tanh(a) is computed as 2*sigmoid(2a) - 1: CPU tanh goes through MKL's accurate VML
        # routine, 4-5x slower than sigmoid at these sizes (1.8e-7 worst float32 error here, vs
        # 3e-8); so n starts as 2*xp_n and each step adds 2*r*hn.
        n = torch.mul(xp[..., 2 * H :], 2)
        # xp becomes the gate buffer [xp_r + b_hr, xp_z + b_hz, b_hn], so that one in-place addmm
        # per step adds h @ W_hh^T to all three blocks: [r, z, hn] before the sigmoid.
        if b_hh is None:
            xp[..., 2 * H :] = 0
        else:
            xp[..., : 2 * H] += b_hh[: 2 * H]
            xp[..., 2 * H :] = b_hh[2 * H :]
        minus_one = torch.full((1, 1), -1.0, dtype=xp.dtype, device=xp.device)
        out = torch.empty(T, B, H, dtype=xp.dtype, device=xp.device)

        w_t = w_hh.t()
        # Per-step views made once: indexing a Python tuple is much cheaper than a tensor.
        g_all, rz, r, z, hn = (v.unbind(0) for v in (xp, *_gate_blocks(xp, H)))
        n_t, out_t = n.unbind(0), out.unbind(0)
        h = h0
        for t in range(T):
            g_all[t].addmm_(h, w_t)
            rz[t].sigmoid_()
            n_t[t].addcmul_(r[t], hn[t], value=2).sigmoid_()
            torch.add(minus_one, n_t[t], alpha=2, out=n_t[t])
            torch.lerp(n_t[t], h, z[t], out=out_t[t])
            h = out_t[t]
        # Not ctx.mark_dirty(xp): autograd allows that only for Functions with one output when xp
        # is a view, as F.linear's 3-D output is. The in-place writes still bump xp's version
        # counter, so a graph node that saved xp fails loudly instead of using the gates.
        ctx.save_for_backward(h0, w_hh, xp, n, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        if ctx.fused:
            return _fused_backward(ctx, grad_out)
        h0, w_hh, gates, n, out = ctx.saved_tensors
        T, B, H = out.shape
        rz, r, z, hn = _gate_blocks(gates, H)

        # d(xp) = [dr_pre, dz_pre, dn_pre], contiguous: the caller's dW_ih matmul is 2x slower on
        # a strided one. d(h W_hh^T + b_hh) = [dr_pre, dz_pre, dhn] shares its first two blocks;
        # dhn = dn_pre * r lives only for one chunk of steps (see below), so the recurrent matmul
        # is split into the r,z rows and the n rows of W_hh.
        grad_xp = torch.empty(T, B, 3 * H, dtype=out.dtype, device=out.device)
        d_rz, d_r, d_z, d_n = _gate_blocks(grad_xp, H)
        w_rz, w_n = w_hh[: 2 * H], w_hh[2 * H :]
        d_rz_t, d_r_t, d_z_t, d_n_t = (v.unbind(0) for v in (d_rz, d_r, d_z, d_n))
        r_t, z_t, grad_out_t = r.unbind(0), z.unbind(0), grad_out.unbind(0)
        grad_w = torch.empty_like(w_hh)
        grad_w_n = grad_w[2 * H :].zero_()
        grad_b_n = torch.zeros(H, dtype=out.dtype, device=out.device)

        # Steps are taken in chunks of _CHUNK (from the end): per chunk, the local derivatives
        # are a few big vectorised ops off the serial path, and dW_hn, db_hn one matmul and one
        # sum over chunk x batch; their buffers are reused, so they cost no O(T) memory (less
        # memory to page in is also time on a CPU).
        chunk = min(T, _CHUNK)
        local = torch.empty(3, chunk, B, H, dtype=out.dtype, device=out.device)
        dhn_buf = torch.empty(chunk, B, H, dtype=out.dtype, device=out.device)
        dh = grad_out_t[T - 1]
        for stop in range(T, 0, -chunk):
            start = max(0, stop - chunk)
            h_prev = out[start - 1 : stop - 1] if start > 0 else torch.cat((h0[None], out[: stop - 1]))
            f_z, f_n, f_r = _local_derivatives(
                r[start:stop], z[start:stop], hn[start:stop], n[start:stop], h_prev,
                local[:, : stop - start])
            dhn = dhn_buf[: stop - start]
            dhn_t = dhn.unbind(0)
            for t in range(stop - 1, start - 1, -1):
                k = t - start
                torch.mul(dh, f_z[k], out=d_z_t[t])
                torch.mul(dh, f_n[k], out=d_n_t[t])
                torch.mul(d_n_t[t], f_r[k], out=d_r_t[t])
                torch.mul(d_n_t[t], r_t[t], out=dhn_t[k])
                # dL/dh_{t-1} = its direct part + z * dh_t + d(h W_hh^T) @ W_hh
                if t > 0:
                    dh = torch.addcmul(grad_out_t[t - 1], dh, z_t[t])
                else:
                    dh = dh * z_t[t]
                dh.addmm_(d_rz_t[t], w_rz).addmm_(dhn_t[k], w_n)
            grad_w_n.addmm_(dhn.reshape(-1, H).t(), h_prev.reshape(-1, H))
            grad_b_n += dhn.sum((0, 1))

        # dW_hr, dW_hz: one matmul over batch x time (split at t=0 only because h_prev[0] = h0
        # lives outside the `out` buffer); db_hr, db_hz: one sum.
        grad_w_rz = grad_w[: 2 * H]
        torch.mm(d_rz[1:].reshape(-1, 2 * H).t(), out[:-1].reshape(-1, H), out=grad_w_rz)
        grad_w_rz.addmm_(d_rz[0].t(), h0)
        grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_b = torch.cat((d_rz.sum((0, 1)), grad_b_n))
        return grad_xp, dh, grad_w, grad_b


_HAS_TRITON = importlib.util.find_spec("triton") is not None


def use_fused_kernels(xp: torch.Tensor) -> bool:
    """The Triton kernels run float32 on a GPU where Triton is installed, unless
    GRU_SWEEP_FUSED_GRU=0."""
    return (xp.is_cuda and xp.dtype == torch.float32 and _HAS_TRITON
            and os.environ.get("GRU_SWEEP_FUSED_GRU", "1") != "0")


def _fused_backward(ctx, grad_out):
    from gru_sweep.cells.gru_triton import fused_backward

    w_hh, gates, n, h_ext = ctx.saved_tensors
    H = n.shape[-1]
    grad_xp, grad_hh, grad_h0 = fused_backward(gates, n, h_ext, w_hh, grad_out)
    grad_hh = grad_hh.view(-1, 3 * H)
    # dW_hh and db_hh: one matmul and one sum over batch x time
    grad_w = grad_hh.t() @ h_ext[:-1].reshape(-1, H)
    grad_b = grad_hh.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
    return grad_xp, grad_h0, grad_w, grad_b


def _gate_blocks(g: torch.Tensor, H: int):
    """Views of a [T,B,3H] gate-ordered buffer: [r,z], r, z, and the n block."""
    return g[..., : 2 * H], g[..., :H], g[..., H : 2 * H], g[..., 2 * H :]


def _local_derivatives(r, z, hn, n, h_prev, buf):
    """d(pre-activation)/d(h_t) factors for a block of steps, written into buf [3,K,B,H]:

    dz_pre = dh * (h_prev - n) * z(1-z),  dn_pre = dh * (1-z)(1-n^2),  dr_pre = dn_pre * hn * r(1-r)
    (x * (1 - y) is formed as x - x*y in place, so no temporaries).
    """
    f_z, f_n, f_r = buf.unbind(0)
    torch.sub(h_prev, n, out=f_z).mul_(z)
    f_z.addcmul_(f_z, z, value=-1)
    torch.mul(n, n, out=f_n).neg_().add_(1)
    f_n.addcmul_(f_n, z, value=-1)
    torch.mul(hn, r, out=f_r)
    f_r.addcmul_(f_r, r, value=-1)
    return f_z.unbind(0), f_n.unbind(0), f_r.unbind(0)


def gru_recurrence(xp: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
                   b_hh: torch.Tensor | None) -> torch.Tensor:
    """Hidden states [T,B,H] of one GRU layer from its input projection xp [T,B,3H].

    xp is consumed: its memory is reused for the gates, which saves allocating (and, on a CPU,
    page-faulting in) a second [T,B,3H] buffer every step. Pass the projection as a temporary
    and do not use it afterwards (or pass ``xp.clone()``). A leaf that requires grad, whose
    values its owner will want back, is copied first.
    """
    if xp.is_leaf and xp.requires_grad:
        xp = xp.clone()
    return GRULayerFunction.apply(xp, h0, w_hh, b_hh)
