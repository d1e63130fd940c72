"""Recurrent cells (custom GRU, cuDNN GRU, LSTM, vanilla RNN), their unrolled form and gate inits."""
from gru_sweep.cell_schema import CELL_NAMES, GATE_INITS, CellConfig, GateInitConfig, check_gate_init
from gru_sweep.cells.cell import RecurrentCell, build_cell
from gru_sweep.cells.custom_gru import CustomGRU
from gru_sweep.cells.gate_init import apply_gate_init
from gru_sweep.cells.unrolled import Unrolled, unroll

__all__ = [
    "CELL_NAMES",
    "GATE_INITS",
    "CellConfig",
    "CustomGRU",
    "GateInitConfig",
    "RecurrentCell",
    "Unrolled",
    "apply_gate_init",
    "build_cell",
    "check_gate_init",
    "unroll",
]
