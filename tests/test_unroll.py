"""unroll() against the fused modules, explicit gate formulas, and finite differences."""
import pytest
import torch
from torch import nn

from gru_sweep.cells import CellConfig, CustomGRU, Unrolled, build_cell, unroll
from gru_sweep.errors import ConfigError


pytestmark = pytest.mark.usefixtures("one_thread")


def make(kind, input_size=4, hidden=6, layers=2, batch_first=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    kwargs = {"batch_first": batch_first}
    module = {
        "custom_gru": lambda: CustomGRU(input_size, hidden, layers, **kwargs),
        "cudnn_gru": lambda: nn.GRU(input_size, hidden, layers, **kwargs),
        "lstm": lambda: nn.LSTM(input_size, hidden, layers, **kwargs),
        "rnn": lambda: nn.RNN(input_size, hidden, layers, **kwargs),
        "irnn": lambda: nn.RNN(input_size, hidden, layers, nonlinearity="relu", **kwargs),
    }[kind]()
    return module.to(dtype)


@pytest.mark.parametrize("kind", ["custom_gru", "cudnn_gru", "lstm", "rnn", "irnn"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_unrolled_matches_fused(kind, batch_first, with_hx):
    module = make(kind, batch_first=batch_first, layers=3)
    batch, steps = 5, 30
    x = torch.randn((batch, steps, 4) if batch_first else (steps, batch, 4))
    hx = None
    if with_hx:
        hx = torch.randn(3, batch, 6)
        if kind == "lstm":
            hx = (hx, torch.randn(3, batch, 6))
    out, h_n = module(x, hx)
    u = unroll(module, x, hx)
    assert isinstance(u, Unrolled)
    torch.testing.assert_close(u.output, out, atol=1e-5, rtol=0)
    assert len(u.h) == 3 and all(len(h_l) == steps for h_l in u.h)
    assert all(h.shape == (batch, 6) for h_l in u.h for h in h_l)
    if kind == "lstm":
        h_n, c_n = h_n
        torch.testing.assert_close(u.c_n, c_n, atol=1e-5, rtol=0)
        assert len(u.c) == 3 and all(len(c_l) == steps for c_l in u.c)
    else:
        assert u.c is None
    torch.testing.assert_close(u.h_n, h_n, atol=1e-5, rtol=0)
    # every per-step state of the last layer is the output at that step
    last = u.output if batch_first else u.output.transpose(0, 1)
    for t in (0, steps // 2, steps - 1):
        assert torch.equal(u.h[-1][t], last[:, t])
    expected_gates = {"custom_gru": {"r", "z"}, "cudnn_gru": {"r", "z"}, "lstm": {"i", "f", "o"}}.get(kind, set())
    assert set(u.gates) == expected_gates
    assert all(g.shape == (3, batch, steps, 6) for g in u.gates.values())


def test_unrolled_gradients_match_fused():
    module = make("lstm", layers=2)
    x = torch.randn(3, 12, 4)
    w = torch.randn(3, 12, 6)
    g_fused = torch.autograd.grad((module(x)[0] * w).sum(), list(module.parameters()))
    g_unrolled = torch.autograd.grad((unroll(module, x).output * w).sum(), list(module.parameters()))
    for a, b in zip(g_unrolled, g_fused):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()


def per_layer_outputs(module, x):
    """Hidden (and cell) states of every layer from fused single-layer torch modules."""
    states, layer_in = [], x
    for k in range(module.num_layers):
        single = type(module)(layer_in.shape[-1], module.hidden_size, batch_first=True)
        single.load_state_dict(
            {n.replace(f"_l{k}", "_l0"): p for n, p in module.state_dict().items() if n.endswith(f"_l{k}")}
        )
        if isinstance(module, nn.LSTM):
            # c_t is not an output of nn.LSTM: run it one step at a time, state carried over
            h, c, hs, cs = None, None, [], []
            for t in range(layer_in.shape[1]):
                _, (h, c) = single(layer_in[:, t : t + 1], None if h is None else (h, c))
                hs.append(h[0])
                cs.append(c[0])
            out = torch.stack(hs, 1)
            states.append((out, torch.stack(cs, 1)))
        else:
            out = single(layer_in)[0]
            states.append((out, None))
        layer_in = out
    return states


@pytest.mark.parametrize("kind", ["cudnn_gru", "custom_gru", "lstm"])
def test_gates_match_explicit_formula(kind):
    module = make(kind, layers=2)
    ref = module  # torch's fused modules give each layer's states independently of unroll
    if kind == "custom_gru":
        ref = nn.GRU(4, 6, 2, batch_first=True)
        ref.load_state_dict(module.state_dict())
    x = torch.randn(3, 10, 4)
    u = unroll(module, x)
    layer_in = x
    for k, (h, _) in enumerate(per_layer_outputs(ref, x)):
        h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)
        w_ih, w_hh = getattr(ref, f"weight_ih_l{k}"), getattr(ref, f"weight_hh_l{k}")
        b_ih, b_hh = getattr(ref, f"bias_ih_l{k}"), getattr(ref, f"bias_hh_l{k}")
        names = ("r", "z") if kind != "lstm" else ("i", "f", "o")
        rows = {"r": 0, "z": 1} if kind != "lstm" else {"i": 0, "f": 1, "o": 3}
        for name in names:
            s = slice(rows[name] * 6, rows[name] * 6 + 6)
            pre = layer_in @ w_ih[s].T + b_ih[s] + h_prev @ w_hh[s].T + b_hh[s]
            torch.testing.assert_close(u.gates[name][k], torch.sigmoid(pre), atol=1e-5, rtol=0)
        layer_in = h


def test_lstm_cell_states_match_fused():
    module = make("lstm", layers=2)
    x = torch.randn(3, 8, 4)
    u = unroll(module, x)
    for k, (_, c) in enumerate(per_layer_outputs(module, x)):
        torch.testing.assert_close(torch.stack(u.c[k], 1), c, atol=1e-5, rtol=0)


def lstm_step_with_c_shift(cell, x_t, h, c, delta):
    """One LSTM step written out, c_t shifted by delta *before* h_t = o * tanh(c_t) reads it."""
    i, f, g, o = (x_t @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g) + delta
    return torch.sigmoid(o) * torch.tanh(c), c


def perturbed_loss(cells, x, w, at, delta, perturb_c=False):
    """Independent forward with torch's GRUCell/LSTMCell/RNNCell, shifting the state of layer
    at[0] at step at[1] by `delta` (h_t, or the LSTM's c_t); loss = sum(w * last-layer output)."""
    layer_in = x
    for k, cell in enumerate(cells):
        h = torch.zeros(x.shape[0], cell.hidden_size, dtype=x.dtype)
        c = torch.zeros_like(h)
        outs = []
        for t in range(x.shape[1]):
            if perturb_c and (k, t) == at:
                h, c = lstm_step_with_c_shift(cell, layer_in[:, t], h, c, delta)
            elif isinstance(cell, nn.LSTMCell):
                h, c = cell(layer_in[:, t], (h, c))
            else:
                h = cell(layer_in[:, t], h)
            if (k, t) == at and not perturb_c:
                h = h + delta
            outs.append(h)
        layer_in = torch.stack(outs, 1)
    return (layer_in * w).sum()


def step_cells(module):
    cell_type = {nn.GRU: nn.GRUCell, CustomGRU: nn.GRUCell, nn.LSTM: nn.LSTMCell, nn.RNN: nn.RNNCell}[type(module)]
    cells = []
    for k in range(module.num_layers):
        extra = {"nonlinearity": module.nonlinearity} if isinstance(module, nn.RNN) else {}
        cell = cell_type(module.input_size if k == 0 else module.hidden_size, module.hidden_size, **extra).double()
        cell.load_state_dict(
            {n.replace(f"_l{k}", ""): p for n, p in module.state_dict().items() if n.endswith(f"_l{k}")}
        )
        cells.append(cell)
    return cells


@pytest.mark.parametrize("kind", ["custom_gru", "cudnn_gru", "lstm", "rnn"])
def test_grad_wrt_h_is_total_derivative(kind):
    """autograd.grad(loss, h[l][t]) equals the central finite difference of the loss under a
    perturbation of that state, which reaches the loss through later steps and later layers."""
    module = make(kind, input_size=2, hidden=3, layers=2, dtype=torch.float64, seed=1)
    x = torch.randn(2, 6, 2, dtype=torch.float64)
    w = torch.randn(2, 6, 3, dtype=torch.float64)
    cells = step_cells(module)
    u = unroll(module, x)
    loss = (u.output * w).sum()
    with torch.no_grad():
        torch.testing.assert_close(loss, perturbed_loss(cells, x, w, (-1, -1), 0.0))
        if kind == "lstm":  # the written-out step agrees with LSTMCell
            torch.testing.assert_close(loss, perturbed_loss(cells, x, w, (0, 2), 0.0, perturb_c=True))
    targets = [(0, 2, False), (1, 2, False), (0, 5, False)]
    if kind == "lstm":
        targets += [(0, 2, True), (1, 3, True)]
    tensors = [(u.c if is_c else u.h)[l][t] for l, t, is_c in targets]
    grads = torch.autograd.grad(loss, tensors)
    eps = 1e-6
    for (l, t, is_c), grad in zip(targets, grads):
        fd = torch.zeros_like(grad)
        for idx in torch.cartesian_prod(torch.arange(2), torch.arange(3)):
            delta = torch.zeros(2, 3, dtype=torch.float64)
            delta[tuple(idx)] = eps
            with torch.no_grad():
                plus = perturbed_loss(cells, x, w, (l, t), delta, is_c)
                minus = perturbed_loss(cells, x, w, (l, t), -delta, is_c)
            fd[tuple(idx)] = (plus - minus) / (2 * eps)
        torch.testing.assert_close(grad, fd, atol=1e-7, rtol=1e-6)
        assert grad.abs().max() > 1e-3  # the state does reach the loss


def test_h0_of_layer_reaches_loss_through_next_layer_only_at_last_step():
    # h[0][T-1] feeds no later step, only layer 1 at step T-1: an analytic special case
    module = make("rnn", input_size=2, hidden=3, layers=2, dtype=torch.float64)
    x = torch.randn(2, 5, 2, dtype=torch.float64)
    u = unroll(module, x)
    w = torch.randn(2, 3, dtype=torch.float64)
    loss = (u.output[:, -1] * w).sum()
    (g,) = torch.autograd.grad(loss, u.h[0][-1])
    h1 = u.h[1][-1]
    expected = (w * (1 - h1**2)) @ module.weight_ih_l1  # d tanh(W_ih h0 + ...) / d h0
    torch.testing.assert_close(g, expected)


def test_recurrent_cell_unroll_and_module_function_agree():
    cell = build_cell(CellConfig(name="custom_gru", hidden_size=5, num_layers=2), input_size=3)
    x = torch.randn(2, 7, 3)
    a, b = cell.unroll(x), unroll(cell, x)
    torch.testing.assert_close(a.output, cell(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(a.output, b.output)
    assert a.output.shape == (2, 7, 5)


def test_unroll_ignores_dropout():
    module = nn.GRU(4, 6, 3, batch_first=True, dropout=0.5)
    x = torch.randn(2, 5, 4)
    module.train()
    u = unroll(module, x)
    module.eval()
    torch.testing.assert_close(u.output, module(x)[0], atol=1e-5, rtol=0)


def test_unroll_rejects_unsupported_modules():
    with pytest.raises(ConfigError, match="unroll takes"):
        unroll(nn.Linear(3, 3), torch.randn(2, 4, 3))
    with pytest.raises(ConfigError, match="bidirectional"):
        unroll(nn.GRU(3, 4, bidirectional=True), torch.randn(2, 4, 3))
    with pytest.raises(ConfigError, match="proj_size"):
        unroll(nn.LSTM(3, 4, proj_size=2), torch.randn(2, 4, 3))
    with pytest.raises(ConfigError, match="3-D"):
        unroll(nn.GRU(3, 4), torch.randn(4, 3))
