"""Markov-chain source: the stationary distribution against numpy's eigenvector of the dense
k-gram transition matrix, and the entropy floor against estimates from generated text."""
import math
from collections import Counter

import numpy as np
import pytest
import torch

from gru_sweep.tasks import build_task
from gru_sweep.tasks.markov import stationary_distribution

torch.set_num_threads(1)

V, K = 4, 2


@pytest.fixture(scope="module")
def task():
    return build_task({"name": "markov", "vocab_size": V, "order": K, "concentration": 0.3, "seq_len": 3,
                       "num_chars": 300_000, "chain_seed": 5}, seed=0)


def dense_stationary(P):
    """Left eigenvector for eigenvalue 1 of the [V^k, V^k] k-gram transition matrix."""
    states = P.shape[0]
    M = np.zeros((states, states))
    for s in range(states):
        for c in range(V):
            M[s, (s % V ** (K - 1)) * V + c] += P[s, c]
    w, vecs = np.linalg.eig(M.T)
    pi = np.real(vecs[:, np.argmin(abs(w - 1))])
    return pi / pi.sum()


def test_stationary_distribution_and_entropy_rate_exact(task):
    P = task.transition.numpy()
    assert P.shape == (V ** K, V) and np.allclose(P.sum(1), 1)
    pi = dense_stationary(P)
    assert np.allclose(task.stationary.numpy(), pi, atol=1e-12)
    h = -sum(pi[s] * sum(p * math.log(p) for p in P[s] if p > 0) for s in range(V ** K))
    assert task.entropy_rate == pytest.approx(h, rel=1e-10)
    assert task.baseline["entropy_rate"] == pytest.approx(h, rel=1e-10)
    assert task.baseline["entropy_rate_bpc"] == pytest.approx(h / math.log(2), rel=1e-10)
    assert 0.2 * math.log(V) < h < math.log(V)


def test_generated_text_matches_the_entropy_rate(task):
    """Two estimates from the training split: the cross-entropy of the true table on the
    samples, and the plug-in conditional entropy from (k+1)-gram counts (no table used)."""
    rows = task.splits["train"].numpy()
    contexts = rows[:, :-2] * V + rows[:, 1:-1]  # k = 2
    nll = -np.log(task.transition.numpy()[contexts, rows[:, 2:]])
    h = task.entropy_rate
    assert abs(nll.mean() - h) < 10 * nll.std() / math.sqrt(nll.size)  # 10 s.e.: terms are correlated
    grams = Counter(zip(contexts.ravel().tolist(), rows[:, 2:].ravel().tolist()))
    ctx = Counter()
    for (s, _), c in grams.items():
        ctx[s] += c
    n = sum(grams.values())
    plug_in = -sum(c / n * math.log(c / ctx[s]) for (s, _), c in grams.items())
    assert plug_in == pytest.approx(h, abs=0.01)


def test_floor_for_short_windows_matches_an_oracle_on_validation_chunks(task):
    """With seq_len T = 3 the first prediction sees one character: the exact best loss per
    character is (H(X1|X0) + (T-1) h) / T, checked against the oracle's loss on the val chunks."""
    P, pi = task.transition.numpy(), dense_stationary(task.transition.numpy())
    pair = pi.reshape(V, V)  # stationary distribution of two consecutive characters (k = 2)
    first = pair / pair.sum(1, keepdims=True)  # p(x1 | x0)
    x, y = task.chunks("val")
    x, y = x.numpy(), y.numpy()
    nll = -np.log(first[x[:, 0], y[:, 0]])
    nll = np.stack([nll, -np.log(P[x[:, 0] * V + x[:, 1], y[:, 1]]), -np.log(P[x[:, 1] * V + x[:, 2], y[:, 2]])], 1)
    per_char = nll.mean(1)
    assert abs(per_char.mean() - task.baseline["loss"]) < 5 * per_char.std() / math.sqrt(len(per_char))
    h1 = -(pair.sum(1) * np.log(pair.sum(1))).sum()
    h2 = -(pair * np.log(pair)).sum()
    assert task.baseline["loss"] == pytest.approx((h2 - h1 + 2 * task.entropy_rate) / 3, rel=1e-10)
    assert task.baseline["bpc"] == pytest.approx(task.baseline["loss"] / math.log(2))
    assert task.baseline["loss"] > task.entropy_rate


def test_metrics_report_bits_above_the_floor(task):
    x, y = task.probe_batch(64)
    P = task.transition
    # the oracle's log-probabilities from the third step on; uniform before
    logits = torch.zeros(*y.shape, V, dtype=torch.float64)
    logits[:, 1:] = P[x[:, :-1] * V + x[:, 1:]].log()
    m = task.metrics(logits, y)
    assert set(m) == {"loss", "bpc", "bpc_above_floor"}
    assert m["bpc_above_floor"].item() == pytest.approx(m["bpc"].item() - task.baseline["bpc"])


def test_chain_and_corpus_depend_on_chain_seed_not_run_seed():
    cfg = {"name": "markov", "vocab_size": 3, "order": 1, "num_chars": 10_000, "seq_len": 5}
    a, b = build_task(cfg, seed=0), build_task(cfg, seed=1)
    c = build_task(cfg | {"chain_seed": 1}, seed=0)
    assert torch.equal(a.splits["train"], b.splits["train"]) and torch.equal(a.transition, b.transition)
    assert not torch.equal(a.transition, c.transition)
    assert {k: v.shape for k, v in a.splits.items()} == {"train": (3, 4096), "val": (1, 4096), "test": (1, 4096)}


def test_concentration_controls_entropy():
    rates = [build_task({"name": "markov", "vocab_size": 8, "order": 1, "concentration": a, "num_chars": 5000},
                        seed=0).entropy_rate for a in (0.05, 1.0, 50.0)]
    assert rates[0] < rates[1] < rates[2] < math.log(8)
    assert rates[2] > 0.95 * math.log(8)


def test_stationary_distribution_of_a_periodic_chain():
    """Plain power iteration would oscillate on the deterministic flip 0 -> 1 -> 0; the lazy one converges."""
    flip = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(stationary_distribution(flip), torch.tensor([0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="power iterations"):
        stationary_distribution(torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64), max_iter=2)
