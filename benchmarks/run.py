"""Run the benchmark suite and print its tables (markdown); optionally save them as JSON.

    python -m benchmarks                      # CPU, full suite (a few minutes on 2 cores)
    python -m benchmarks --quick              # fewer repeats, T up to 1000
    python -m benchmarks --device cuda --out gpu.json   # cuDNN GRU as the reference
    python -m benchmarks --sections sweep     # a Ray Tune sweep's wall time against the ideal
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from benchmarks import sections
from benchmarks.sweep_overhead import projected_ratio, sweep_overhead

# CustomGRU / nn.GRU ratio targets (issue 7), by speed shape index; memory at T=1000.
CPU_SPEED_TARGETS = (0.8, 0.8, 1.0)
GPU_SPEED_TARGET = 1.5
MEMORY_TARGET = 1.10
LINEAR_MAX_EXPONENT = 1.25
SWEEP_TARGET = 1.15  # sweep wall time / ideal, for 8 trials of 20 s on 2 CPUs (issue 5)
SWEEP_TARGET_TRIAL_SECONDS = 20.0
FULL_SEQ_LENS = [100, 300, 1000, 3000, 10000]
QUICK_SEQ_LENS = [100, 300, 1000]
SECTION_NAMES = ("speed", "scaling", "training", "sweep")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda[:N])")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 7; 3 with --quick)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per case before timing")
    p.add_argument("--quick", action="store_true", help="3 repeats, scaling up to T=1000 only")
    p.add_argument("--seq-lens", type=int, nargs="+", default=None, help="T values of the scaling table")
    p.add_argument("--sections", nargs="+", choices=SECTION_NAMES, default=None,
                   help="default: all; with --device cuda all but sweep (its trials run on CPUs)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--sweep-trial-seconds", type=float, default=None,
                   help="training time per trial of the sweep section (default 20; 8 with --quick)")
    p.add_argument("--tf32", action="store_true",
                   help="GPU: let cuDNN and CustomGRU both use TF32 tensor cores (default: both exact float32)")
    p.add_argument("--out", default=None, help="also write all results to this JSON file")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.seq_lens is None:
        args.seq_lens = QUICK_SEQ_LENS if args.quick else FULL_SEQ_LENS
    if args.sections is None:
        args.sections = [n for n in SECTION_NAMES if n != "sweep" or not args.device.startswith("cuda")]
    if args.sweep_trial_seconds is None:
        args.sweep_trial_seconds = 8.0 if args.quick else 20.0
    for flag, value, ok, expected in (
            ("--repeats", args.repeats, args.repeats >= 1, ">= 1"),
            ("--warmup", args.warmup, args.warmup >= 0, ">= 0"),
            ("--threads", args.threads, args.threads is None or args.threads >= 1, ">= 1"),
            ("--sweep-trial-seconds", args.sweep_trial_seconds, args.sweep_trial_seconds > 0, "> 0"),
            ("--seq-lens", args.seq_lens, min(args.seq_lens) >= 1 and len(set(args.seq_lens)) >= 2,
             "two or more different T >= 1 (the scaling fits need them)")):
        if not ok:
            p.error(f"{flag}={value}: must be {expected}")
    return args


def markdown(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        env["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    if hasattr(os, "getloadavg"):
        env["loadavg_start"] = os.getloadavg()[0]
    return env


def report_speed(rows: list[dict], device: torch.device) -> list[str]:
    out = ["## Training step (forward + backward), ratio to nn.GRU"
           + (" (cuDNN)" if device.type == "cuda" else ""),
           "ratio = median time / nn.GRU's median; range = min..max of the per-round ratios; "
           "spread = (max-min)/median of the cell's own repeats.", ""]
    table = [{**r, "ratio range": f"{r['ratio_min']:.2f}..{r['ratio_max']:.2f}"} for r in rows]
    out.append(markdown(table, ["shape", "cell", "ms", "ratio", "ratio range", "spread", "gflops"]))
    custom = [r for r in rows if r["cell"] == "CustomGRU"]
    targets = CPU_SPEED_TARGETS if device.type == "cpu" else (GPU_SPEED_TARGET,) * len(custom)
    out.append("")
    for row, target in zip(custom, targets):
        verdict = "met" if row["ratio"] <= target else "NOT met"
        out.append(f"- target CustomGRU <= {target}x nn.GRU at {row['shape']}: {row['ratio']:.2f}x, {verdict}")
    return out


def report_scaling(result: dict) -> list[str]:
    rows = result["rows"]
    out = ["## Scaling in T (B32 I10 H128): step time and peak training memory", "",
           markdown(rows), "",
           "Fits: y = a + b*T (least squares) and y ~ T^k (log-log; k = 1 linear, 2 quadratic). "
           f"Verdict linear: R^2 >= 0.99 and k <= {LINEAR_MAX_EXPONENT}; the slack over 1 is for the "
           "per-step cost rising while the buffers outgrow the caches (see us/step).", ""]
    fits = [{"series": k, "b per 1000 steps": 1000 * f["slope"], "a": f["intercept"], "R^2": f["r2"],
             "k": f["exponent"],
             "linear": "yes" if f["r2"] >= 0.99 and f["exponent"] <= LINEAR_MAX_EXPONENT else "NO"}
            for k, f in result["fits"].items()]
    out.append(markdown(fits))
    at_1000 = [r for r in rows if r["T"] == 1000]
    if at_1000:
        ratio = at_1000[0]["memory ratio"]
        verdict = "met" if ratio <= MEMORY_TARGET else "NOT met"
        out += ["", f"- target CustomGRU peak memory <= {MEMORY_TARGET:.2f}x nn.GRU at T=1000: "
                    f"{ratio:.3f}x, {verdict}"]
    return out


def report_training(result: dict) -> list[str]:
    out = ["## Probe and data generation, relative to a training step"]
    if "skipped" in result:
        return out + ["", f"not measured: {result['skipped']}"]
    out += [result["setup"], "", markdown([{"quantity": k, "value": v} for k, v in result.items() if k != "setup"])]
    return out


def report_sweep(result: dict) -> list[str]:
    out = ["## Sweep overhead: wall time of a Ray Tune sweep / ideal"]
    if "skipped" in result:
        return out + ["", f"not measured: {result['skipped']}"]
    projected = projected_ratio(result, SWEEP_TARGET_TRIAL_SECONDS)
    out += [result["setup"] + "; ideal = sum of the trials' training times / concurrency", "",
            markdown([{"quantity": k, "value": v} for k, v in result.items() if k != "setup"]), "",
            f"- target whole command <= {SWEEP_TARGET}x ideal for {SWEEP_TARGET_TRIAL_SECONDS:g} s "
            f"trials: {projected:.3f}x (the overhead measured here over {SWEEP_TARGET_TRIAL_SECONDS:g} s "
            f"trials), " + ("met" if projected <= SWEEP_TARGET else "NOT met")]
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available to this torch build")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        # One precision for both sides: torch lets cuDNN's RNN use TF32 by default but not
        # matmuls (which CustomGRU's kernels follow), which would compare TF32 with float32.
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
    results: dict = {"environment": environment(device), "args": vars(args)}
    print(f"# gru_sweep benchmarks: {json.dumps(results['environment'])}", flush=True)
    # (measure, print) per section; each is printed and saved as soon as it is done, so a
    # later section that fails loses nothing measured before it
    runs = {
        "speed": (lambda: sections.speed(device, args.repeats, args.warmup),
                  lambda r: report_speed(r, device)),
        "scaling": (lambda: sections.scaling(device, args.seq_lens, args.repeats, min(args.warmup, 1)),
                    report_scaling),
        "training": (lambda: sections.training_overheads(device, args.repeats, args.warmup),
                     report_training),
        "sweep": (lambda: sweep_overhead(trial_seconds=args.sweep_trial_seconds), report_sweep),
    }
    started = time.perf_counter()
    for name in (n for n in SECTION_NAMES if n in args.sections):
        measure, report = runs[name]
        results[name] = measure()
        print("\n" + "\n".join(report(results[name])), flush=True)
        _save(results, args.out)
    results["environment"]["seconds"] = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        results["environment"]["loadavg_end"] = os.getloadavg()[0]
    print(f"\n({results['environment']['seconds']:.0f} s; load average "
          f"{results['environment'].get('loadavg_start', float('nan')):.1f} at start, "
          f"{results['environment'].get('loadavg_end', float('nan')):.1f} at end)")
    _save(results, args.out)
    return results


def _save(results: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
