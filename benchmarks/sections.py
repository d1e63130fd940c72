"""The suite's sections; each returns rows (plain dicts) that run.py prints and saves.

Every time is a training step (forward, loss, backward) and every figure a ratio against a
reference measured in the same run: nn.GRU (cuDNN on a GPU) for the cells, the training step
itself for the probe and data generation.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.measure import (
    FLOPS_PER_GATE_UNIT,
    TRAIN_FLOPS_FACTOR,
    linear_fit,
    peak_memory_bytes,
    spread,
    time_round_robin,
)
from gru_sweep.cells import CustomGRU

REFERENCE = "nn.GRU"
# name -> (FLOP kind, constructor(input_size, hidden_size)); all batch_first like the project's cells.
CELLS: dict[str, tuple[str, Callable[[int, int], nn.Module]]] = {
    "CustomGRU": ("gru", lambda i, h: CustomGRU(i, h, batch_first=True)),
    REFERENCE: ("gru", lambda i, h: nn.GRU(i, h, batch_first=True)),
    "nn.LSTM": ("lstm", lambda i, h: nn.LSTM(i, h, batch_first=True)),
    "nn.RNN(tanh)": ("rnn", lambda i, h: nn.RNN(i, h, nonlinearity="tanh", batch_first=True)),
}
SPEED_SHAPES = ((64, 200, 16, 128), (32, 1000, 10, 128), (128, 100, 64, 512))  # (B, T, I, H)
COPY_SHAPE = (32, 10, 128)  # (B, I, H) of the scaling runs: the copy task's one-hot inputs
PROBE_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "probe" / "default.yaml"
MIB = 2.0**20


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    params = list(model.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        out = model(x)[0]
        out.square().mean().backward()

    return step


def _models(names, input_size: int, hidden_size: int, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: CELLS[name][1](input_size, hidden_size).to(device) for name in names}


def speed(device: torch.device, repeats: int, warmup: int) -> list[dict]:
    """Training-step time of every cell at the three issue shapes, as a ratio to nn.GRU."""
    rows = []
    for B, T, I, H in SPEED_SHAPES:
        models = _models(CELLS, I, H, device)
        x = torch.randn(B, T, I, device=device)
        times = time_round_robin({n: _train_step(m, x) for n, m in models.items()}, device, repeats, warmup)
        ref = times[REFERENCE]
        for name, ts in times.items():
            paired = [t / r for t, r in zip(ts, ref)]  # same round: same background load
            flops = TRAIN_FLOPS_FACTOR * FLOPS_PER_GATE_UNIT[CELLS[name][0]] * B * T * H * (I + H)
            rows.append({
                "shape": f"B{B} T{T} I{I} H{H}",
                "cell": name,
                "ms": 1e3 * statistics.median(ts),
                "ratio": statistics.median(ts) / statistics.median(ref),
                "ratio_min": min(paired),
                "ratio_max": max(paired),
                "spread": spread(ts),
                "gflops": flops / statistics.median(ts) / 1e9,
            })
    return rows


def scaling(device: torch.device, seq_lens: list[int], repeats: int, warmup: int) -> dict:
    """Step time and peak training memory of CustomGRU and nn.GRU over T (copy-task shape)."""
    B, I, H = COPY_SHAPE
    names = ("CustomGRU", REFERENCE)
    rows = []
    for T in seq_lens:
        models = _models(names, I, H, device)
        x = torch.randn(B, T, I, device=device)
        steps = {n: _train_step(m, x) for n, m in models.items()}
        # Long sequences take seconds per step on a CPU and their times are steadier: fewer repeats.
        times = time_round_robin(steps, device, repeats if T <= 1000 else min(repeats, 3), warmup)
        row = {"T": T}
        for name in names:
            row[f"{name} ms"] = 1e3 * statistics.median(times[name])
        for name in names:
            row[f"{name} us/step"] = 1e3 * row[f"{name} ms"] / T
        row["time ratio"] = row["CustomGRU ms"] / row[f"{REFERENCE} ms"]
        for name in names:
            models[name].zero_grad(set_to_none=True)  # measure from a state without gradients
            row[f"{name} MiB"] = peak_memory_bytes(steps[name], device) / MIB
        row["memory ratio"] = row["CustomGRU MiB"] / row[f"{REFERENCE} MiB"]
        rows.append(row)
    fits = {
        f"{name} {unit}": linear_fit([r["T"] for r in rows], [r[f"{name} {unit}"] for r in rows])
        for name in names for unit in ("ms", "MiB")
    }
    return {"rows": rows, "fits": fits}


def training_overheads(device: torch.device, repeats: int, warmup: int) -> dict:
    """Probe cost and data-generation share relative to one copy-task training step.

    The step is what the training loop does per batch (one-hot encode, CustomGRU, linear readout,
    the task's loss, backward, Adam); the probe is `hidden_grad_norms` on the probe batch, at the
    batch size and frequency of conf/probe/default.yaml.
    """
    try:
        from omegaconf import OmegaConf

        from gru_sweep.cells import CellConfig, build_cell
        from gru_sweep.probe import hidden_grad_norms
        from gru_sweep.tasks import build_task

        probe_cfg = OmegaConf.load(PROBE_CONFIG)
    except (ImportError, OSError) as err:  # e.g. a bare GPU image without omegaconf
        return {"skipped": f"{type(err).__name__}: {err}"}

    task = build_task({"name": "copy"}, seed=0)
    torch.manual_seed(0)
    cell = build_cell(CellConfig(name="custom_gru", hidden_size=COPY_SHAPE[2]), task.input_size).to(device)
    head = nn.Linear(cell.hidden_size, task.output_size).to(device)
    optimizer = torch.optim.Adam([*cell.parameters(), *head.parameters()])

    def encode(tokens: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(tokens, task.vocab_size).float()

    batches = iter(())

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:  # an epoch is over: start the next, as the trainer would
            batches = iter(task.train_dataloader())
            x, y = next(batches)
        return x.to(device), y.to(device)

    x, y = next_batch()
    px, py = (t.to(device) for t in task.probe_batch(probe_cfg.batch_size))

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        task.loss(head(cell(encode(x))), y).backward()
        optimizer.step()

    def run_probe() -> None:
        hidden_grad_norms(cell, encode(px), lambda out: task.loss(head(out), py))

    times = time_round_robin({"step": train_step, "data": next_batch, "probe": run_probe},
                             device, repeats, warmup)
    step, data, probe = (statistics.median(times[k]) for k in ("step", "data", "probe"))
    every = int(probe_cfg.every_n_steps)
    return {
        "setup": f"copy seq_len={task.seq_len} (length {task.tokens_per_sample}), batch {x.shape[0]}, "
                 f"CustomGRU H{cell.hidden_size}; probe batch {probe_cfg.batch_size}, every {every} steps",
        "step ms": 1e3 * step,
        "data ms": 1e3 * data,
        "probe ms": 1e3 * probe,
        "data share of a step": data / (data + step),
        "probe overhead, every step": probe / step,
        f"probe overhead, every {every} steps": probe / (every * step),
    }
