"""GRULayerFunction's two time loops as persistent Triton kernels, for float32 on a GPU.

Run eagerly, each time step is ~13 small kernel launches (6 forward, 7 backward), and on a GPU the
launches, not the arithmetic, set the pace: 32x slower than cuDNN's GRU at B64 T200 H128 on an
H100. Here each pass is ONE launch that walks the whole sequence, as cuDNN's persistent RNN and
haste do: 1.4-2.1x cuDNN there, 0.54x at B128 T100 H512 (benchmarks/README.md).

Work split: program (i, j) owns batch rows [i*BLOCK_B, (i+1)*BLOCK_B) and hidden columns
[j*H/split, (j+1)*H/split). A step needs the whole previous hidden state (the recurrent matmul
mixes all columns), so the ``split`` programs of one batch tile meet at a barrier after every
step: a per-tile counter in global memory, bumped with a release atomic and polled with an
acquire atomic. That only terminates if all programs run at once, hence split * tiles <= the
GPU's multiprocessor count (``choose_split``); nothing else guarantees it (this is not a
cooperative launch), so where processes share a GPU's multiprocessors at once (CUDA MPS) two such
kernels could each wait for programs that cannot start: there set GRU_SWEEP_FUSED_GRU=0. (Ray's
fractional GPUs without MPS time-slice whole contexts, which is safe.) With split == 1 the barrier
is a plain ``__syncthreads``; the Triton interpreter (TRITON_INTERPRET=1, no GPU, the CPU tests)
runs programs one after another, so it can only run split == 1.

What one program reads of another's output is ordered by the barrier's release/acquire pair, and
always lies in a per-step slice (h_ext[t], grad_hh[t]) that no program read before, so no SM can
hold a stale cached copy of it; no buffer slice is reused across steps except a program's own dh
columns.
The saved tensors and the math are those of the eager loop in gru_function.py: gates [r, z, hn]
written over xp, n, and the hidden states (here with h0 in front: h_ext[t] is h_{t-1}).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import triton
import triton.language as tl

__all__ = ["fused_forward", "fused_backward", "choose_split"]

BLOCK_B = 16  # batch rows per program: tl.dot's smallest M
MIN_COLS = 32  # hidden columns per program at the finest split
# Tuned on an H100 at the benchmark shapes; each alternative tried was slower: BLOCK_K 32 or 128,
# 2 or 8 warps, 1, 2 or 4 pipeline stages, fewer programs per tile (split 1 or 2 at H=128).
BLOCK_K_MAX = 64  # reduction slice of one tl.dot
NUM_WARPS = 4
NUM_STAGES = 3
# tl.dot's mode under torch's default float32 matmul precision ("highest"): 3xTF32 (error-corrected
# TF32 tensor-core products) measured both faster and closer to float64 than plain float32 FMA
# ("ieee") on an H100, and closer than cuDNN's float32 GRU (benchmarks/README.md).
HIGHEST = "tf32x3"


@triton.jit
def _tile_barrier(counter, target, SPLIT: tl.constexpr):
    """All threads of this program, then (split > 1) all programs of its batch tile, got here."""
    tl.debug_barrier()
    if SPLIT > 1:
        tl.atomic_add(counter, 1, sem="release", scope="gpu")
        while tl.atomic_add(counter, 0, sem="acquire", scope="gpu") < target:
            pass
        tl.debug_barrier()


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _forward_kernel(gates, n_out, h_ext, w_t, b, counters, T, B,
                    H: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr, BLOCK_B: tl.constexpr,
                    BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """w_t: W_hh^T [H, 3H], contiguous, so that its tiles are read along rows."""
    tile = tl.program_id(0)
    part = tl.program_id(1)
    COLS: tl.constexpr = H // SPLIT
    rows = tile * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    step_size = tl.cast(B, tl.int64) * H  # elements per step of a [T, B, H] buffer; in int64, since
    for t in tl.range(0, T):  # T * B * 3H can pass 2**31 on a large GPU
        h_prev = h_ext + t * step_size
        g_t = gates + t * 3 * step_size
        for j0 in tl.range(part * COLS, (part + 1) * COLS, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < (part + 1) * COLS
            m = row_ok[:, None] & col_ok[None, :]
            # Everything that does not wait for h_{t-1} is loaded first, so its latency overlaps.
            g = g_t + rows[:, None] * (3 * H) + cols[None, :]
            x_r = tl.load(g, mask=m, other=0.0)
            x_z = tl.load(g + H, mask=m, other=0.0)
            x_n = tl.load(g + 2 * H, mask=m, other=0.0)
            hp = tl.load(h_prev + rows[:, None] * H + cols[None, :], mask=m, other=0.0, cache_modifier=".cg")
            # [r, z, hn] pre-activations of these columns: x + b + h_{t-1} @ W_h{r,z,n}^T (hn: b + h W^T)
            acc_r = x_r
            acc_z = x_z
            acc_n = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
            if HAS_BIAS:
                acc_r += tl.load(b + cols, mask=col_ok, other=0.0)[None, :]
                acc_z += tl.load(b + H + cols, mask=col_ok, other=0.0)[None, :]
                acc_n += tl.load(b + 2 * H + cols, mask=col_ok, other=0.0)[None, :]
            for k0 in tl.range(0, H, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                k_ok = ks < H
                h_k = tl.load(h_prev + rows[:, None] * H + ks[None, :],
                              mask=row_ok[:, None] & k_ok[None, :], other=0.0, cache_modifier=".cg")
                w_mask = k_ok[:, None] & col_ok[None, :]
                w_k = w_t + ks[:, None] * (3 * H) + cols[None, :]  # W_hr^T tile [BLOCK_K, BLOCK_H]
                acc_r = tl.dot(h_k, tl.load(w_k, mask=w_mask, other=0.0), acc_r, input_precision=PRECISION)
                acc_z = tl.dot(h_k, tl.load(w_k + H, mask=w_mask, other=0.0), acc_z, input_precision=PRECISION)
                acc_n = tl.dot(h_k, tl.load(w_k + 2 * H, mask=w_mask, other=0.0), acc_n, input_precision=PRECISION)
            r = _sigmoid(acc_r)
            z = _sigmoid(acc_z)
            n = 2.0 * _sigmoid(2.0 * (x_n + r * acc_n)) - 1.0  # tanh
            tl.store(g, r, mask=m)
            tl.store(g + H, z, mask=m)
            tl.store(g + 2 * H, acc_n, mask=m)
            tl.store(n_out + t * step_size + rows[:, None] * H + cols[None, :], n, mask=m)
            tl.store(h_prev + step_size + rows[:, None] * H + cols[None, :], n + z * (hp - n), mask=m)
        _tile_barrier(counters + tile, (t + 1) * SPLIT, SPLIT)


@triton.jit
def _backward_kernel(gates, n_buf, h_ext, w, grad_out, grad_xp, grad_hh, dh, counters, T, B,
                     H: tl.constexpr, SPLIT: tl.constexpr, BLOCK_B: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """dh: two [B, H] buffers, dh[0] = dL/dh_{T-1} on entry; they take turns (read one, write the
    other), and after T steps dh[T % 2] holds dL/dh0. A program reads and writes only its own
    columns of dh, so one barrier per step suffices: the one that publishes the step's gate
    gradients (every column of them feeds every column of dL/dh_{t-1}). Those have a slice per
    step in grad_hh; a buffer reused across steps would need a second barrier (write-after-read)."""
    tile = tl.program_id(0)
    part = tl.program_id(1)
    COLS: tl.constexpr = H // SPLIT
    rows = tile * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    step_size = tl.cast(B, tl.int64) * H  # elements per step of a [T, B, H] buffer (int64: see forward)
    for s in tl.range(0, T):
        t = T - 1 - s
        dh_cur = dh + (s % 2) * B * H
        dh_next = dh + ((s + 1) % 2) * B * H
        g_t = gates + t * 3 * step_size
        gh_t = grad_hh + t * 3 * step_size
        # Local derivatives of these columns: d(xp) = [dr, dz, dn], d(h W_hh^T + b_hh) = [dr, dz, dn * r].
        for j0 in tl.range(part * COLS, (part + 1) * COLS, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            m = row_ok[:, None] & (cols < (part + 1) * COLS)[None, :]
            at = rows[:, None] * H + cols[None, :]
            at3 = rows[:, None] * (3 * H) + cols[None, :]
            r = tl.load(g_t + at3, mask=m, other=0.0)
            z = tl.load(g_t + at3 + H, mask=m, other=0.0)
            hn = tl.load(g_t + at3 + 2 * H, mask=m, other=0.0)
            n = tl.load(n_buf + t * step_size + at, mask=m, other=0.0)
            hp = tl.load(h_ext + t * step_size + at, mask=m, other=0.0)
            d = tl.load(dh_cur + at, mask=m, other=0.0, cache_modifier=".cg")  # the one that waits
            d_n = d * (1.0 - z) * (1.0 - n * n)
            d_hn = d_n * r
            d_r = d_hn * hn * (1.0 - r)
            d_z = d * (hp - n) * z * (1.0 - z)
            gx = grad_xp + t * 3 * step_size + at3
            tl.store(gx, d_r, mask=m)
            tl.store(gx + H, d_z, mask=m)
            tl.store(gx + 2 * H, d_n, mask=m)
            tl.store(gh_t + at3, d_r, mask=m)
            tl.store(gh_t + at3 + H, d_z, mask=m)
            tl.store(gh_t + at3 + 2 * H, d_hn, mask=m)
        _tile_barrier(counters + tile, (s + 1) * SPLIT, SPLIT)
        # dL/dh_{t-1} = grad_out[t-1] + z * dh_t + [dr, dz, dhn] @ W_hh
        for j0 in tl.range(part * COLS, (part + 1) * COLS, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            col_ok = cols < (part + 1) * COLS
            m = row_ok[:, None] & col_ok[None, :]
            at = rows[:, None] * H + cols[None, :]
            z = tl.load(g_t + rows[:, None] * (3 * H) + H + cols[None, :], mask=m, other=0.0)
            acc = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
            if t > 0:
                acc += tl.load(grad_out + (t - 1) * step_size + at, mask=m, other=0.0)
            acc += tl.load(dh_cur + at, mask=m, other=0.0, cache_modifier=".cg") * z
            for k0 in tl.range(0, 3 * H, BLOCK_K):
                ks = k0 + tl.arange(0, BLOCK_K)
                k_ok = ks < 3 * H
                g_k = tl.load(gh_t + rows[:, None] * (3 * H) + ks[None, :],
                              mask=row_ok[:, None] & k_ok[None, :], other=0.0, cache_modifier=".cg")
                w_k = tl.load(w + ks[:, None] * H + cols[None, :], mask=k_ok[:, None] & col_ok[None, :], other=0.0)
                acc = tl.dot(g_k, w_k, acc, input_precision=PRECISION)
            tl.store(dh_next + at, acc, mask=m)
        tl.debug_barrier()  # this program's dh_next, read by its own threads next step


def choose_split(batch: int, hidden: int, device: torch.device) -> int:
    """Programs per batch tile: as many as keep >= MIN_COLS columns each and every program
    resident at once (split * tiles <= multiprocessors); 1 off a GPU (the interpreter)."""
    if device.type != "cuda":
        return 1
    tiles = triton.cdiv(batch, BLOCK_B)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    split = 1
    while hidden % (2 * split) == 0 and hidden // (2 * split) >= MIN_COLS and tiles * 2 * split <= sms:
        split *= 2
    return split


def _blocks(hidden: int, split: int) -> dict:
    cols = hidden // split
    return {
        "num_warps": NUM_WARPS,
        "num_stages": NUM_STAGES,
        "BLOCK_H": min(64, max(16, triton.next_power_of_2(cols))),
        "BLOCK_K": min(BLOCK_K_MAX, max(16, triton.next_power_of_2(hidden))),
        "PRECISION": _dot_precision(),
    }


def _dot_precision() -> str:
    """tl.dot's float32 mode as torch would pick it for a matmul: TF32 where allowed, else HIGHEST.
    Asks torch's newer per-backend setting first: once that is set, the legacy getter raises."""
    setting = getattr(torch.backends.cuda.matmul, "fp32_precision", "none")
    if setting == "none":  # not set per backend: the global (legacy) setting decides
        return HIGHEST if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return "tf32" if setting == "tf32" else HIGHEST


def _grid(batch: int, hidden: int, split: int | None, device: torch.device) -> tuple[int, int]:
    """(batch tiles, programs per tile): ``choose_split``'s, or the caller's ``split`` once checked."""
    tiles = triton.cdiv(batch, BLOCK_B)
    if split is None:
        return tiles, choose_split(batch, hidden, device)
    if hidden % split:
        raise ValueError(f"split={split} must divide hidden_size={hidden}")
    if split > 1 and device.type != "cuda":
        raise ValueError(f"split={split} needs a GPU: the interpreter runs programs one after another, "
                         "so the first would wait forever at the barrier")
    if split > 1:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        if tiles * split > sms:
            raise ValueError(f"split={split}: {tiles * split} programs would not all be resident on {sms} multiprocessors")
    return tiles, split


def _on(device: torch.device):
    """Launch on the tensors' GPU, not the current one (a no-op for the interpreter's CPU tensors)."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def fused_forward(xp: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor | None,
                  split: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the recurrence over xp [T,B,3H] (contiguous; overwritten with the gates [r, z, hn]).

    Returns (n [T,B,H], h_ext [T+1,B,H]) with h_ext[0] = h0 and h_ext[1:] the hidden states."""
    T, B, H3 = xp.shape
    H = H3 // 3
    tiles, split = _grid(B, H, split, xp.device)
    h_ext = torch.empty(T + 1, B, H, dtype=xp.dtype, device=xp.device)
    h_ext[0] = h0
    n = torch.empty(T, B, H, dtype=xp.dtype, device=xp.device)
    counters = torch.zeros(tiles, dtype=torch.int32, device=xp.device)
    bias = b_hh if b_hh is not None else w_hh  # never read without HAS_BIAS
    with _on(xp.device):
        _forward_kernel[(tiles, split)](xp, n, h_ext, w_hh.t().contiguous(), bias, counters, T, B, H=H,
                                        HAS_BIAS=b_hh is not None, SPLIT=split, BLOCK_B=BLOCK_B, **_blocks(H, split))
    return n, h_ext


def fused_backward(gates: torch.Tensor, n: torch.Tensor, h_ext: torch.Tensor, w_hh: torch.Tensor,
                   grad_out: torch.Tensor, split: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward time loop over fused_forward's saved tensors. Returns (d(xp) [T,B,3H] =
    [dr, dz, dn], d(h W_hh^T + b_hh) [T,B,3H] = [dr, dz, dn * r], dL/dh0 [B,H]) (d = pre-activation
    gradient); the weight gradients are the caller's single matmuls over batch x time."""
    T, B, H = n.shape
    tiles, split = _grid(B, H, split, n.device)
    grad_out = grad_out.contiguous()
    grad_xp = torch.empty_like(gates)
    grad_hh = torch.empty_like(gates)
    dh = torch.empty(2, B, H, dtype=n.dtype, device=n.device)
    dh[0] = grad_out[T - 1]
    counters = torch.zeros(tiles, dtype=torch.int32, device=n.device)
    with _on(n.device):
        _backward_kernel[(tiles, split)](gates, n, h_ext, w_hh.contiguous(), grad_out, grad_xp, grad_hh,
                                         dh, counters, T, B, H=H, SPLIT=split, BLOCK_B=BLOCK_B, **_blocks(H, split))
    return grad_xp, grad_hh, dh[T % 2]
