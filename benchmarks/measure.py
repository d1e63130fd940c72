"""Timing, peak memory, FLOP counts and linear fits: the instruments the sections share."""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping

import torch

# Forward FLOPs per (batch element, step, (I + H) * H): gates x 2 (multiply-add).
FLOPS_PER_GATE_UNIT = {"gru": 6, "lstm": 8, "rnn": 2}
TRAIN_FLOPS_FACTOR = 3  # backward ~ 2x forward (input and weight gradients)


def sync(device: torch.device) -> None:
    """Wait for queued kernels, so a wall-clock interval covers the work launched inside it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds for one call of fn, measured between two synchronisation points."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def time_round_robin(fns: Mapping[str, Callable[[], object]], device: torch.device,
                     repeats: int, warmup: int) -> dict[str, list[float]]:
    """Per-call seconds of each fn, interleaved: each round calls every fn once.

    Interleaving makes load from other processes (a shared machine) hit every candidate alike,
    so per-round ratios stay meaningful even when absolute times drift.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn, device))
    return times


def spread(values: list[float]) -> float:
    """(max - min) / median: how noisy a set of repeats was."""
    return (max(values) - min(values)) / statistics.median(values)


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by torch during fn, above what was allocated when it started.

    CUDA: the caching allocator's own counters. CPU: torch keeps no such counter, and RSS or
    tracemalloc do not see torch's allocations reliably, so we replay the profiler's record of
    every allocation and free (profile_memory=True) in time order. The profiler slows fn, so
    this is a separate call, never one of the timed ones.
    """
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # The raw event list: the parsed FunctionEvents fold most allocations into their ops.
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares y = a + b x (slope, intercept, R^2), and the exponent k of y ~ x^k.

    R^2 alone flatters: a curve bending upwards still fits a line well over a wide range. The
    log-log slope k says it directly: 1 is linear, 2 quadratic (a per-step cost growing with T).
    """
    slope, intercept, r2 = _least_squares(xs, ys)
    exponent = _least_squares([math.log(x) for x in xs], [math.log(y) for y in ys])[0]
    return {"slope": slope, "intercept": intercept, "r2": r2, "exponent": exponent}


def _least_squares(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return slope, intercept, 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
