"""CustomGRU against torch.nn.GRU (the reference), and the cell factory / cell configs."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.func import functional_call

from gru_sweep.cells import CELL_NAMES, CellConfig, CustomGRU, RecurrentCell, build_cell
from gru_sweep.cells.gru_function import gru_recurrence
from gru_sweep.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


pytestmark = pytest.mark.usefixtures("one_thread")


def pair(num_layers, batch_first=False, dtype=torch.float32, seed=0, input_size=5, hidden=8, bias=True):
    """A reference nn.GRU and a CustomGRU carrying the same parameters."""
    torch.manual_seed(seed)
    ref = nn.GRU(input_size, hidden, num_layers, bias=bias, batch_first=batch_first).to(dtype)
    custom = CustomGRU(input_size, hidden, num_layers, bias=bias, batch_first=batch_first).to(dtype)
    custom.load_state_dict(ref.state_dict())
    return ref, custom


def run_and_grad(module, x, hx, weights):
    """Output, h_n and gradients of a loss that reads every output and h_n."""
    x = x.clone().requires_grad_()
    hx = None if hx is None else hx.clone().requires_grad_()
    out, h_n = module(x, hx)
    loss = (out * weights[0]).sum() + (h_n * weights[1]).sum()
    params = dict(module.named_parameters())
    inputs = [x] + ([] if hx is None else [hx]) + list(params.values())
    grads = torch.autograd.grad(loss, inputs)
    names = ["input"] + ([] if hx is None else ["hx"]) + list(params)
    return out, h_n, dict(zip(names, grads))


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("seq_len", [1, 50])
@pytest.mark.parametrize("with_hx", [False, True])
def test_custom_gru_matches_nn_gru(num_layers, batch_first, seq_len, with_hx):
    ref, custom = pair(num_layers, batch_first, seed=num_layers * 10 + seq_len)
    batch = 3
    x = torch.randn((batch, seq_len, 5) if batch_first else (seq_len, batch, 5))
    hx = torch.randn(num_layers, batch, 8) if with_hx else None
    out_shape = (batch, seq_len, 8) if batch_first else (seq_len, batch, 8)
    weights = (torch.randn(out_shape), torch.randn(num_layers, batch, 8))

    out_r, h_r, g_r = run_and_grad(ref, x, hx, weights)
    out_c, h_c, g_c = run_and_grad(custom, x, hx, weights)

    assert out_c.shape == out_r.shape == out_shape
    torch.testing.assert_close(out_c, out_r, atol=1e-5, rtol=0)
    torch.testing.assert_close(h_c, h_r, atol=1e-5, rtol=0)
    assert g_c.keys() == g_r.keys()
    for name, g in g_r.items():
        scale = g.abs().max().item()
        assert (g_c[name] - g).abs().max().item() <= 1e-4 * scale, name


def test_float64_matches_nn_gru_to_1e_10():
    ref, custom = pair(2, batch_first=True, dtype=torch.float64, seed=3)
    x, hx = torch.randn(4, 20, 5, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64)
    weights = (torch.randn(4, 20, 8, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64))
    out_r, h_r, g_r = run_and_grad(ref, x, hx, weights)
    out_c, h_c, g_c = run_and_grad(custom, x, hx, weights)
    torch.testing.assert_close(out_c, out_r, atol=1e-10, rtol=0)
    torch.testing.assert_close(h_c, h_r, atol=1e-10, rtol=0)
    for name, g in g_r.items():
        assert (g_c[name] - g).abs().max().item() <= 1e-10 * g.abs().max().item(), name


def test_gradcheck_float64_tiny():
    torch.manual_seed(0)
    custom = CustomGRU(2, 3, num_layers=2).double()
    names = [n for n, _ in custom.named_parameters()]

    def f(x, hx, *params):
        return functional_call(custom, dict(zip(names, params)), (x, hx))

    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in custom.parameters()]
    assert torch.autograd.gradcheck(f, (x, hx, *params))


def test_no_bias_matches_nn_gru():
    ref, custom = pair(2, bias=False, seed=4)
    assert set(custom.state_dict()) == {"weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"}
    x = torch.randn(7, 3, 5)
    torch.testing.assert_close(custom(x)[0], ref(x)[0], atol=1e-5, rtol=0)


def test_unbatched_input_matches_nn_gru():
    ref, custom = pair(2, seed=5)
    x, hx = torch.randn(9, 5), torch.randn(2, 8)
    for h in (None, hx):
        out_r, h_r = ref(x, h)
        out_c, h_c = custom(x, h)
        assert out_c.shape == (9, 8) and h_c.shape == (2, 8)
        torch.testing.assert_close(out_c, out_r, atol=1e-5, rtol=0)
        torch.testing.assert_close(h_c, h_r, atol=1e-5, rtol=0)


def test_dropout_between_layers_like_nn_gru():
    # nn.GRU on CPU draws its inter-layer dropout masks from the global RNG in the same
    # order, so the same seed must give the same training-mode output.
    ref, custom = pair(3, batch_first=True, seed=6)
    ref.dropout = custom.dropout = 0.5
    x = torch.randn(4, 10, 5)
    torch.manual_seed(123)
    out_r = ref(x)[0]
    torch.manual_seed(123)
    out_c = custom(x)[0]
    torch.testing.assert_close(out_c, out_r, atol=1e-5, rtol=0)
    custom.eval()
    ref_no_dropout = pair(3, batch_first=True, seed=6)[0]
    torch.testing.assert_close(custom(x)[0], ref_no_dropout(x)[0], atol=1e-5, rtol=0)
    assert not torch.allclose(out_c, custom(x)[0], atol=1e-3)


def test_state_dict_round_trip_both_ways():
    torch.manual_seed(7)
    x = torch.randn(6, 4, 5)
    ref = nn.GRU(5, 8, 2)
    custom = CustomGRU(5, 8, 2)
    assert list(custom.state_dict()) == list(ref.state_dict())
    assert all(custom.state_dict()[k].shape == v.shape for k, v in ref.state_dict().items())
    custom.load_state_dict(ref.state_dict())  # nn.GRU -> CustomGRU
    torch.testing.assert_close(custom(x)[0], ref(x)[0], atol=1e-5, rtol=0)
    fresh = CustomGRU(5, 8, 2)
    back = nn.GRU(5, 8, 2)
    back.load_state_dict(fresh.state_dict())  # CustomGRU -> nn.GRU
    torch.testing.assert_close(back(x)[0], fresh(x)[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(back(x)[1], fresh(x)[1], atol=1e-5, rtol=0)


def test_default_init_range_like_nn_gru():
    torch.manual_seed(8)
    custom = CustomGRU(5, 16, 2)
    for p in custom.parameters():
        assert p.abs().max() <= 0.25 and p.std() > 0.1  # U(-1/4, 1/4): std 0.144


def test_gru_recurrence_one_step_by_hand():
    # h1 from the GRU equations (PyTorch's gate order r, z, n) with scalar numbers, H = 1
    xp = torch.tensor([[[0.5, -1.0, 0.3]]])  # xr, xz, xn
    h0 = torch.tensor([[0.2]])
    w_hh, b_hh = torch.tensor([[1.0], [2.0], [-1.0]]), torch.tensor([0.1, 0.0, 0.4])
    out = gru_recurrence(xp, h0, w_hh, b_hh)
    r = torch.sigmoid(torch.tensor(0.5 + 0.2 + 0.1))
    z = torch.sigmoid(torch.tensor(-1.0 + 0.4))
    n = torch.tanh(0.3 + r * (-0.2 + 0.4))
    expected = (1 - z) * n + z * 0.2
    torch.testing.assert_close(out, expected.reshape(1, 1, 1))


def test_bad_inputs_raise_config_error():
    custom = CustomGRU(5, 8, 2)
    with pytest.raises(ConfigError, match="input_size=5"):
        custom(torch.randn(4, 3, 6))
    with pytest.raises(ConfigError, match="3-D"):
        custom(torch.randn(4, 3, 2, 5))
    with pytest.raises(ConfigError, match=r"hx.*\(2, 3, 8\)"):
        custom(torch.randn(4, 3, 5), torch.randn(1, 3, 8))
    with pytest.raises(ConfigError, match="hidden_size"):
        CustomGRU(5, 0)
    with pytest.raises(ConfigError, match="dropout"):
        CustomGRU(5, 8, 2, dropout=1.5)


@pytest.mark.parametrize(
    "name, ref_type, kind",
    [("custom_gru", CustomGRU, "gru"), ("cudnn_gru", nn.GRU, "gru"), ("lstm", nn.LSTM, "lstm"), ("rnn", nn.RNN, "rnn")],
)
def test_build_cell_same_interface(name, ref_type, kind):
    torch.manual_seed(9)
    cell = build_cell(CellConfig(name=name, hidden_size=6, num_layers=2), input_size=3)
    assert isinstance(cell, RecurrentCell) and type(cell.rnn) is ref_type
    assert (cell.name, cell.kind, cell.hidden_size, cell.num_layers) == (name, kind, 6, 2)
    assert cell.rnn.batch_first
    x = torch.randn(4, 7, 3)
    out = cell(x)
    assert out.shape == (4, 7, 6)
    torch.testing.assert_close(out, cell.rnn(x)[0])


def test_build_cell_irnn_and_dropout():
    cell = build_cell(CellConfig(name="rnn", nonlinearity="relu", num_layers=2, dropout=0.25), input_size=3)
    assert cell.rnn.nonlinearity == "relu" and cell.rnn.dropout == 0.25
    assert cell.nonlinearity == "relu"


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"name": "gru"}, "name"),
        ({"name": "lstm", "hidden_size": 0}, "hidden_size"),
        ({"name": "lstm", "num_layers": 1.5}, "num_layers"),
        ({"name": "lstm", "dropout": -0.1}, "dropout"),
        ({"name": "rnn", "nonlinearity": "sigmoid"}, "nonlinearity"),
        ({"name": "lstm", "nonlinearity": "relu"}, "nonlinearity"),
    ],
)
def test_cell_config_errors_name_key_value_choices(kwargs, key):
    with pytest.raises(ConfigError) as err:
        CellConfig(**kwargs)
    assert err.value.key == key and err.value.value == kwargs[key]
    message = str(err.value)
    assert message.startswith(f"{key}=")
    if key == "name":
        assert all(n in message for n in CELL_NAMES)
    if key == "nonlinearity" and kwargs["name"] == "rnn":
        assert "tanh" in message and "relu" in message


def test_build_cell_rejects_bad_input_size():
    with pytest.raises(ConfigError, match="input_size"):
        build_cell(CellConfig(name="lstm"), 0)


@pytest.mark.parametrize("file", sorted(p.stem for p in (CONF / "cell").glob("*.yaml")))
def test_cell_yaml_loads_into_schema(file):
    group = OmegaConf.load(CONF / "cell" / f"{file}.yaml")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(CellConfig), group))
    assert isinstance(cfg, CellConfig)
    expected_name = "rnn" if file == "irnn" else file
    assert cfg.name == expected_name
    assert cfg.nonlinearity == ("relu" if file == "irnn" else "tanh")
    assert set(p.stem for p in (CONF / "cell").glob("*.yaml")) >= set(CELL_NAMES)


@pytest.mark.parametrize("name", ["custom_gru", "cudnn_gru", "lstm", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_param_budget_picks_the_largest_hidden_size_that_fits(name, num_layers):
    from gru_sweep.cell_schema import hidden_size_for

    budget = 20_000
    cfg = CellConfig(name=name, num_layers=num_layers, param_budget=budget)
    cell = build_cell(cfg, input_size=10)
    counted = sum(p.numel() for p in cell.parameters())  # independent of the closed-form count
    assert counted <= budget
    bigger = CellConfig(name=name, num_layers=num_layers, hidden_size=cell.hidden_size + 1)
    assert sum(p.numel() for p in build_cell(bigger, input_size=10).parameters()) > budget
    assert hidden_size_for(cfg, 10) == cell.hidden_size


def test_param_budget_too_small_names_the_key():
    with pytest.raises(ConfigError, match="cell.param_budget"):
        build_cell(CellConfig(name="lstm", param_budget=10), input_size=10)
