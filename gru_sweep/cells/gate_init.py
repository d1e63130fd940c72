"""Named gate initialisations: what each scheme sets, the formula, and where it comes from.

The *keep* gate is the one whose value 1 copies the state forward: GRU z, LSTM f.
PyTorch adds two bias vectors (``bias_ih + bias_hh``); a scheme that fixes a gate's bias puts
the whole value in ``bias_ih`` and zeroes that gate's slice of ``bias_hh``, so the effective
bias (their sum) is exactly what the scheme says. Slices and weights a scheme does not
mention keep PyTorch's default init (U(-1/sqrt(H), 1/sqrt(H))). Every layer is initialised.

    default     PyTorch's own
    gate_bias   b_keep = value                         Jozefowicz et al. 2015 (value 1)
    chrono      b_keep = log u, u ~ U[1, t_max - 1]   Tallec & Ollivier 2018 (LSTM: b_i = -b_f)
    uniform     b_keep = logit u, u ~ U[1/d, 1 - 1/d] Gu et al. 2020 (UGI)
    orthogonal  each H x H block of W_hh = gain * Q    Saxe et al. 2014
    identity    W_hh = gain * I, biases 0 (relu RNN)  Le et al. 2015 (IRNN)

Each scheme's function below gives the details and the full reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gru_sweep.cell_schema import GateInitConfig, check_scheme_fits
from gru_sweep.cells.cell import RecurrentCell
from gru_sweep.errors import ConfigError

# Block index in PyTorch's packed weights (GRU r,z,n; LSTM i,f,g,o).
_KEEP_GATE = 1  # GRU z and LSTM f are both the second block
_LSTM_INPUT_GATE = 0


@dataclass
class _Layer:
    """One layer's recurrent parameters, viewed per gate block."""

    kind: str
    hidden: int
    w_hh: Tensor
    b_ih: Tensor | None
    b_hh: Tensor | None

    def set_bias(self, gate: int, value: Tensor | float) -> None:
        rows = slice(gate * self.hidden, (gate + 1) * self.hidden)
        self.b_ih[rows] = value
        self.b_hh[rows] = 0.0


def _uniform(n: int, low: float, high: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    # Random schemes draw in float64 on the generator's device, so a seed gives the same
    # init whatever the parameters' device and dtype.
    device = generator.device if generator is not None else like.device
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return (low + (high - low) * u).to(like)


def _default(layer: _Layer, cfg: GateInitConfig, generator) -> None:
    """PyTorch's own init, left as it is: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))."""


def _gate_bias(layer: _Layer, cfg: GateInitConfig, generator) -> None:
    """Keep-gate bias b_keep = ``value`` (GRU z, LSTM f). Jozefowicz, Zaremba & Sutskever 2015,
    "An Empirical Exploration of Recurrent Network Architectures", use b_f = +1."""
    layer.set_bias(_KEEP_GATE, float(cfg.value))


def _chrono(layer: _Layer, cfg: GateInitConfig, generator) -> None:
    """Chrono init, Tallec & Ollivier 2018, "Can recurrent neural networks warp time?":
    b_keep = log(u), u ~ U[1, t_max - 1], so b_keep in [0, log(t_max - 1)], sigmoid(b_keep) =
    u / (1 + u) in [1/2, 1 - 1/t_max] and the forgetting time 1 / (1 - sigmoid) = 1 + u in
    [2, t_max]. LSTM: input-gate bias b_i = -b_f. GRU: nothing more, its input weight is 1 - z."""
    b_keep = torch.log(_uniform(layer.hidden, 1.0, cfg.t_max - 1.0, layer.b_ih, generator))
    layer.set_bias(_KEEP_GATE, b_keep)
    if layer.kind == "lstm":
        layer.set_bias(_LSTM_INPUT_GATE, -b_keep)


def _uniform_gate(layer: _Layer, cfg: GateInitConfig, generator) -> None:
    """Uniform gate init (UGI), Gu, Gulcehre, Paine, Hoffman & Pascanu 2020, "Improving the
    Gating Mechanism of Recurrent Neural Networks": b_keep = logit(u), u ~ U[1/d, 1 - 1/d],
    d = hidden size, so sigmoid(b_keep) is uniform on [1/d, 1 - 1/d]."""
    u = _uniform(layer.hidden, 1.0 / layer.hidden, 1.0 - 1.0 / layer.hidden, layer.b_ih, generator)
    layer.set_bias(_KEEP_GATE, torch.logit(u))


def _orthogonal(layer: _Layer, cfg: GateInitConfig, generator) -> None:
    """Each H x H gate block of W_hh = gain * Q, Q orthogonal (Q Q^T = I). Saxe, McClelland &
    Ganguli 2014, "Exact solutions to the nonlinear dynamics of learning in deep linear neural
    networks"; Henaff, Szlam & LeCun 2016 for RNNs. Input weights and biases keep the default."""
    device = generator.device if generator is not None else layer.w_hh.device
    for block in layer.w_hh.split(layer.hidden, 0):
        q = torch.empty(layer.hidden, layer.hidden, dtype=torch.float64, device=device)
        block.copy_(nn.init.orthogonal_(q, gain=cfg.gain, generator=generator))


def _identity(layer: _Layer, cfg: GateInitConfig, generator) -> None:
    """IRNN, Le, Jaitly & Hinton 2015, "A Simple Way to Initialize Recurrent Networks of
    Rectified Linear Units": W_hh = gain * I, both biases 0, relu RNN. Input weights keep
    the default."""
    layer.w_hh.copy_(cfg.gain * torch.eye(layer.hidden, dtype=layer.w_hh.dtype, device=layer.w_hh.device))
    layer.b_ih.zero_()
    layer.b_hh.zero_()


_SCHEMES = {
    "default": _default,
    "gate_bias": _gate_bias,
    "chrono": _chrono,
    "uniform": _uniform_gate,
    "orthogonal": _orthogonal,
    "identity": _identity,
}


@torch.no_grad()
def apply_gate_init(cell: RecurrentCell, cfg: GateInitConfig, generator: torch.Generator | None = None) -> None:
    """Initialise ``cell`` in place with ``cfg.scheme``, every layer; see the module docstring.

    ``generator`` makes the random schemes (chrono, uniform, orthogonal) reproducible; without
    it they draw from torch's global RNG.
    """
    check_scheme_fits(cfg.scheme, cell.name, cell.nonlinearity, cell.hidden_size)
    rnn = cell.rnn
    if cfg.scheme in ("gate_bias", "chrono", "uniform", "identity") and not rnn.bias:
        raise ConfigError(
            "gate_init.scheme", cfg.scheme, f"sets biases, but cell {cell.name} was built with bias=False"
        )
    for k in range(cell.num_layers):
        layer = _Layer(
            cell.kind,
            cell.hidden_size,
            getattr(rnn, f"weight_hh_l{k}"),
            getattr(rnn, f"bias_ih_l{k}", None),
            getattr(rnn, f"bias_hh_l{k}", None),
        )
        _SCHEMES[cfg.scheme](layer, cfg, generator)
