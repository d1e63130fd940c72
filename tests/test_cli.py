"""End-to-end runs through the real CLI (`python -m gru_sweep`) and its config errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from gru_sweep.probe import hidden_grad_norms

pytestmark = pytest.mark.slow


def cli(*overrides: str, run_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "gru_sweep", "+experiment=smoke", f"hydra.run.dir={run_dir}", *overrides],
        capture_output=True, text=True, env=env, timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _checkpoint_model(run_dir: Path):
    """Rebuild the trained model from last.ckpt without going through the training code."""
    from gru_sweep.config import validate
    from gru_sweep.model import SequenceModel
    from gru_sweep.tasks import build_task
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(yaml.safe_load((run_dir / "config.yaml").read_text()))
    run = validate(cfg)
    task = build_task(run.data, seed=run.seed)
    model = SequenceModel(run, task, hparams={})
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    return model.eval(), task, run


@pytest.mark.parametrize("cell", ["custom_gru", "cudnn_gru", "lstm", "rnn"])
def test_smoke_run_for_every_cell(tmp_path, cell):
    run_dir = tmp_path / cell
    out = cli(f"cell={cell}", run_dir=run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["cell"] == cell
    assert "artifacts:" in out.stdout

    # The final validation loss equals an independent evaluation of the saved weights.
    model, task, run = _checkpoint_model(run_dir)
    with torch.no_grad():
        losses, sizes = [], []
        for i, (x, y) in enumerate(task.val_dataloader()):
            if i == run.trainer.limit_val_batches:
                break
            losses.append(float(task.loss(model(x), y)) * len(x))
            sizes.append(len(x))
    assert summary["final"]["val/loss"] == pytest.approx(sum(losses) / sum(sizes), rel=1e-4)

    # The probe's last rows equal hidden_grad_norms on the saved cell and the task's probe batch.
    grads = pd.read_csv(run_dir / "gradnorms.csv")
    last = grads[grads.step == grads.step.max()].sort_values(["layer", "t"])
    x, y = task.probe_batch(run.probe.batch_size)
    assert len(last) == run.cell.num_layers * x.shape[1]
    expected = hidden_grad_norms(model.cell, model.encode(x), lambda o: task.loss(model.head(o), y))
    assert last.grad_norm.to_numpy() == pytest.approx(expected.flatten().numpy(), rel=1e-4)

    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["step"].max() >= run.trainer.max_steps - 1
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert list((run_dir / "figures").glob("*.png"))


@pytest.mark.parametrize("data", ["adding", "markov"])
def test_smoke_run_for_other_tasks(tmp_path, data):
    run_dir = tmp_path / data
    cli(f"data={data}", "data.seq_len=12", run_dir=run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["task"] == data
    assert summary["baseline"]


def test_text_task_reads_a_file_and_reports_bits_per_char(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    run_dir = tmp_path / "text"
    cli("data=text", f"data.path={text}", "data.seq_len=16", run_dir=run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary["final"]
    assert final["val/bpc"] == pytest.approx(final["val/loss"] / torch.log(torch.tensor(2.0)).item(), rel=1e-5)


def test_resume_continues_from_the_checkpoint(tmp_path):
    run_dir = tmp_path / "resume"
    cli("trainer.max_steps=10", run_dir=run_dir)
    first = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert first["global_step"] == 10
    out = cli("trainer.max_steps=20", run_dir=run_dir)
    assert "Restoring states from the checkpoint" in out.stdout + out.stderr
    second = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert second["global_step"] == 20
    metrics = pd.read_csv(run_dir / "metrics.csv")
    # Each training step was logged once: no step was redone after the resume.
    train_steps = metrics.dropna(subset=["train/loss"])["step"]
    assert train_steps.is_unique and train_steps.min() < 5 and train_steps.max() >= 18  # both segments kept
    assert metrics.dropna(subset=["val/loss"])["step"].is_unique

    # A resume that would train a different model is refused by name, before anything is written.
    before = (run_dir / "config.yaml").read_text()
    refused = cli("trainer.max_steps=30", "cell.hidden_size=32", run_dir=run_dir, check=False)
    assert refused.returncode == 2 and "cell.hidden_size=32" in refused.stderr and "16" in refused.stderr
    assert (run_dir / "config.yaml").read_text() == before


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["cell=gruu"], ["cell/gruu", "custom_gru", "lstm"]),
        (["data.seq_len=0"], ["data.seq_len=0"]),
        (["cell.hidden_size=-3"], ["cell.hidden_size=-3"]),
        (["trainer.max_steps=lots"], ["trainer.max_steps", "lots"]),
        (["cell=lstm", "gate_init=identity"], ["identity", "lstm"]),
        (["optimizer.name=adamw"], ["optimizer.name='adamw'", "adam, rmsprop, sgd"]),
        (["+trainr.max_steps=5"], ["trainr", "unknown top-level key", "trainer"]),
        (["trainer.precision=bf16-mixed"], ["trainer.precision='bf16-mixed'", "32-true, 64-true"]),
        (["data=text"], ["data.path"]),
    ],
)
def test_bad_config_gives_one_clear_error_and_leaves_nothing(tmp_path, overrides, expected):
    run_dir = tmp_path / "bad"
    proc = cli(*overrides, run_dir=run_dir, check=False)
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists() or not any(run_dir.iterdir())
