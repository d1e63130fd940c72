"""Run a sweep as a SLURM job: submit it, and the helpers that slurm/sweep.sbatch calls.

    python -m gru_sweep.slurm submit +experiment=long_copy [overrides...] \\
        --nodes 2 --gpus-per-node 4 --cpus-per-node 8 --partition gpu --time 04:00:00 --requeue

fills in the options of slurm/sweep.sbatch and calls sbatch (``--dry-run`` prints the command
instead). The job starts a Ray cluster across its nodes and runs ``python -m gru_sweep`` on it;
results land in ``<submit dir>/sweeps/<experiment>-<job id>`` unless ``sweep.dir=`` is given.

Subcommands the sbatch script uses on the nodes (Ray itself has no SLURM awareness):
``node-ip`` prints the IPv4 address Ray should bind on this node, ``wait-nodes`` waits until
every node of the allocation has joined the Ray cluster.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The sweep CLI's keys the job fills in (see slurm/sweep.sbatch, which uses the same names).
SWEEP_DIR_KEY = "sweep.dir"
SCRIPT = Path(__file__).resolve().parent.parent / "slurm" / "sweep.sbatch"
RESULTS_ROOT = "sweeps"


# --------------------------------------------------------------------------- node addresses


def pick_ipv4(candidates: Iterable[str], allow_loopback: bool = False) -> str | None:
    """The first usable IPv4 address among `candidates`, in order; None if there is none.

    `hostname --ip-address` may list IPv6 addresses (with %scope suffixes), several addresses,
    or only a loopback one (Debian maps the hostname to 127.0.1.1): Ray nodes on other hosts
    cannot reach a loopback address, so it is taken only when `allow_loopback` (one-node jobs).
    Link-local and unspecified addresses are never taken.
    """
    loopback = None
    for text in candidates:
        try:
            ip = ipaddress.ip_address(text.strip().split("%")[0])
        except ValueError:
            continue
        if ip.version != 4 or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            continue
        if ip.is_loopback:
            loopback = loopback or str(ip)
            continue
        return str(ip)
    return loopback if allow_loopback else None


def _words(cmd: Sequence[str]) -> list[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split()


def interface_ipv4(iface: str) -> list[str]:
    """IPv4 addresses of one network interface, from `ip -4 -o addr show dev IFACE`."""
    words = _words(["ip", "-4", "-o", "addr", "show", "dev", iface])
    return [words[i + 1].split("/")[0] for i, w in enumerate(words[:-1]) if w == "inet"]


def node_ip(multi_node: bool) -> str:
    """The IPv4 address this node's Ray processes bind to.

    GRU_SWEEP_NODE_IP wins (tests pin 127.0.0.1); then GRU_SWEEP_NODE_IFACE (e.g. ib0, when the
    fast network is not the one the hostname resolves to). A one-node job stays on loopback:
    nothing needs to reach it from outside. Otherwise the hostname's addresses, in resolver
    order (`hostname --ip-address`, then getaddrinfo), then every address (`hostname -I`).
    """
    if os.environ.get("GRU_SWEEP_NODE_IP"):
        return os.environ["GRU_SWEEP_NODE_IP"]
    iface = os.environ.get("GRU_SWEEP_NODE_IFACE")
    if iface:
        found = pick_ipv4(interface_ipv4(iface), allow_loopback=not multi_node)
        if not found:
            raise SystemExit(f"gru_sweep.slurm: GRU_SWEEP_NODE_IFACE={iface} has no usable IPv4 address "
                             f"(saw {interface_ipv4(iface)}; loopback only serves one-node jobs)")
        return found
    if not multi_node:
        return "127.0.0.1"
    candidates = _words(["hostname", "--ip-address"])
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        candidates += [info[4][0] for info in infos]
    except OSError:
        pass
    candidates += _words(["hostname", "-I"])
    found = pick_ipv4(candidates)
    if not found:
        raise SystemExit(
            f"gru_sweep.slurm: no non-loopback IPv4 address on {socket.gethostname()} "
            f"(saw {candidates}); other nodes could not reach Ray here. "
            "Set GRU_SWEEP_NODE_IFACE=<interface> (or GRU_SWEEP_NODE_IP for one node)."
        )
    return found


# --------------------------------------------------------------------------- cluster check


def wait_for_nodes(address: str, nodes: int, timeout: float, watch_pids: Sequence[int] = ()) -> int:
    """Block until `nodes` Ray nodes are alive in the cluster at `address`; return the count.

    Fails early with a clear message when one of `watch_pids` (the srun steps that run
    `ray start`) has exited, since then the missing node will never join.
    """
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout

    def check_steps() -> None:
        for pid in watch_pids:
            if not Path(f"/proc/{pid}").exists():
                raise SystemExit(
                    f"gru_sweep.slurm: the srun step {pid} that runs `ray start` exited before "
                    f"all {nodes} node(s) joined; see its output above (port in use? set "
                    "GRU_SWEEP_RAY_PORT_BASE)"
                )

    # The GCS port first: ray.init on a port nobody listens on waits a long time.
    while True:
        check_steps()
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"gru_sweep.slurm: no Ray head listening at {address} after {timeout:.0f} s"
                ) from None
            time.sleep(1)

    import ray  # heavy: only here

    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    try:
        alive = 0
        while True:
            alive = sum(1 for n in ray.nodes() if n.get("Alive"))
            if alive >= nodes:
                return alive
            check_steps()
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"gru_sweep.slurm: only {alive} of {nodes} Ray node(s) joined {address} "
                    f"within {timeout:.0f} s (GRU_SWEEP_JOIN_TIMEOUT)"
                )
            time.sleep(1)
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- submission


def _override_value(overrides: Sequence[str], key: str) -> str | None:
    """Value of `key=...` (also `+key=`, `++key=`) among Hydra overrides; the last one wins."""
    value = None
    for item in overrides:
        name, sep, val = item.partition("=")
        if sep and name.lstrip("+") == key:
            value = val
    return value


def experiment_name(overrides: Sequence[str]) -> str:
    return _override_value(overrides, "experiment") or "sweep"


def default_sweep_dir(submit_dir: Path, overrides: Sequence[str], job_id: str) -> Path:
    """Where slurm/sweep.sbatch puts a sweep when no sweep.dir= is given (same rule there)."""
    return Path(submit_dir) / RESULTS_ROOT / f"{experiment_name(overrides)}-{job_id}"


@dataclass
class SubmitOptions:
    overrides: list[str] = field(default_factory=list)
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_node: int | None = None
    partition: str | None = None
    time: str | None = None
    requeue: bool = False
    job_name: str | None = None
    account: str | None = None
    sbatch_args: list[str] = field(default_factory=list)
    script: Path = SCRIPT
    python: str = sys.executable


def sbatch_command(opts: SubmitOptions, submit_dir: Path) -> list[str]:
    """The sbatch command line for `opts`, submitted from `submit_dir`.

    One task per node holding all its CPUs and GPUs (Ray divides them among trials); the job
    runs with the Python that submitted it (GRU_SWEEP_PYTHON), its log goes next to the
    results, and a relative sweep.dir= is made absolute so a requeued job finds it again.
    """
    if opts.nodes < 1:
        raise SystemExit(f"gru_sweep.slurm: --nodes={opts.nodes}: must be >= 1")
    if opts.gpus_per_node < 0:
        raise SystemExit(f"gru_sweep.slurm: --gpus-per-node={opts.gpus_per_node}: must be >= 0")
    if opts.cpus_per_node is not None and opts.cpus_per_node < 1:
        raise SystemExit(f"gru_sweep.slurm: --cpus-per-node={opts.cpus_per_node}: must be >= 1")
    for item in opts.python, str(opts.script):
        if "," in item:  # --export splits on commas
            raise SystemExit(f"gru_sweep.slurm: {item!r}: paths with commas are not supported")
    submit_dir = Path(submit_dir)
    overrides = []
    for item in opts.overrides:
        name, sep, val = item.partition("=")
        if sep and name.lstrip("+") == SWEEP_DIR_KEY and not os.path.isabs(val):
            item = f"{name}={submit_dir / val}"
        overrides.append(item)
    name = opts.job_name or f"gru_sweep-{experiment_name(overrides)}"
    export = f"ALL,GRU_SWEEP_PYTHON={opts.python},GRU_SWEEP_GPUS_PER_NODE={opts.gpus_per_node}"
    cmd = [
        "sbatch",
        "--parsable",
        f"--job-name={name}",
        f"--nodes={opts.nodes}",
        "--ntasks-per-node=1",
        f"--output={submit_dir / RESULTS_ROOT / 'slurm-%j.out'}",
        f"--export={export}",
    ]
    if opts.cpus_per_node is not None:
        cmd.append(f"--cpus-per-task={opts.cpus_per_node}")
    if opts.gpus_per_node:
        cmd.append(f"--gres=gpu:{opts.gpus_per_node}")
    if opts.partition:
        cmd.append(f"--partition={opts.partition}")
    if opts.time:
        cmd.append(f"--time={opts.time}")
    if opts.account:
        cmd.append(f"--account={opts.account}")
    if opts.requeue:
        cmd.append("--requeue")
    cmd += opts.sbatch_args
    cmd.append(str(opts.script))
    cmd += overrides
    return cmd


def submit(opts: SubmitOptions, dry_run: bool = False, submit_dir: Path | None = None) -> str | None:
    """Submit (or with `dry_run` print) the job; returns the job id (None on a dry run)."""
    submit_dir = Path(submit_dir or os.getcwd()).resolve()
    cmd = sbatch_command(opts, submit_dir)
    given_dir = _override_value(cmd[cmd.index(str(opts.script)) + 1 :], SWEEP_DIR_KEY)
    if opts.cpus_per_node is None:
        print("note: no --cpus-per-node; Ray gets what SLURM gives one task (often 1 CPU)", file=sys.stderr)
    if dry_run:
        print(shlex.join(cmd))
        where = given_dir or default_sweep_dir(submit_dir, opts.overrides, "<job id>")
        print(f"results: {where}")
        return None
    if not opts.script.is_file():
        raise SystemExit(f"gru_sweep.slurm: sbatch script {opts.script} not found (pass --script)")
    if shutil.which("sbatch") is None:
        raise SystemExit(
            "gru_sweep.slurm: `sbatch` not found on PATH: submit from a SLURM login node "
            "(--dry-run prints the command without submitting)"
        )
    (submit_dir / RESULTS_ROOT).mkdir(parents=True, exist_ok=True)
    out = subprocess.run(cmd, cwd=submit_dir, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"gru_sweep.slurm: sbatch failed (exit {out.returncode}): {out.stderr.strip()}")
    job_id = out.stdout.strip().split(";")[0]
    where = given_dir or default_sweep_dir(submit_dir, opts.overrides, job_id)
    print(f"submitted job {job_id}")
    print(f"results: {where}")
    print(f"log:     {submit_dir / RESULTS_ROOT / f'slurm-{job_id}.out'}")
    return job_id


# --------------------------------------------------------------------------- command line


def _parsers() -> dict[str, argparse.ArgumentParser]:
    prog = "python -m gru_sweep.slurm"
    s = argparse.ArgumentParser(prog=f"{prog} submit", description="Submit a sweep as a SLURM job.")
    s.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +experiment=long_copy seed=1")
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--gpus-per-node", type=int, default=0)
    s.add_argument("--cpus-per-node", type=int, default=None)
    s.add_argument("--partition")
    s.add_argument("--time", help="wall-clock limit, e.g. 04:00:00")
    s.add_argument("--account")
    s.add_argument("--job-name")
    s.add_argument("--requeue", action="store_true", help="let SLURM requeue the job; it resumes the sweep")
    s.add_argument("--sbatch-arg", action="append", default=[], dest="sbatch_args", metavar="ARG",
                   help="extra sbatch option, e.g. --sbatch-arg=--qos=long (repeatable)")
    s.add_argument("--script", type=Path, default=SCRIPT, help="sbatch script (default: %(default)s)")
    s.add_argument("--dry-run", action="store_true", help="print the sbatch command, submit nothing")

    n = argparse.ArgumentParser(prog=f"{prog} node-ip", description="(sbatch script) the IPv4 address Ray binds to here.")
    n.add_argument("--multi-node", action="store_true")

    w = argparse.ArgumentParser(prog=f"{prog} wait-nodes", description="(sbatch script) wait until N Ray nodes joined.")
    w.add_argument("address")
    w.add_argument("nodes", type=int)
    w.add_argument("--timeout", type=float, default=180.0)
    w.add_argument("--watch-pid", type=int, action="append", default=[])
    return {"submit": s, "node-ip": n, "wait-nodes": w}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parsers = _parsers()
    # Subcommands by hand: argparse's intermixed parsing (options after Hydra overrides)
    # does not support subparsers.
    if not argv or argv[0] not in parsers:
        print(f"usage: python -m gru_sweep.slurm {{{','.join(parsers)}}} ...\n\n{__doc__}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, args = argv[0], parsers[argv[0]].parse_intermixed_args(argv[1:])
    if command == "submit":
        opts = SubmitOptions(
            overrides=args.overrides, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
            cpus_per_node=args.cpus_per_node, partition=args.partition, time=args.time,
            requeue=args.requeue, job_name=args.job_name, account=args.account,
            sbatch_args=args.sbatch_args, script=args.script,
        )
        submit(opts, dry_run=args.dry_run)
    elif command == "node-ip":
        print(node_ip(args.multi_node))
    else:
        alive = wait_for_nodes(args.address, args.nodes, args.timeout, args.watch_pid)
        print(f"gru_sweep.slurm: {alive} Ray node(s) up at {args.address}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
