"""GRULayerFunction against finite differences (float64) and torch.nn.GRU (float32)."""
import pytest
import torch

from gru_sweep.cells.gru_function import gru_recurrence


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: threads only add contention on the shared CI machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _gru_via_function(gru: torch.nn.GRU, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Single-layer, batch_first nn.GRU semantics on the Function: output [B,T,H]."""
    xp = torch.nn.functional.linear(x.transpose(0, 1), gru.weight_ih_l0, gru.bias_ih_l0)
    return gru_recurrence(xp, h0, gru.weight_hh_l0, gru.bias_hh_l0).transpose(0, 1)


@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64(bias):
    g = torch.Generator().manual_seed(0)
    T, B, H = 5, 3, 4

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    args = (rand(T, B, 3 * H), rand(B, H), rand(3 * H, H), rand(3 * H) if bias else None)
    assert torch.autograd.gradcheck(gru_recurrence, args)


# (B, T, I, H): T=150 crosses the backward's 64-step chunks, B=1 the smallest batch.
@pytest.mark.parametrize("shape", [(4, 7, 3, 5), (1, 150, 2, 8), (16, 30, 10, 32)])
def test_matches_nn_gru_float32(shape):
    B, T, I, H = shape
    torch.manual_seed(sum(shape))
    ref = torch.nn.GRU(I, H, batch_first=True)
    x = torch.randn(B, T, I)
    h0 = torch.randn(B, H)
    weight = torch.randn(B, T, H)  # a loss that weighs every output differently

    def run(forward):
        xg, hg = x.clone().requires_grad_(), h0.clone().requires_grad_()
        ref.zero_grad()
        out = forward(xg, hg)
        (out * weight).sum().backward()
        return out.detach(), [p.grad.clone() for p in ref.parameters()] + [xg.grad, hg.grad]

    want_out, want_grads = run(lambda xg, hg: ref(xg, hg[None])[0])
    got_out, got_grads = run(lambda xg, hg: _gru_via_function(ref, xg, hg))

    torch.testing.assert_close(got_out, want_out, atol=1e-5, rtol=0)
    for got, want in zip(got_grads, want_grads):
        scale = want.abs().max()
        torch.testing.assert_close(got, want, atol=1e-4 * scale, rtol=0)


def test_last_step_is_h_n_and_gradient_flows_to_h0():
    torch.manual_seed(1)
    ref = torch.nn.GRU(3, 4)
    x, h0 = torch.randn(6, 2, 3), torch.randn(2, 4, requires_grad=True)
    out_ref, h_n_ref = ref(x, h0[None])
    xp = torch.nn.functional.linear(x, ref.weight_ih_l0, ref.bias_ih_l0)
    out = gru_recurrence(xp, h0, ref.weight_hh_l0, ref.bias_hh_l0)
    torch.testing.assert_close(out[-1], h_n_ref[0], atol=1e-6, rtol=0)
    (g_ref,) = torch.autograd.grad(h_n_ref.sum(), h0)
    (g,) = torch.autograd.grad(out[-1].sum(), h0)
    torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=0)


def test_double_backward_raises():
    xp = torch.randn(3, 2, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    out = gru_recurrence(xp, torch.zeros(2, 2, dtype=torch.float64), w, None)
    # (out**2): the incoming gradient 2*out depends on w, so d(grad)/dw is really asked for.
    (g,) = torch.autograd.grad(out.pow(2).sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


def test_xp_is_consumed_safely():
    # A leaf keeps its values (it is copied); a temporary is overwritten, and a graph node that
    # saved the temporary notices (version counter) instead of silently using the gates.
    w, h0 = torch.randn(6, 2, requires_grad=True), torch.zeros(3, 2)
    leaf = torch.randn(4, 3, 6, requires_grad=True)
    before = leaf.detach().clone()
    gru_recurrence(leaf, h0, w, None).sum().backward()
    assert torch.equal(leaf.detach(), before) and leaf.grad is not None

    xp = leaf.exp()  # exp's backward needs its output
    out = gru_recurrence(xp, h0, w, None)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
