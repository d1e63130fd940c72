"""End-to-end sweeps through the real CLI (`python -m gru_sweep +experiment=smoke ...`) on Ray.

Every process a test starts (the CLI driver, Ray's daemons, agents and trial workers, `ray start`
nodes) inherits a unique GRU_SWEEP_TEST_TAG; afterwards the test kills exactly the processes that
carry its tag, so a SIGKILLed driver's orphans (Ray's agents outlive it) are cleaned up too.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

pytestmark = pytest.mark.slow


def _tagged_pids(tag: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if f"GRU_SWEEP_TEST_TAG={tag}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                pass
    return pids


def _kill_tagged(tag: str, signals=(signal.SIGTERM, signal.SIGKILL)) -> None:
    for sig in signals:
        for pid in _tagged_pids(tag):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 5
        while _tagged_pids(tag) and time.time() < deadline:
            time.sleep(0.2)


class Env:
    """Environment and Ray temp dir of one test; `cli` runs the real CLI inside it."""

    def __init__(self, cluster_mode: bool = False):
        self.tag = secrets.token_hex(8)
        self.ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
        self.vars = {**os.environ, "GRU_SWEEP_TEST_TAG": self.tag, "WANDB_MODE": "disabled",
                     "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", "HYDRA_FULL_ERROR": "1"}
        if not cluster_mode:
            # One-machine Ray keeps 127.0.0.1 and listens on loopback only (see conf/ray/local.yaml).
            self.vars["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

    def cmd(self, sweep_dir: Path, *overrides: str) -> list[str]:
        return [sys.executable, "-m", "gru_sweep", "+experiment=smoke", f"hydra.run.dir={sweep_dir}",
                f"ray.temp_dir={self.ray_tmp}", "trainer.num_threads=1", *overrides]

    def cli(self, sweep_dir: Path, *overrides: str, timeout: int = 240) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.cmd(sweep_dir, *overrides), env=self.vars, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        return proc

    def popen(self, sweep_dir: Path, *overrides: str, log: Path) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(sweep_dir, *overrides), env=self.vars, stdout=log.open("w"),
                                stderr=subprocess.STDOUT)

    def close(self, signals=(signal.SIGTERM, signal.SIGKILL)) -> None:
        _kill_tagged(self.tag, signals)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


@pytest.fixture
def env():
    e = Env()
    yield e
    e.close()


def summary(sweep_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sweep_dir / "summary.csv")


def attempts(run_dir) -> list[dict]:
    return json.loads((Path(run_dir) / "trial.json").read_text())["attempts"]


def run_summary(run_dir) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def wait_for(condition, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        assert proc is None or proc.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ckpt_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


GRID = "sweep.axes={data.seq_len:{grid:[5,10]},gate_init:{grid:[default,chrono]}}"


def test_grid_sweep_summary_matches_a_single_run(env, tmp_path):
    """2 seq_len x 2 gate_init: four completed rows, each equal to its own run; one re-run alone."""
    sweep_dir, single_dir = tmp_path / "sweep", tmp_path / "single"
    single = subprocess.Popen(  # the same trial alone, as a plain single run, in parallel
        [sys.executable, "-m", "gru_sweep", "+experiment=smoke", f"hydra.run.dir={single_dir}",
         "trainer.num_threads=1", "data.seq_len=10", "gate_init=chrono"],
        env=env.vars, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = env.cli(sweep_dir, "sweep=seq_len_x_init", GRID, "ray.num_cpus=2")
    assert single.wait(timeout=240) == 0, single.stderr.read()[-3000:]

    rows = summary(sweep_dir)
    assert len(rows) == 4 and set(rows.status) == {"completed"} and set(rows.step) == {20}
    assert sorted(zip(rows["data.seq_len"], rows.gate_init)) == sorted(
        (s, g) for s in (5, 10) for g in ("default", "chrono"))
    assert "completed" in out.stdout and "val/loss" in out.stdout  # the printed table
    for row in rows.to_dict("records"):
        run = run_summary(row["run_dir"])
        assert run["status"] == "completed" and run["seq_len"] == row["data.seq_len"]
        assert run["final"]["val/loss"] == pytest.approx(row["val/loss"], rel=1e-9)
        cfg = yaml.safe_load((Path(row["run_dir"]) / "config.yaml").read_text())
        assert cfg["gate_init"]["scheme"] == row["gate_init"]
        if row["gate_init"] == "chrono":
            assert cfg["gate_init"]["t_max"] == row["data.seq_len"]  # follows the trial's seq_len
        # W&B: one group per sweep, the run named after its directory, tagged with its axes
        assert cfg["logger"]["group"] == "seq_len_x_init" and cfg["logger"]["run_name"] == Path(row["run_dir"]).name
        assert cfg["logger"]["tags"] == [f"seq_len={row['data.seq_len']}", f"gate_init={row['gate_init']}"]

    alone = run_summary(single_dir)["final"]["val/loss"]
    in_sweep = rows.set_index(["data.seq_len", "gate_init"]).loc[(10, "chrono"), "val/loss"]
    assert in_sweep == pytest.approx(alone, rel=1e-6)
    assert (sweep_dir / "report.html").exists()


def test_unknown_axis_fails_before_anything_runs(env, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(env.cmd(sweep_dir, "sweep.name=typo", "++sweep.axes={data.seq_lenn:{grid:[5,10]}}"),
                          env=env.vars, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "sweep.axes.data.seq_lenn=[5, 10]: 'data.seq_lenn' is not a key" in proc.stderr
    assert not sweep_dir.exists()


def test_diverged_trial_is_reported_and_a_killed_trial_resumes(env, tmp_path):
    """lr=1e30 diverges (status 'diverged', the sweep goes on); the other trial's process is
    SIGKILLed after its first checkpoint and Ray retries it from there, not from step 0."""
    sweep_dir = tmp_path / "sweep"
    proc = env.popen(sweep_dir, "sweep.name=faults", "++sweep.axes={optimizer.lr:{grid:[0.003,1.0e30]}}",
                     "data=adding", "data.seq_len=10", "data.batch_size=16", "cell.hidden_size=16",
                     "trainer.max_steps=300", "trainer.val_check_interval=20", "probe.enabled=false",
                     "sweep.max_failures=2", "ray.num_cpus=2", log=tmp_path / "log")
    good = sweep_dir / "trials" / "lr=0.003"
    wait_for(lambda: (good / "checkpoints" / "last.ckpt").exists(), 150, "the first checkpoint", proc)
    killed = attempts(good)[-1]["pid"]
    os.kill(killed, signal.SIGKILL)
    assert proc.wait(timeout=200) == 0, (tmp_path / "log").read_text()[-4000:]

    rows = summary(sweep_dir).set_index("optimizer.lr")
    assert rows.loc[1e30, "status"] == "diverged" and rows.loc[1e30, "step"] < 300
    assert pd.isna(rows.loc[1e30, "val/loss"])
    assert rows.loc[0.003, "status"] == "completed" and rows.loc[0.003, "step"] == 300
    first, second = attempts(good)
    assert first["pid"] == killed and "ended" not in first and second["pid"] != killed
    assert rows.loc[0.003, "attempts"] == 2
    assert second["start_step"] >= 20 and second["start_step"] % 20 == 0  # resumed from a checkpoint
    assert run_summary(good)["final"]["val/loss"] == pytest.approx(rows.loc[0.003, "val/loss"], rel=1e-9)


def test_driver_killed_mid_sweep_resumes_without_redoing_work(env, tmp_path):
    """SIGKILL the driver while trial 2 of 3 trains; `sweep.resume=true` finishes the sweep:
    trial 1 is not trained again, trial 2 continues from its checkpoint, one row per trial."""
    sweep_dir = tmp_path / "sweep"
    args = ["sweep.name=resume", "++sweep.axes={data.seq_len:{grid:[5,6,7]}}", "sweep.max_concurrent_trials=1",
            "trainer.max_steps=1000", "trainer.val_check_interval=20", "probe.enabled=false", "ray.num_cpus=2"]
    proc = env.popen(sweep_dir, *args, log=tmp_path / "log1")
    first, second = sweep_dir / "trials" / "seq_len=5", sweep_dir / "trials" / "seq_len=6"
    wait_for(lambda: (first / "summary.json").exists() and (second / "checkpoints" / "last.ckpt").exists(),
             200, "trial 1 done and trial 2 checkpointed", proc)
    proc.kill()
    env.close(signals=(signal.SIGKILL,))  # its orphans: Ray's daemons and agents, the training trial
    proc.wait()
    env.ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    first_loss = run_summary(first)["final"]["val/loss"]
    first_mtime = (first / "checkpoints" / "last.ckpt").stat().st_mtime
    second_step = ckpt_step(second / "checkpoints" / "last.ckpt")
    assert 0 < second_step < 1000

    env.cli(sweep_dir, *args, "sweep.resume=true", f"sweep.dir={sweep_dir}", timeout=300)
    rows = summary(sweep_dir)
    assert len(rows) == 3 and rows.run_dir.is_unique and set(rows.status) == {"completed"}
    assert set(rows.step) == {1000}
    # trial 1: not trained again (a re-run, if Ray had not yet recorded it as finished, only re-reports)
    assert (first / "checkpoints" / "last.ckpt").stat().st_mtime == first_mtime
    assert all("start_step" not in a for a in attempts(first)[1:])
    assert rows.set_index("data.seq_len").loc[5, "val/loss"] == pytest.approx(first_loss, rel=1e-9)
    # trial 2: resumed from the checkpoint it had when the driver died, not from step 0
    assert attempts(second)[-1]["start_step"] >= second_step
    for row in rows.to_dict("records"):
        assert run_summary(row["run_dir"])["final"]["val/loss"] == pytest.approx(row["val/loss"], rel=1e-9)


def test_fractional_fake_gpus_run_eight_trials_at_once(env, tmp_path):
    """4 advertised GPUs, 0.5 GPU per trial: 8 trials run together, two per device id, each seeing
    only its own id in CUDA_VISIBLE_DEVICES, and training falls back to the CPU."""
    sweep_dir = tmp_path / "sweep"
    env.cli(sweep_dir, "sweep.name=gpus", "++sweep.axes={seed:{grid:[0,1,2,3,4,5,6,7]}}",
            "ray.num_cpus=8", "ray.num_gpus=4", "sweep.resources_per_trial.gpu=0.5",
            "trainer.max_steps=300", "probe.enabled=false", timeout=300)
    rows = summary(sweep_dir)
    assert len(rows) == 8 and set(rows.status) == {"completed"}
    runs = [attempts(d)[0] for d in rows.run_dir]
    ids = [r["gpu_ids"] for r in runs]
    assert sorted(ids) == sorted(["0", "1", "2", "3"] * 2)
    assert all(r["cuda_visible_devices"] == r["gpu_ids"] for r in runs)
    # all eight were running at the same moment
    starts, ends = [r["started"] for r in runs], [r["ended"] for r in runs]
    assert max(starts) < min(ends)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path):
    """A head (127.0.0.2) and a worker node (127.0.0.3) started with `ray start` and token auth;
    the CLI joins with ray.address; the summary shows trials placed on both nodes."""
    env = Env(cluster_mode=True)  # worker nodes cannot join one-machine Ray
    token = secrets.token_hex(32)
    env.vars.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    port = _free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    try:
        for node in ([ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.2",
                      "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={env.ray_tmp}",
                      "--disable-usage-stats"],
                     [ray_bin, "start", f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3",
                      "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats"]):
            started = subprocess.run(node, env=env.vars, capture_output=True, text=True, timeout=120)
            assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        sweep_dir = tmp_path / "sweep"
        env.cli(sweep_dir, "ray=cluster", f"ray.address=127.0.0.2:{port}", "ray.node_ip=127.0.0.2",
                "sweep.name=cluster", "++sweep.axes={data.seq_len:{grid:[5,10]}}",
                "trainer.max_steps=60", "probe.enabled=false", timeout=300)
        rows = summary(sweep_dir)
        assert set(rows.status) == {"completed"} and set(rows.node_ip) == {"127.0.0.2", "127.0.0.3"}
        assert rows.node_id.nunique() == 2
        leaked = [p for p in sweep_dir.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
        assert not leaked, leaked
    finally:
        env.close()
