"""Each gate initialisation against its documented formula, range and distribution."""
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gru_sweep.cells import GATE_INITS, CellConfig, GateInitConfig, apply_gate_init, build_cell, check_gate_init
from gru_sweep.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
GATED = ["custom_gru", "cudnn_gru", "lstm"]
KEEP = {"custom_gru": "z", "cudnn_gru": "z", "lstm": "f"}
ROW = {"r": 0, "z": 1, "i": 0, "f": 1, "o": 3}  # PyTorch's packed gate order


pytestmark = pytest.mark.usefixtures("one_thread")


def init(name, scheme, hidden=64, layers=2, seed=0, nonlinearity="tanh", **kwargs):
    torch.manual_seed(seed)
    cell = build_cell(CellConfig(name=name, hidden_size=hidden, num_layers=layers, nonlinearity=nonlinearity), 3)
    before = {n: p.detach().clone() for n, p in cell.rnn.named_parameters()}
    apply_gate_init(cell, GateInitConfig(scheme=scheme, **kwargs), torch.Generator().manual_seed(seed))
    return cell, before


def gate_bias(cell, layer, gate):
    """Effective bias of one gate: the sum of PyTorch's two bias vectors."""
    rows = slice(ROW[gate] * cell.hidden_size, (ROW[gate] + 1) * cell.hidden_size)
    rnn = cell.rnn
    return (getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}"))[rows].detach()


def gate_at_rest(cell, gate):
    """First layer's gate activation [H] at step 0 on zero input and zero state: sigmoid of the
    effective bias, as the cell itself computes it (deeper layers see a non-zero input)."""
    return cell.unroll(torch.zeros(1, 1, 3)).gates[gate][0, 0, 0].detach()


def unchanged_except(cell, before, changed):
    """Every parameter row outside `changed` {(param name, gate)} is bit-identical to before."""
    H = cell.hidden_size
    for name, p in cell.rnn.named_parameters():
        for block in range(p.shape[0] // H):
            gate = [g for g, r in ROW.items() if r == block and (name, g) in changed]
            if not gate:
                assert torch.equal(p[block * H : (block + 1) * H], before[name][block * H : (block + 1) * H]), name


def ks_uniform(samples, low, high):
    """Kolmogorov-Smirnov distance between the samples and U[low, high]."""
    u, _ = torch.sort((samples.double().flatten() - low) / (high - low))
    n = u.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - u).max().item(), (u - (i - 1) / n).max().item()), n


def assert_uniform(samples, low, high):
    distance, n = ks_uniform(samples, low, high)
    assert distance < 1.95 / math.sqrt(n), (distance, n)  # 0.1% critical value


def test_ks_helper_rejects_non_uniform():
    g = torch.Generator().manual_seed(0)
    assert ks_uniform(torch.rand(500, generator=g), 0, 1)[0] < 1.95 / math.sqrt(500)
    assert ks_uniform(torch.rand(500, generator=g) ** 2, 0, 1)[0] > 1.95 / math.sqrt(500)


def test_default_changes_nothing():
    cell, before = init("lstm", "default")
    unchanged_except(cell, before, set())


@pytest.mark.parametrize("name", GATED)
@pytest.mark.parametrize("value", [1.0, -2.5])
def test_gate_bias_sets_keep_gate(name, value):
    cell, before = init(name, "gate_bias", value=value)
    keep = KEEP[name]
    for layer in range(2):
        assert torch.equal(gate_bias(cell, layer, keep), torch.full((64,), value))
        hh = getattr(cell.rnn, f"bias_hh_l{layer}")[ROW[keep] * 64 : (ROW[keep] + 1) * 64]
        assert torch.equal(hh, torch.zeros(64))  # the whole value sits in bias_ih
    torch.testing.assert_close(gate_at_rest(cell, keep), torch.full((64,), 1 / (1 + math.exp(-value))))
    changed = {(f"bias_{v}_l{k}", keep) for v in ("ih", "hh") for k in range(2)}
    unchanged_except(cell, before, changed)


@pytest.mark.parametrize("name", GATED)
def test_chrono_range_and_distribution(name):
    t_max = 1000
    cell, before = init(name, "chrono", hidden=300, t_max=t_max)
    keep = KEEP[name]
    b = torch.stack([gate_bias(cell, k, keep) for k in range(2)])
    assert b.min() >= 0 and b.max() <= math.log(t_max - 1) + 1e-6
    s = gate_at_rest(cell, keep)
    assert s.min() >= 0.5 and s.max() <= 1 - 1 / t_max + 1e-6  # sigmoid(log 999) = 999/1000
    assert_uniform(torch.exp(b), 1, t_max - 1)  # b = log u, u ~ U[1, t_max - 1]
    changed = {(f"bias_{v}_l{k}", keep) for v in ("ih", "hh") for k in range(2)}
    if name == "lstm":  # input gate bias = -forget gate bias
        for k in range(2):
            torch.testing.assert_close(gate_bias(cell, k, "i"), -b[k])
        changed |= {(f"bias_{v}_l{k}", "i") for v in ("ih", "hh") for k in range(2)}
    unchanged_except(cell, before, changed)


@pytest.mark.parametrize("name", ["cudnn_gru", "lstm"])
def test_uniform_gate_init_distribution(name):
    d = 300
    cell, before = init(name, "uniform", hidden=d)
    s = gate_at_rest(cell, KEEP[name])
    assert s.min() >= 1 / d - 1e-6 and s.max() <= 1 - 1 / d + 1e-6
    assert_uniform(s, 1 / d, 1 - 1 / d)  # sigmoid(b_keep) ~ U[1/d, 1 - 1/d]
    unchanged_except(cell, before, {(f"bias_{v}_l{k}", KEEP[name]) for v in ("ih", "hh") for k in range(2)})


@pytest.mark.parametrize("name, blocks", [("custom_gru", 3), ("cudnn_gru", 3), ("lstm", 4), ("rnn", 1)])
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_orthogonal_blocks(name, blocks, gain):
    cell, before = init(name, "orthogonal", hidden=16, gain=gain)
    for k in range(2):
        w = getattr(cell.rnn, f"weight_hh_l{k}").detach()
        assert not torch.equal(w, before[f"weight_hh_l{k}"])
        for block in w.split(16):
            torch.testing.assert_close(block @ block.T, gain**2 * torch.eye(16), atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.linalg.det(w[:16] / gain).abs(), torch.tensor(1.0), atol=1e-4, rtol=0)
    for n, p in cell.rnn.named_parameters():
        if not n.startswith("weight_hh"):
            assert torch.equal(p, before[n])


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_identity_irnn(gain):
    cell, _ = init("rnn", "identity", hidden=8, nonlinearity="relu", gain=gain)
    for k in range(2):
        assert torch.equal(getattr(cell.rnn, f"weight_hh_l{k}"), gain * torch.eye(8))
        assert not getattr(cell.rnn, f"bias_ih_l{k}").any() and not getattr(cell.rnn, f"bias_hh_l{k}").any()
    # with gain 1 and no input, relu(I h) = h: the IRNN holds a non-negative state forever
    if gain == 1.0:
        for p in (cell.rnn.weight_ih_l0, cell.rnn.weight_ih_l1):
            p.data.zero_()
        h0 = torch.rand(2, 1, 8)
        out, h_n = cell.rnn(torch.zeros(1, 20, 3), h0)
        torch.testing.assert_close(h_n, h0)


@pytest.mark.parametrize("scheme", ["chrono", "uniform", "orthogonal"])
def test_generator_makes_random_schemes_reproducible(scheme):
    a, _ = init("lstm", scheme, seed=1, t_max=50)
    b, _ = init("lstm", scheme, seed=1, t_max=50)
    c, _ = init("lstm", scheme, seed=2, t_max=50)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize(
    "scheme, cell, fits",
    [
        ("gate_bias", {"name": "rnn"}, "custom_gru, cudnn_gru, lstm"),
        ("chrono", {"name": "rnn", "nonlinearity": "relu"}, "custom_gru, cudnn_gru, lstm"),
        ("uniform", {"name": "rnn"}, "custom_gru, cudnn_gru, lstm"),
        ("identity", {"name": "lstm"}, "rnn with nonlinearity=relu"),
        ("identity", {"name": "custom_gru"}, "rnn with nonlinearity=relu"),
        ("identity", {"name": "rnn"}, "rnn with nonlinearity=relu"),
    ],
)
def test_invalid_pairs_raise_naming_scheme_cell_and_fits(scheme, cell, fits):
    cell_cfg = CellConfig(hidden_size=4, **cell)
    cfg = GateInitConfig(scheme=scheme, t_max=10)
    for call in (
        lambda: check_gate_init(cfg, cell_cfg),
        lambda: apply_gate_init(build_cell(cell_cfg, 3), cfg),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        message = str(err.value)
        assert message.startswith(f"gate_init.scheme='{scheme}'")
        assert f"does not fit cell {cell['name']}" in message
        assert f"fits cells {fits}" in message


def test_every_valid_pair_passes_check():
    for name in ("custom_gru", "cudnn_gru", "lstm", "rnn"):
        for scheme in GATE_INITS:
            nonlinearity = "relu" if scheme == "identity" else "tanh"
            if scheme in ("gate_bias", "chrono", "uniform") and name == "rnn" or scheme == "identity" and name != "rnn":
                continue
            check_gate_init(GateInitConfig(scheme=scheme, t_max=10), CellConfig(name=name, nonlinearity=nonlinearity))


@pytest.mark.parametrize(
    "kwargs, key, needle",
    [
        ({"scheme": "xavier"}, "scheme", "default, gate_bias, chrono, uniform, orthogonal, identity"),
        ({"scheme": "chrono"}, "t_max", "t_max >= 2"),
        ({"scheme": "chrono", "t_max": 1}, "t_max", "t_max >= 2"),
        ({"scheme": "orthogonal", "gain": 0.0}, "gain", "> 0"),
        ({"scheme": "gate_bias", "value": float("nan")}, "value", "finite"),
    ],
)
def test_gate_init_config_errors(kwargs, key, needle):
    with pytest.raises(ConfigError) as err:
        GateInitConfig(**kwargs)
    assert err.value.key == key and needle in str(err.value)


@pytest.mark.parametrize("file", sorted(p.stem for p in (CONF / "gate_init").glob("*.yaml")))
def test_gate_init_yaml_loads_into_schema(file):
    assert set(p.stem for p in (CONF / "gate_init").glob("*.yaml")) == set(GATE_INITS)
    root = OmegaConf.create({"data": {"seq_len": 77}, "gate_init": OmegaConf.load(CONF / "gate_init" / f"{file}.yaml")})
    OmegaConf.resolve(root)
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(GateInitConfig), root.gate_init))
    assert isinstance(cfg, GateInitConfig) and cfg.scheme == file
    if file == "chrono":
        assert cfg.t_max == 77
    if file == "gate_bias":
        assert cfg.value == 1.0


@pytest.mark.parametrize("scheme", ["chrono", "orthogonal"])
def test_seeded_init_does_not_depend_on_parameter_dtype(scheme):
    # draws happen in float64 on the generator's device, so float32 and float64 cells agree
    single = build_cell(CellConfig(name="lstm", hidden_size=8), 3)
    double = build_cell(CellConfig(name="lstm", hidden_size=8), 3).double()
    for cell in (single, double):
        apply_gate_init(cell, GateInitConfig(scheme=scheme, t_max=50), torch.Generator().manual_seed(3))
    # compare only what the scheme sets (the rest is PyTorch's unseeded default)
    if scheme == "orthogonal":
        torch.testing.assert_close(single.rnn.weight_hh_l0.double(), double.rnn.weight_hh_l0)
    else:  # LSTM chrono: input and forget gate rows
        torch.testing.assert_close(single.rnn.bias_ih_l0[:16].double(), double.rnn.bias_ih_l0[:16])
