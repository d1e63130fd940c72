"""W&B through the real CLI: offline by default, same run id on resume, never blocks, no key in files."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SECRET = "0123456789abcdef0123456789abcdef01234567"  # looks like a W&B API key


def cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY=SECRET, WANDB_DIR=str(run_dir), WANDB_CONFIG_DIR=str(run_dir.parent / "wandb-config"))
    proc = subprocess.run(
        [sys.executable, "-m", "gru_sweep", "+experiment=smoke", "logger=wandb", f"hydra.run.dir={run_dir}", *overrides],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _all_bytes(root: Path):
    for path in root.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def test_offline_by_default_resumes_the_same_run_and_never_writes_the_key(tmp_path):
    run_dir = tmp_path / "run"
    cli(run_dir, "trainer.max_steps=10")
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(run_id)
    assert list(offline[0].glob("run-*.wandb"))

    cli(run_dir, "trainer.max_steps=20")  # resume: a second offline segment of the same W&B run
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(run_id) for p in offline)

    leaks = [str(p) for p, data in _all_bytes(tmp_path) if SECRET.encode() in data]
    assert leaks == []


def test_unreachable_wandb_does_not_stop_training(tmp_path):
    run_dir = tmp_path / "online"
    # Online mode with no network: W&B cannot start within its timeout; the run goes on without it.
    out = cli(run_dir, "logger.mode=online", "logger.init_timeout=10", "trainer.max_steps=10")
    assert "W&B logging disabled for this run" in out.stdout + out.stderr
    assert (run_dir / "summary.json").exists()
    assert (run_dir / "metrics.csv").exists()
