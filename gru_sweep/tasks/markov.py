"""A synthetic character source with an exactly known floor: an order-k Markov chain.

The chain over `vocab_size` symbols has one transition row per k-gram context, each drawn from
a symmetric Dirichlet(`concentration`) with numpy's generator seeded by `chain_seed` (small
concentration: peaked rows, low entropy; large: near uniform, entropy near ln V). Its stationary
distribution pi over k-grams is found by power iteration, and the entropy rate is

    h = sum_s pi(s) H(P(. | s))        (nats per character)

the floor on the loss of any predictor that sees the whole past. A scored window predicts
seq_len characters and its first predictions see fewer than k characters of context, so the
best achievable loss per character over one window of T predictions from a fresh state is

    floor_T = (H_{T+1} - H_1) / T,     H_m = entropy of m consecutive characters,

with H_m from pi for m <= k and H_m = H_k + (m - k) h beyond; floor_T -> h as T grows. The
baseline reports both: "loss"/"bpc" = floor_T (what val/loss can reach), "entropy_rate"/
"entropy_rate_bpc" = h.

The corpus: independent chains of ROW_LEN characters (or seq_len + 1 if longer), each started
from pi so every window is a stationary sample, drawn once from `chain_seed` (so the data does
not change with the run seed or, below ROW_LEN, with seq_len), split by rows into
train/val/test, and then served exactly like a text file (see corpus.py).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from gru_sweep.data_schema import SPLITS, MarkovConfig, row_len, split_rows
from gru_sweep.errors import ConfigError
from gru_sweep.tasks.base import CORPUS, generator
from gru_sweep.tasks.corpus import CorpusTask

def transition_table(vocab_size: int, order: int, concentration: float, seed: int) -> Tensor:
    """P [vocab_size ** order, vocab_size]: row s = the next-symbol distribution after k-gram s.

    The k-gram (c_1 .. c_k), oldest first, has index sum_j c_j V^(k-j) (base V digits).
    """
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size ** order))


def stationary_distribution(P: Tensor, tol: float = 1e-13, max_iter: int = 100_000) -> Tensor:
    """pi over k-grams with pi = pi M, where M moves k-gram (c_1..c_k) to (c_2..c_k, c) w.p. P[s, c].

    Power iteration on the lazy chain (M + I) / 2, which has the same stationary distributions and
    converges even where M is periodic (near-deterministic rows). Should M split into closed
    classes, the limit from the uniform start is one stationary mixture of them: still a valid
    start for the chain, and h and H_m below are exact for the process started from it.
    """
    states, vocab = P.shape
    pi = torch.full((states,), 1.0 / states, dtype=torch.float64)
    for _ in range(max_iter):
        # flow [c_1, (c_2..c_k), c] summed over c_1 is the mass of the next k-gram (c_2..c_k, c)
        step = (pi[:, None] * P).view(vocab, states // vocab, vocab).sum(0).reshape(states)
        if (step - pi).abs().sum() < tol:
            return step / step.sum()
        pi = (pi + step) / 2
    raise ValueError(f"no stationary distribution within {max_iter} power iterations")


def entropy_rate(P: Tensor, pi: Tensor) -> float:
    """h = sum_s pi(s) H(P[s]) in nats."""
    return float((pi * -torch.special.xlogy(P, P).sum(1)).sum())


def block_entropy(pi: Tensor, vocab_size: int, order: int, m: int, rate: float) -> float:
    """H_m: entropy (nats) of m consecutive characters of the stationary chain."""
    if m > order:
        return block_entropy(pi, vocab_size, order, order, rate) + (m - order) * rate
    marginal = pi.view(vocab_size ** m, -1).sum(1)  # the first m characters of a stationary k-gram
    return float(-torch.special.xlogy(marginal, marginal).sum())


def sample_chains(P: Tensor, pi: Tensor, order: int, rows: int, length: int, gen: torch.Generator) -> Tensor:
    """rows independent stationary chains of `length` symbols, int64 [rows, length].

    A loop over time, vectorised over chains (each step depends on the previous ones); run once
    per task, not per batch.
    """
    vocab = P.shape[1]
    cumulative = P.cumsum(1)
    u = torch.rand(length, rows, 1, dtype=torch.float64, generator=gen)
    state = torch.multinomial(pi, rows, replacement=True, generator=gen)
    out = torch.empty(rows, length, dtype=torch.long)
    for j in range(min(order, length)):
        out[:, j] = state // vocab ** (order - 1 - j) % vocab
    for t in range(order, length):
        # inverse CDF: the first symbol whose cumulative probability exceeds u
        nxt = torch.searchsorted(cumulative[state], u[t], right=True).squeeze(1).clamp_(max=vocab - 1)
        out[:, t] = nxt
        state = state % vocab ** (order - 1) * vocab + nxt
    return out


class MarkovTask(CorpusTask):
    def __init__(self, cfg: MarkovConfig, seed: int):
        V, k = cfg.vocab_size, cfg.order
        self.transition = transition_table(V, k, cfg.concentration, cfg.chain_seed)
        try:
            self.stationary = stationary_distribution(self.transition)
        except ValueError as err:  # near-deterministic rows: the chain mixes too slowly (or not at all)
            raise ConfigError("concentration", cfg.concentration,
                              f"{err}: pass a larger data.concentration") from None
        self.entropy_rate = entropy_rate(self.transition, self.stationary)
        counts = split_rows(cfg)
        chains = sample_chains(self.transition, self.stationary, k, sum(counts), row_len(cfg),
                               generator(CORPUS, cfg.chain_seed, 0))
        super().__init__(cfg, seed, dict(zip(SPLITS, chains.split(counts))), vocab_size=V)

        T = cfg.seq_len
        floor = (block_entropy(self.stationary, V, k, T + 1, self.entropy_rate)
                 - block_entropy(self.stationary, V, k, 1, self.entropy_rate)) / T
        self.baseline = {
            "loss": floor,
            "bpc": floor / math.log(2),
            "entropy_rate": self.entropy_rate,
            "entropy_rate_bpc": self.entropy_rate / math.log(2),
        }

    @torch.no_grad()
    def metrics(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        out = super().metrics(pred, target)
        out["bpc_above_floor"] = out["bpc"] - self.baseline["bpc"]
        return out
