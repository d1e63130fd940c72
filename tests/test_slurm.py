"""SLURM: sbatch command construction and node-address choice (fast), and sweep jobs on the
local one-node cluster that .ci/slurm-up.sh starts (marked `slurm`; skipped when no cluster
answers, failed instead when GRU_SWEEP_REQUIRE_SLURM=1).

The cluster tests submit through `python -m gru_sweep.slurm submit` and the real
slurm/sweep.sbatch. One runs the real sweep CLI and compares its summary with the same sweep
run directly. The requeue tests use a stand-in driver (GRU_SWEEP_DRIVER): a small Ray Tune sweep
with checkpoints whose every number is known in advance and which records what each trial saw,
so they can tell a resumed sweep (finished trials not run again, the running one continuing
from its checkpoint) from one that started over, at the step level.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gru_sweep import slurm

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- fast unit tests


@pytest.mark.parametrize(
    ("candidates", "allow_loopback", "expected"),
    [
        (["10.1.2.3"], False, "10.1.2.3"),
        # hostname --ip-address on a dual-stack host: IPv6 (with scope) first
        (["fe80::1%eth0", "2001:db8::5", "192.0.2.7"], False, "192.0.2.7"),
        # Debian's /etc/hosts maps the hostname to 127.0.1.1: unreachable from other nodes
        (["127.0.1.1", "10.0.0.5"], False, "10.0.0.5"),
        (["127.0.1.1"], False, None),
        (["127.0.1.1"], True, "127.0.1.1"),
        (["::1", "127.0.0.1"], True, "127.0.0.1"),
        (["169.254.3.4", "0.0.0.0", "garbage", "10.9.8.7"], False, "10.9.8.7"),
        # several interfaces: resolver order decides
        (["10.0.0.5", "172.16.0.5"], False, "10.0.0.5"),
        ([], True, None),
    ],
)
def test_pick_ipv4(candidates, allow_loopback, expected):
    assert slurm.pick_ipv4(candidates, allow_loopback=allow_loopback) == expected


def test_node_ip_override_and_one_node(monkeypatch):
    monkeypatch.setenv("GRU_SWEEP_NODE_IP", "10.4.4.4")
    assert slurm.node_ip(multi_node=True) == "10.4.4.4"
    monkeypatch.delenv("GRU_SWEEP_NODE_IP")
    monkeypatch.delenv("GRU_SWEEP_NODE_IFACE", raising=False)
    assert slurm.node_ip(multi_node=False) == "127.0.0.1"


def test_node_ip_multi_node_rejects_loopback_only(monkeypatch):
    monkeypatch.delenv("GRU_SWEEP_NODE_IP", raising=False)
    monkeypatch.delenv("GRU_SWEEP_NODE_IFACE", raising=False)
    monkeypatch.setattr(slurm, "_words", lambda cmd: ["127.0.1.1", "::1"])
    monkeypatch.setattr(slurm.socket, "getaddrinfo", lambda *a, **k: [(2, 1, 6, "", ("127.0.1.1", 0))])
    with pytest.raises(SystemExit, match="no non-loopback IPv4"):
        slurm.node_ip(multi_node=True)
    monkeypatch.setattr(slurm, "_words", lambda cmd: ["fe80::2%ib0", "10.20.0.3"])
    assert slurm.node_ip(multi_node=True) == "10.20.0.3"


def test_node_ip_from_interface(monkeypatch):
    monkeypatch.delenv("GRU_SWEEP_NODE_IP", raising=False)
    monkeypatch.setenv("GRU_SWEEP_NODE_IFACE", "ib0")
    out = "4: ib0    inet 10.30.0.7/16 brd 10.30.255.255 scope global ib0\\       valid_lft forever"
    monkeypatch.setattr(slurm, "_words", lambda cmd: out.split() if cmd[-1] == "ib0" else [])
    assert slurm.interface_ipv4("ib0") == ["10.30.0.7"]
    assert slurm.node_ip(multi_node=True) == "10.30.0.7"
    monkeypatch.setenv("GRU_SWEEP_NODE_IFACE", "lo")
    monkeypatch.setattr(slurm, "_words", lambda cmd: "1: lo    inet 127.0.0.1/8 scope host lo".split())
    assert slurm.node_ip(multi_node=False) == "127.0.0.1"
    with pytest.raises(SystemExit, match="GRU_SWEEP_NODE_IFACE=lo has no usable IPv4"):
        slurm.node_ip(multi_node=True)


def _opt(cmd: list[str], name: str) -> str | None:
    values = [c.split("=", 1)[1] for c in cmd if c.startswith(name + "=")]
    assert len(values) <= 1, cmd
    return values[0] if values else None


def test_sbatch_command_full(tmp_path):
    opts = slurm.SubmitOptions(
        overrides=["+experiment=long_copy", "data.seq_len=200", "sweep.dir=out/lc"],
        nodes=2, gpus_per_node=4, cpus_per_node=8, partition="gpu", time="01:00:00",
        requeue=True, account="proj", sbatch_args=["--qos=long"], python="/env/bin/python",
    )
    cmd = slurm.sbatch_command(opts, tmp_path)
    assert cmd[:2] == ["sbatch", "--parsable"]
    assert _opt(cmd, "--nodes") == "2"
    assert _opt(cmd, "--ntasks-per-node") == "1"
    assert _opt(cmd, "--cpus-per-task") == "8"
    assert _opt(cmd, "--gres") == "gpu:4"
    assert _opt(cmd, "--partition") == "gpu"
    assert _opt(cmd, "--time") == "01:00:00"
    assert _opt(cmd, "--account") == "proj"
    assert _opt(cmd, "--job-name") == "gru_sweep-long_copy"
    assert _opt(cmd, "--output") == str(tmp_path / "sweeps" / "slurm-%j.out")
    assert _opt(cmd, "--export") == "ALL,GRU_SWEEP_PYTHON=/env/bin/python,GRU_SWEEP_GPUS_PER_NODE=4"
    assert "--requeue" in cmd and "--qos=long" in cmd
    # the script, then the Hydra overrides, in order; a relative sweep.dir made absolute
    i = cmd.index(str(slurm.SCRIPT))
    assert all(c.startswith("-") for c in cmd[1:i])
    assert cmd[i + 1 :] == ["+experiment=long_copy", "data.seq_len=200", f"sweep.dir={tmp_path / 'out/lc'}"]


def test_sbatch_command_minimal(tmp_path):
    cmd = slurm.sbatch_command(slurm.SubmitOptions(overrides=["+experiment=smoke"]), tmp_path)
    assert _opt(cmd, "--nodes") == "1"
    for absent in ("--cpus-per-task", "--gres", "--partition", "--time", "--account"):
        assert _opt(cmd, absent) is None
    assert "--requeue" not in cmd
    assert _opt(cmd, "--export").startswith(f"ALL,GRU_SWEEP_PYTHON={sys.executable},")
    assert cmd[-2:] == [str(slurm.SCRIPT), "+experiment=smoke"]


@pytest.mark.parametrize("bad", [{"nodes": 0}, {"gpus_per_node": -1}, {"cpus_per_node": 0}])
def test_sbatch_command_rejects_bad_sizes(tmp_path, bad):
    with pytest.raises(SystemExit, match=next(iter(bad)).replace("_", "-")):
        slurm.sbatch_command(slurm.SubmitOptions(**bad), tmp_path)


def test_default_sweep_dir_matches_the_script(tmp_path):
    assert slurm.default_sweep_dir(tmp_path, ["+experiment=adding"], "42") == tmp_path / "sweeps/adding-42"
    assert slurm.default_sweep_dir(tmp_path, [], "7") == tmp_path / "sweeps/sweep-7"
    text = slurm.SCRIPT.read_text()
    assert "sweep_dir=$SLURM_SUBMIT_DIR/sweeps/$experiment-$job" in text
    assert f"SWEEP_DIR_KEY={slurm.SWEEP_DIR_KEY}" in text


def test_cli_dry_run_and_missing_sbatch(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["submit", "+experiment=long_copy", "--nodes", "2", "--gpus-per-node", "4",
            "--cpus-per-node", "8", "seed=3", "--partition", "X", "--time", "01:00:00", "--requeue"]
    assert slurm.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sbatch --parsable ") and "--gres=gpu:4" in out[0]
    assert out[0].endswith(f"{slurm.SCRIPT} +experiment=long_copy seed=3")
    assert out[1] == f"results: {tmp_path}/sweeps/long_copy-<job id>"
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(SystemExit, match="`sbatch` not found"):
        slurm.main(argv)


# --------------------------------------------------------------------------- the local cluster

# The stand-in driver: `python standin.py key=value...`, as the sweep CLI is called. Two trials
# of a checkpointing trainable: a short one and one of `slow_steps` steps.
STANDIN = r'''
import hashlib, json, os, sys, tempfile, time
from pathlib import Path

os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # snapshot often: the test requeues
import ray
from ray import tune

args = dict(a.lstrip("+").split("=", 1) for a in sys.argv[1:])
sweep_dir = Path(args["sweep.dir"])
resume = args.get("sweep.resume") == "true"
# the sweep CLI's contract: sweep.yaml set up first; resume=true only where it exists
assert (sweep_dir / "sweep.yaml").exists() == resume, "resume=true iff the sweep is set up"
sweep_dir.mkdir(parents=True, exist_ok=True)
(sweep_dir / "sweep.yaml").write_text("standin: true\n")
ray.init(address=args["ray.address"], _node_ip_address=args["ray.node_ip"], log_to_driver=False)
record = {
    "resume": resume,
    "address": args["ray.address"],
    "node_ip": ray.util.get_node_ip_address(),
    "slurm_vars": sorted(k for k in os.environ if k.startswith("SLURM_")),
    "job_id": os.environ.get("GRU_SWEEP_SLURM_JOB_ID"),
    "token_sha256": hashlib.sha256(os.environ["RAY_AUTH_TOKEN"].encode()).hexdigest(),
    "nodes": sum(1 for n in ray.nodes() if n["Alive"]),
    "cpus": ray.cluster_resources().get("CPU"),
}
with open(sweep_dir / "driver_starts.jsonl", "a") as f:
    f.write(json.dumps(record) + "\n")


def trainable(config):
    out = Path(config["out"]) / f"trial_{config['i']}"
    out.mkdir(parents=True, exist_ok=True)
    step = 0
    ckpt = tune.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            step = json.loads((Path(d) / "state.json").read_text())["step"]
    with open(out / "starts.jsonl", "a") as f:
        f.write(json.dumps({
            "step": step,
            "slurm_vars": sorted(k for k in os.environ if k.startswith("SLURM_")),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "node_ip": ray.util.get_node_ip_address(),
        }) + "\n")
    while step < config["steps"]:
        time.sleep(config["sleep"])
        step += 1
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"step": step}))
            (out / "progress").write_text(str(step))
            tune.report({"step": step, "value": 10 * config["i"] + step},
                        checkpoint=tune.Checkpoint.from_directory(d))


trainable = tune.with_resources(trainable, {"cpu": 1})
if resume and tune.Tuner.can_restore(str(sweep_dir / "tune")):
    tuner = tune.Tuner.restore(str(sweep_dir / "tune"), trainable, resume_unfinished=True)
else:
    slow = int(args.get("slow_steps", 3))
    tuner = tune.Tuner(
        trainable,
        param_space={
            "i": tune.grid_search([0, 1]),
            "steps": tune.sample_from(lambda spec: 2 if spec.config.i == 0 else slow),
            "sleep": 0.5,
            "out": str(sweep_dir),
        },
        run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )
grid = tuner.fit()
rows = sorted(({"i": r.config["i"], "step": r.metrics["step"], "value": r.metrics["value"],
                "error": r.error is not None} for r in grid), key=lambda r: r["i"])
(sweep_dir / "summary.json").write_text(json.dumps(rows))
print("standin: done", rows)
'''

REQUIRE = os.environ.get("GRU_SWEEP_REQUIRE_SLURM") == "1"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "sinfo/sbatch not on PATH (start the cluster with .ci/slurm-up.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld not answering"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()} (start the cluster with .ci/slurm-up.sh)"
    if not re.search(r"^(idle|mixed|allocated)", out.stdout, re.M):
        return f"no SLURM node is up (sinfo: {out.stdout.split()})"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_problem()
    if problem:
        if REQUIRE:
            pytest.fail(f"GRU_SWEEP_REQUIRE_SLURM=1 but the SLURM cluster is unusable: {problem}")
        pytest.skip(problem)


def _job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    return dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)


def _wait(what: str, predicate, timeout: float, job_id: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        state = _job(job_id).get("JobState")
        if state in FINAL and not what.startswith("job"):
            break
        time.sleep(1)
    tail = log.read_text()[-4000:] if log.exists() else "(no log)"
    pytest.fail(f"timed out waiting for {what} (job {job_id}: {_job(job_id).get('JobState')})\n{tail}")


def _wait_final(job_id: str, log: Path, timeout: float) -> str:
    return _wait("job to finish", lambda: _job(job_id).get("JobState") in FINAL and _job(job_id)["JobState"],
                 timeout, job_id, log)


def _submit(tmp_path: Path, jobs: list[str], overrides: list[str], requeue: bool = False,
            driver: str | None = None) -> tuple[str, Path, Path]:
    """`python -m gru_sweep.slurm submit` from tmp_path; returns job id, sweep dir, log."""
    sweep_dir = tmp_path / "sweep"
    # "++key=": the job script must read the sweep dir in Hydra's add-or-override form too
    cmd = [sys.executable, "-m", "gru_sweep.slurm", "submit", *overrides, f"++sweep.dir={sweep_dir}",
           "--cpus-per-node", "2", "--time", "00:10:00", "--job-name", "gru_sweep-test"]
    if os.environ.get("GRU_SWEEP_SLURM_PARTITION"):
        cmd += ["--partition", os.environ["GRU_SWEEP_SLURM_PARTITION"]]
    if requeue:
        cmd.append("--requeue")
    env = dict(os.environ, GRU_SWEEP_NODE_IP="127.0.0.1")
    env.pop("GRU_SWEEP_DRIVER", None)
    if driver:
        env["GRU_SWEEP_DRIVER"] = driver
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job_id = re.search(r"^submitted job (\d+)$", out.stdout, re.M).group(1)
    assert f"results: {sweep_dir}" in out.stdout
    jobs.append(job_id)
    return job_id, sweep_dir, tmp_path / "sweeps" / f"slurm-{job_id}.out"


@pytest.fixture
def jobs(cluster):
    """Job ids submitted by a test; any still queued or running are cancelled at the end."""
    submitted: list[str] = []
    yield submitted
    for job_id in submitted:
        if _job(job_id).get("JobState") not in FINAL | {None}:
            subprocess.run(["scancel", job_id], check=False)


def _ray_processes_of(job_id: str) -> list[str]:
    """Command lines of live processes that use this job's Ray temp dir (/tmp/ray-<job id>)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"/tmp/ray-{job_id}/" in text or text.rstrip().endswith(f"/tmp/ray-{job_id}"):
            found.append(text[:200])
    return found


def _listening_outside_loopback(job_id: str) -> list[str]:
    """Listening TCP sockets not on loopback, of the job's Ray processes and driver: those the
    script marks with GRU_SWEEP_SLURM_JOB_ID (SLURM's own srun is not one of them)."""
    listening = {}  # socket inode -> local address, from /proc/net/tcp{,6} (state 0A: LISTEN)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A":
                listening[fields[9]] = fields[1]
    loopback = {"0100007F", "0000000000000000FFFF00000100007F",  # 127.0.0.1, ::ffff:127.0.0.1
                "00000000000000000000000001000000"}  # ::1
    marker = f"GRU_SWEEP_SLURM_JOB_ID={job_id}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            inodes = {os.readlink(fd)[8:-1] for fd in (proc / "fd").iterdir()
                      if os.readlink(fd).startswith("socket:[")}
        except OSError:
            continue
        for inode in inodes & listening.keys():
            host, port = listening[inode].split(":")
            if host not in loopback:
                found.append(f"{host}:{int(port, 16)} pid {proc.name}")
    return found


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _assert_no_token_written(driver: dict, *roots: Path):
    """No file the job wrote holds the Ray token (found by hashing every 64-hex-digit word)."""
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and path.stat().st_size < 5_000_000:
                for word in set(re.findall(rb"[0-9a-f]{64}", path.read_bytes())):
                    assert hashlib.sha256(word).hexdigest() != driver["token_sha256"], f"token in {path}"


def _assert_clean_trial_env(sweep_dir: Path):
    for i in (0, 1):
        for start in _lines(sweep_dir / f"trial_{i}" / "starts.jsonl"):
            assert start["slurm_vars"] == []          # Lightning must not see a SLURM task
            assert start["cuda_visible_devices"] == ""  # no GPUs in the job: none visible
            assert start["node_ip"] == "127.0.0.1"


# 2 sequence lengths x 2 gate initialisations of the smoke experiment: seconds per trial.
TINY_SWEEP = ["+experiment=smoke", "sweep=seq_len_x_init",
              "sweep.axes={data.seq_len:{grid:[5,10]},gate_init:{grid:[default,chrono]}}"]


@pytest.mark.slurm
def test_sweep_job_matches_direct_run(jobs, tmp_path):
    """The real CLI through the real sbatch script: the same summary as the sweep run directly."""
    import pandas as pd

    t0 = time.monotonic()
    job_id, sweep_dir, log = _submit(tmp_path, jobs, TINY_SWEEP)
    state = _wait_final(job_id, log, timeout=240)
    text = log.read_text()
    assert state == "COMPLETED", text[-4000:]
    t_job = time.monotonic() - t0
    assert "Ray stopped (exit 0)" in text and "resuming the sweep" not in text
    assert _ray_processes_of(job_id) == []

    direct_dir = tmp_path / "direct"
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
    t1 = time.monotonic()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "gru_sweep", *TINY_SWEEP, f"sweep.dir={direct_dir}", "ray.num_cpus=2",
             "ray.node_ip=127.0.0.1", f"ray.temp_dir={ray_tmp}"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")},
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-4000:]
    t_direct = time.monotonic() - t1

    keys = ["data.seq_len", "gate_init"]
    slurm_rows = pd.read_csv(sweep_dir / "summary.csv").sort_values(keys).reset_index(drop=True)
    direct_rows = pd.read_csv(direct_dir / "summary.csv").sort_values(keys).reset_index(drop=True)
    assert len(slurm_rows) == 4 and (slurm_rows["status"] == "completed").all()
    assert (slurm_rows["node_ip"] == "127.0.0.1").all()  # nothing left loopback
    pd.testing.assert_frame_equal(slurm_rows[keys + ["status", "step"]], direct_rows[keys + ["status", "step"]])
    metrics = [c for c in slurm_rows.columns if c.startswith("val/")]
    assert "val/loss" in metrics
    pd.testing.assert_frame_equal(slurm_rows[metrics], direct_rows[metrics], rtol=1e-5)
    print(f"tiny sweep: SLURM job {job_id} {t_job:.0f} s from submission to completion; "
          f"run directly {t_direct:.0f} s")


@pytest.mark.slurm
@pytest.mark.parametrize("how", ["scontrol-requeue", "time-limit-signal"])
def test_requeued_job_resumes_the_sweep(jobs, tmp_path, how):
    """scontrol-requeue: what preemption does (SIGTERM to every process of the job, restart).
    time-limit-signal: SLURM's --signal=B:USR1 before the time limit; the script stops the
    driver gracefully (Tune saves its state), stops Ray, and requeues the job itself."""
    t0 = time.monotonic()
    standin = tmp_path / "standin.py"
    standin.write_text(STANDIN)
    job_id, sweep_dir, log = _submit(tmp_path, jobs, ["+experiment=standin", "slow_steps=24"], requeue=True,
                                     driver=f"{sys.executable} -u {standin}")

    def progress(i: int) -> int:
        path = sweep_dir / f"trial_{i}" / "progress"
        return int(path.read_text() or 0) if path.exists() else 0

    # Requeue once the short trial is done and the long one has checkpointed a few steps.
    _wait("trial 1 to reach step 4", lambda: progress(0) == 2 and progress(1) >= 4,
          timeout=150, job_id=job_id, log=log)
    assert _listening_outside_loopback(job_id) == []
    time.sleep(2)  # a Tune snapshot (every 1 s in the stand-in) after those checkpoints
    t_requeue = time.monotonic()
    if how == "scontrol-requeue":
        subprocess.run(["scontrol", "requeue", job_id], check=True)
    else:
        subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True)
    # SLURM holds a requeued job for 120 s (BeginTime); start it sooner. Not at once: slurmd
    # refuses a job credential created in the same second as the old run's was revoked.
    _wait("job to be requeued", lambda: _job(job_id).get("JobState") == "PENDING", 60, job_id, log)
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
    state = _wait_final(job_id, log, timeout=180)
    text = log.read_text()
    assert state == "COMPLETED", text[-4000:]
    assert _job(job_id)["Restarts"] == "1"
    first, second = _lines(sweep_dir / "driver_starts.jsonl")
    assert (first["resume"], second["resume"]) == (False, True)
    assert first["address"] == second["address"]  # same ports after the requeue
    for driver in first, second:
        assert driver["slurm_vars"] == [] and driver["job_id"] == job_id
        assert driver["node_ip"] == "127.0.0.1" and driver["address"].startswith("127.0.0.1:")
        assert driver["nodes"] == 1 and driver["cpus"] == 2.0
    assert first["token_sha256"] != second["token_sha256"]  # a fresh token per run
    assert "resuming the sweep in" in text
    if how == "time-limit-signal":
        assert "got SIGUSR1" in text and f"requeueing job {job_id}" in text
    # finished trial not run again; the running one continued from its checkpoint, not step 0
    assert [s["step"] for s in _lines(sweep_dir / "trial_0" / "starts.jsonl")] == [0]
    starts = [s["step"] for s in _lines(sweep_dir / "trial_1" / "starts.jsonl")]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 3, starts
    assert json.loads((sweep_dir / "summary.json").read_text()) == [
        {"i": 0, "step": 2, "value": 2, "error": False},
        {"i": 1, "step": 24, "value": 34, "error": False},
    ]
    _assert_clean_trial_env(sweep_dir)
    _assert_no_token_written(first, sweep_dir, log)
    _assert_no_token_written(second, sweep_dir, log)
    assert _ray_processes_of(job_id) == []
    print(f"{how} job {job_id}: {time.monotonic() - t0:.0f} s in all, "
          f"{time.monotonic() - t_requeue:.0f} s from requeue to completion")
