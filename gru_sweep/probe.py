"""Gradient-norm-over-time: ||dL/dh_t|| for every layer and step, and gate statistics over t.

The derivative is the *total* one: h_t reaches the loss through the readout at t and through every
later step. Retaining grad on a stacked output tensor would give only the readout term, and cuDNN
hides its per-step states, so the probe re-runs the cell unrolled step by step on the cell's own
parameters (`gru_sweep.cells.unroll`) and differentiates with respect to each per-step state tensor
of that graph. Custom GRU and cuDNN GRU therefore give the same curve for the same weights.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gru_sweep.cells import unroll

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
