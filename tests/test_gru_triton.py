"""The fused Triton kernels (gru_triton.py) against nn.GRU computed in float64.

On a GPU the kernels are compiled and run as in training, at every split the GPU allows; without
one they run in Triton's interpreter (conftest.py sets TRITON_INTERPRET=1), which executes the
same kernel code on CPU tensors, one program after another, so split 1 only.
"""
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


# (B, T, I, H): B=17 leaves a 1-row second tile, H=24 and 40 leave masked columns, T=1 one step.
@pytest.mark.parametrize("shape", [(5, 9, 3, 24), (17, 6, 4, 40), (3, 1, 2, 32)])
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


def test_choose_split_keeps_every_program_resident():
    assert gru_triton.choose_split(64, 128, torch.device("cpu")) == 1  # the interpreter: one at a time
    if DEVICE.type == "cuda":
        sms = torch.cuda.get_device_properties(DEVICE).multi_processor_count
        for batch, hidden in [(64, 128), (128, 512), (32, 128), (1000, 512)]:
            split = gru_triton.choose_split(batch, hidden, DEVICE)
            assert hidden % split == 0 and hidden // split >= gru_triton.MIN_COLS
            assert split == 1 or triton.cdiv(batch, gru_triton.BLOCK_B) * split <= sms


def test_kernels_are_used_only_for_float32_on_a_gpu(monkeypatch):
    x = torch.zeros(2, 2, 6)
    assert not gru_function.use_fused_kernels(x)  # a CPU tensor: the eager loop
    if DEVICE.type == "cuda":
        assert gru_function.use_fused_kernels(x.cuda())
        assert not gru_function.use_fused_kernels(x.cuda().double())
        monkeypatch.setenv("GRU_SWEEP_FUSED_GRU", "0")
        assert not gru_function.use_fused_kernels(x.cuda())
