"""Gradient-norm-over-time: ||dL/dh_t|| for every layer and step, and gate statistics over t.

The derivative is the *total* one: h_t reaches the loss through the readout at t and through every
later step. Retaining grad on a stacked output tensor would give only the readout term, and cuDNN
hides its per-step states, so the probe re-runs the cell unrolled step by step on the cell's own
parameters (`gru_sweep.cells.unroll`) and differentiates with respect to each per-step state tensor
of that graph. Custom GRU and cuDNN GRU therefore give the same curve for the same weights.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import torch
from torch import Tensor

from gru_sweep.cells import unroll

DECAY_THRESHOLD = 1e-3  # a curve's horizon: where it falls below this fraction of its peak

# A gate value above HIGH (below LOW) counts as saturated open (closed): a GRU's z ~ 1 holds
# its memory (h_t ~ h_{t-1}), r ~ 0 cuts the past off from the candidate n.
GATE_HIGH, GATE_LOW = 0.9, 0.1


@dataclass
class ProbeResult:
    h_norms: Tensor                  # [L, T] batch mean of per-example ||dL/dh_t||
    c_norms: Tensor | None           # [L, T] the same for the LSTM cell state, else None
    gate_stats: dict[str, Tensor]    # "<gate>_mean" / "_hi" / "_lo" -> [L, T]


def probe(cell: torch.nn.Module, inputs: Tensor, loss_fn: Callable[[Tensor], Tensor]) -> ProbeResult:
    """Run `cell` unrolled on `inputs`, differentiate `loss_fn(output)` w.r.t. every h_t (and c_t)."""
    with torch.enable_grad():
        trace = unroll(cell, inputs)
        loss = loss_fn(trace.output)
        states = [h for layer in trace.h for h in layer]
        n_h = len(states)
        if trace.c is not None:
            states += [c for layer in trace.c for c in layer]
        grads = torch.autograd.grad(loss, states, allow_unused=True)
    num_layers, steps = len(trace.h), len(trace.h[0])

    def norms(grad_list) -> Tensor:
        rows = [g.detach().norm(dim=-1).mean() if g is not None else torch.zeros(()) for g in grad_list]
        return torch.stack([r.to(torch.float64).cpu() for r in rows]).reshape(num_layers, steps)

    h_norms = norms(grads[:n_h])
    c_norms = norms(grads[n_h:]) if trace.c is not None else None
    stats = {}
    for name, gate in trace.gates.items():  # [L, B, T, H]
        gate = gate.detach().to(torch.float64)
        stats[f"{name}_mean"] = gate.mean(dim=(1, 3)).cpu()
        stats[f"{name}_hi"] = (gate > GATE_HIGH).to(torch.float64).mean(dim=(1, 3)).cpu()
        stats[f"{name}_lo"] = (gate < GATE_LOW).to(torch.float64).mean(dim=(1, 3)).cpu()
    return ProbeResult(h_norms, c_norms, stats)


def hidden_grad_norms(cell: torch.nn.Module, inputs: Tensor, loss_fn: Callable[[Tensor], Tensor]) -> Tensor:
    """[num_layers, T]: batch mean of the per-example L2 norm of the total dL/dh_t.

    `cell` is a CustomGRU, a torch.nn.GRU / LSTM / RNN or the project's RecurrentCell wrapper;
    `inputs` is shaped as that module expects; `loss_fn` maps its output sequence to a scalar.
    """
    return probe(cell, inputs, loss_fn).h_norms


def log10_first_last_ratio(norms: Tensor) -> float:
    """log10(||dL/dh_1|| / ||dL/dh_T||) of one curve: how many decades the gradient lost over T."""
    first, last = float(norms[0]), float(norms[-1])
    if first <= 0 or last <= 0:
        return float("-inf") if first <= 0 else float("inf")
    return float(torch.log10(torch.tensor(first / last)))


def log_safe(values) -> np.ndarray:
    """Values usable on a log scale; everything else becomes NaN."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)


@dataclass(frozen=True)
class DecayFit:
    """How fast ||dL/dh_t|| falls with the distance d = t_last - t from the end of the sequence.

    Both numbers look only at the curve from its maximum backwards in time: where the loss is
    injected late (copy task: the recall steps at the end), the steps after the maximum show
    how the loss enters, not how the gradient decays.
    slope: least-squares slope of ln ||dL/dh_t|| against d over that part (per step; -a for
        exp(-a d)); 0 when the maximum is the first step (nothing decays into the past, as when
        a long memory sums the losses of every later step); nan with under two usable points.
    horizon: the first distance at which the norm is below threshold * max; nan when it never
        gets there within the sequence.
    fit_horizon: the same distance read off the fitted line, ln(threshold) / slope, which
        extrapolates past the sequence (inf when the fit does not decay).
    """

    slope: float
    intercept: float
    horizon: float
    fit_horizon: float
    n_points: int

    @property
    def factor_per_step(self) -> float:
        return math.exp(self.slope) if math.isfinite(self.slope) else math.nan


def fit_decay(t: Sequence[float], grad_norm: Sequence[float],
              threshold: float = DECAY_THRESHOLD) -> DecayFit:
    """Fit ln ||dL/dh_t|| linearly in the distance from the end; see DecayFit."""
    t = np.asarray(t, dtype=float)
    norm = log_safe(grad_norm)
    order = np.argsort(-t, kind="stable")  # distance 0 (the last step) first
    t, norm, raw = t[order], norm[order], np.asarray(grad_norm, dtype=float)[order]
    if np.isfinite(norm).sum() < 2:
        return DecayFit(math.nan, math.nan, math.nan, math.nan, int(np.isfinite(norm).sum()))
    peak = int(np.nanargmax(norm))
    distance, tail = t[0] - t, np.arange(len(t)) >= peak
    usable = tail & np.isfinite(norm)
    # an underflow to 0 is below any threshold, though it cannot enter the log fit
    below = tail & (np.where(np.isnan(raw), np.inf, raw) < threshold * norm[peak])
    horizon = float(distance[np.argmax(below)]) if below.any() else math.nan
    if usable.sum() < 2:  # the maximum is the first usable step
        return DecayFit(0.0, math.log(norm[peak]), horizon, math.inf, int(usable.sum()))
    slope, intercept = np.polyfit(distance[usable], np.log(norm[usable]), 1)
    return DecayFit(float(slope), float(intercept), horizon,
                    slope_horizon(float(slope), threshold), int(usable.sum()))


def slope_horizon(slope: float, threshold: float = DECAY_THRESHOLD) -> float:
    """The distance at which exp(slope * d) falls to `threshold`: inf when it does not decay."""
    if math.isnan(slope):
        return math.nan
    return math.log(threshold) / slope if slope < 0 else math.inf
