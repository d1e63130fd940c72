"""The gradient-norm-over-time probe against independent computations.

References: an analytic backward recursion for a tanh RNN, and hand-written GRU/LSTM step
equations whose per-step states get a zero offset, so d loss / d offset_t is the total dL/dh_t
computed without the project's unroll.
"""
import math

import pytest
import torch
from torch import nn

from gru_sweep.cells import CustomGRU
from gru_sweep.probe import hidden_grad_norms, log10_first_last_ratio, probe

B, T, I, H = 4, 12, 3, 5


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _weights(seed: int, steps: int = T, out: int = H):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, steps, I, generator=g), torch.randn(B, steps, out, generator=g)


def _linear_loss(a):
    """L = sum_t <a_t, out_t>: the direct term of dL/dh_t is a_t (last layer)."""
    return lambda out: (out * a).sum()


def _norms_of(grads):  # [B, H] per step -> batch mean of per-example norms
    return torch.stack([g.norm(dim=-1).mean() for g in grads])


def test_tanh_rnn_matches_analytic_backward_recursion():
    rnn = nn.RNN(I, H, batch_first=True)
    x, a = _weights(0)
    with torch.no_grad():
        hs, h = [], torch.zeros(B, H)
        for t in range(T):
            h = torch.tanh(x[:, t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
            hs.append(h)
        # g_t = a_t + W_hh^T [(1 - h_{t+1}^2) * g_{t+1}]
        g = [None] * T
        g[-1] = a[:, -1]
        for t in range(T - 2, -1, -1):
            g[t] = a[:, t] + ((1 - hs[t + 1] ** 2) * g[t + 1]) @ rnn.weight_hh_l0
    got = hidden_grad_norms(rnn, x, _linear_loss(a))
    assert got.shape == (1, T)
    torch.testing.assert_close(got[0], _norms_of(g), rtol=1e-10, atol=1e-12)


def _gru_reference(params, x, a, num_layers):
    """Hand-written GRU (the equations in gru_function.py) with zero offsets on every h_t."""
    offsets = [[torch.zeros(B, H, requires_grad=True) for _ in range(T)] for _ in range(num_layers)]
    inp = x
    for layer in range(num_layers):
        w_ih, w_hh = params[f"weight_ih_l{layer}"], params[f"weight_hh_l{layer}"]
        b_ih, b_hh = params[f"bias_ih_l{layer}"], params[f"bias_hh_l{layer}"]
        h, outs = torch.zeros(B, H), []
        for t in range(T):
            xi = inp[:, t] @ w_ih.T + b_ih
            hh = h @ w_hh.T + b_hh
            r = torch.sigmoid(xi[:, :H] + hh[:, :H])
            z = torch.sigmoid(xi[:, H:2 * H] + hh[:, H:2 * H])
            n = torch.tanh(xi[:, 2 * H:] + r * hh[:, 2 * H:])
            h = (1 - z) * n + z * h + offsets[layer][t]
            outs.append(h)
        inp = torch.stack(outs, 1)
    loss = (inp * a).sum()
    return torch.stack([_norms_of(torch.autograd.grad(loss, offsets[l], retain_graph=True)) for l in range(num_layers)])


@pytest.mark.parametrize("num_layers", [1, 2])
def test_custom_and_cudnn_gru_give_the_reference_curve(num_layers):
    ref_gru = nn.GRU(I, H, num_layers=num_layers, batch_first=True)
    custom = CustomGRU(I, H, num_layers=num_layers, batch_first=True)
    custom.load_state_dict(ref_gru.state_dict())
    x, a = _weights(1)
    expected = _gru_reference(dict(ref_gru.named_parameters()), x, a, num_layers)
    for module in (ref_gru, custom):
        got = hidden_grad_norms(module, x, _linear_loss(a))
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_lstm_hidden_and_cell_state_norms_match_reference():
    lstm = nn.LSTM(I, H, batch_first=True)
    x, a = _weights(2)
    p = dict(lstm.named_parameters())
    dh = [torch.zeros(B, H, requires_grad=True) for _ in range(T)]
    dc = [torch.zeros(B, H, requires_grad=True) for _ in range(T)]
    h, c, outs = torch.zeros(B, H), torch.zeros(B, H), []
    for t in range(T):
        gates = x[:, t] @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T + p["bias_hh_l0"]
        i, f, g, o = gates.chunk(4, dim=1)  # PyTorch order i, f, g, o
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g) + dc[t]
        h = torch.sigmoid(o) * torch.tanh(c) + dh[t]
        outs.append(h)
    loss = (torch.stack(outs, 1) * a).sum()
    grads = torch.autograd.grad(loss, dh + dc)
    result = probe(lstm, x, _linear_loss(a))
    torch.testing.assert_close(result.h_norms[0], _norms_of(grads[:T]), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(result.c_norms[0], _norms_of(grads[T:]), rtol=1e-9, atol=1e-12)
    assert set(result.gate_stats) >= {"i_mean", "f_mean", "o_mean", "f_hi", "f_lo"}


def test_small_weight_tanh_rnn_decays_exponentially():
    """Loss at the last step only: ||dL/dh_{T-d}|| <= ||W_hh||_2^d ||dL/dh_T|| (tanh' <= 1)."""
    rnn = nn.RNN(I, H, batch_first=True)
    with torch.no_grad():
        rnn.weight_hh_l0.mul_(0.3 / torch.linalg.matrix_norm(rnn.weight_hh_l0, ord=2))
    x, _ = _weights(3)
    norms = hidden_grad_norms(rnn, x, lambda out: out[:, -1].sum())[0]
    bound = norms[-1] * 0.3 ** torch.arange(T - 1, -1, -1, dtype=torch.float64)
    assert torch.all(norms <= bound * (1 + 1e-9))
    assert log10_first_last_ratio(norms) < (T - 1) * math.log10(0.3) + 1e-9


def test_copy_through_gru_has_a_flat_curve():
    """z = 1 everywhere: h_t = h_{t-1}, so dL/dh_t = dL/dh_T for every t."""
    gru = nn.GRU(I, H, batch_first=True)
    with torch.no_grad():
        gru.bias_hh_l0[H:2 * H] = 60.0  # sigmoid(60) == 1 in float64 up to 1e-26
    x, _ = _weights(4)
    norms = hidden_grad_norms(gru, x, lambda out: out[:, -1].sum())[0]
    torch.testing.assert_close(norms, torch.full_like(norms, float(norms[-1])), rtol=1e-12, atol=0)
    assert float(norms[-1]) == pytest.approx(math.sqrt(H))
    result = probe(gru, x, lambda out: out[:, -1].sum())
    torch.testing.assert_close(result.gate_stats["z_hi"][0], torch.ones(T))


def test_first_last_ratio_on_a_known_curve():
    decay = torch.tensor([10.0 ** -(T - 1 - t) for t in range(T)])  # one decade per step
    assert log10_first_last_ratio(decay) == pytest.approx(-(T - 1))
