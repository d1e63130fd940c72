"""The fused Triton kernels (gru_triton.py) against nn.GRU computed in float64.

On a GPU the kernels are compiled and run as in training, at every split the GPU allows; without
one they run in Triton's interpreter (conftest.py sets TRITON_INTERPRET=1), which executes the
same kernel code on CPU tensors, one program after another, so split 1 only.
"""
from types import SimpleNamespace

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed (it comes with the [test] extra)")

from gru_sweep.cells import CustomGRU, gru_function, gru_triton  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SPLITS = [1, 2, 4] if DEVICE.type == "cuda" else [1]


@pytest.fixture
def fused(monkeypatch):
    """Route CustomGRU through the kernels on this device (on a CPU: the interpreter)."""
    monkeypatch.setattr(gru_function, "use_fused_kernels", lambda xp: xp.dtype == torch.float32)


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    want = want.to(got.device, torch.float64)
    return ((got.double() - want).norm() / want.norm()).item()


def run_model(model, x, h0, weight):
    """Output, h_n and all gradients of a loss that weighs every output differently."""
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    out, h_n = model(x, h0)
    ((out * weight).sum() + h_n.sum()).backward()
    return [out, h_n, x.grad, h0.grad] + [p.grad for p in model.parameters()]


# (B, T, I, H): B=17 leaves a 1-row second tile, H=24 and 40 leave masked columns; B=1, T=1 (a
# GPU build specialises integer arguments equal to 1 as constants).
@pytest.mark.parametrize("shape", [(5, 9, 3, 24), (17, 6, 4, 40), (1, 1, 2, 32)])
@pytest.mark.parametrize("bias", [True, False])
def test_custom_gru_on_kernels_matches_float64_nn_gru(fused, shape, bias):
    B, T, I, H = shape
    torch.manual_seed(B * T + H)
    ref = torch.nn.GRU(I, H, num_layers=2, bias=bias, batch_first=True, dtype=torch.float64)
    model = CustomGRU(I, H, num_layers=2, bias=bias, batch_first=True).to(DEVICE)
    model.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x, h0, weight = torch.randn(B, T, I), torch.randn(2, B, H), torch.randn(B, T, H)

    want = run_model(ref, x.double(), h0.double(), weight.double())
    got = run_model(model, x.to(DEVICE), h0.to(DEVICE), weight.to(DEVICE))
    names = ["output", "h_n", "d input", "d h0"] + [name for name, _ in ref.named_parameters()]
    for name, g, w in zip(names, got, want):
        assert rel_error(g, w) < 2e-6, name


@pytest.mark.parametrize("split", SPLITS)
def test_every_split_computes_the_same_layer(fused, monkeypatch, split):
    """Splitting the hidden columns across programs (barrier between them) changes nothing."""
    B, T, H = 40, 12, 128
    torch.manual_seed(split)
    monkeypatch.setattr(gru_triton, "choose_split", lambda batch, hidden, device: split)
    xp, h0 = torch.randn(T, B, 3 * H), torch.randn(B, H)
    w, b = torch.randn(3 * H, H) / H**0.5, torch.randn(3 * H)
    weight = torch.randn(T, B, H)

    def grads(device, dtype, layer):
        args = [a.to(device, dtype).requires_grad_() for a in (xp, h0, w, b)]
        out = layer(args[0].clone(), *args[1:])
        (out * weight.to(device, dtype)).sum().backward()
        return [out] + [a.grad for a in args]

    want = grads("cpu", torch.float64, gru_function.GRULayerFunction.apply)  # the eager loop
    got = grads(DEVICE, torch.float32, gru_function.GRULayerFunction.apply)
    for name, g, w_ in zip(["h", "d xp", "d h0", "d w_hh", "d b_hh"], got, want):
        assert rel_error(g, w_) < 2e-6, name


@pytest.mark.parametrize("batch, hidden, sms, split", [
    (64, 128, 132, 4),    # 4 tiles; 128 / 4 = 32 columns each, the finest
    (128, 512, 132, 16),  # 8 tiles x 16 = 128 programs <= 132
    (1000, 512, 132, 2),  # 63 tiles: x2 = 126 fits, x4 would not
    (32, 100, 132, 2),    # 100 / 4 = 25 < 32 columns
    (64, 128, 8, 2),      # a small GPU: 4 tiles x 2 = 8
    (4096, 128, 132, 1),  # more tiles than multiprocessors: independent programs, no barrier
])
def test_choose_split_keeps_every_program_resident(monkeypatch, batch, hidden, sms, split):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(multi_processor_count=sms))
    assert gru_triton.choose_split(batch, hidden, torch.device("cuda")) == split
    assert gru_triton.choose_split(batch, hidden, torch.device("cpu")) == 1  # the interpreter


def test_split_off_a_gpu_is_refused_not_left_to_hang():
    xp, h0, w = torch.randn(2, 16, 96), torch.zeros(16, 32), torch.randn(96, 32)
    with pytest.raises(ValueError, match="split=2 needs a GPU"):
        gru_triton.fused_forward(xp, h0, w, None, split=2)


def test_a_saved_xp_overwritten_by_the_kernel_fails_loudly(fused):
    """As with the eager loop's in-place ops: a node that saved xp must not use the gates."""
    x = torch.randn(3, 2, 12, device=DEVICE, requires_grad=True)
    y = x.exp()  # exp's backward uses its saved output, y
    out = gru_function.gru_recurrence(y, torch.zeros(2, 4, device=DEVICE), torch.randn(12, 4, device=DEVICE), None)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_a_strided_xp_is_copied_and_left_as_it_was(fused):
    torch.manual_seed(1)
    xp = torch.randn(5, 3, 12, device=DEVICE).transpose(0, 1)  # [T=3, B=5, 3H] with B-major strides
    before = xp.clone()
    h0, w = torch.randn(5, 4, device=DEVICE), torch.randn(12, 4, device=DEVICE)
    out = gru_function.GRULayerFunction.apply(xp, h0, w, None)
    assert torch.equal(xp, before)
    want = gru_function.GRULayerFunction.apply(before.cpu().double().contiguous(), h0.cpu().double(),
                                               w.cpu().double(), None)  # the eager loop
    assert rel_error(out, want) < 2e-6


def test_kernels_are_used_only_for_float32_on_a_gpu(monkeypatch):
    x = torch.zeros(2, 2, 6)
    assert not gru_function.use_fused_kernels(x)  # a CPU tensor: the eager loop
    if DEVICE.type == "cuda":
        assert gru_function.use_fused_kernels(x.cuda())
        assert not gru_function.use_fused_kernels(x.cuda().double())
        monkeypatch.setenv("GRU_SWEEP_FUSED_GRU", "0")
        assert not gru_function.use_fused_kernels(x.cuda())
