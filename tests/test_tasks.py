"""Copy and adding tasks, and what all tasks share: layout against hand-written indices,
baselines measured on generated data, determinism, resumable training batches, config errors."""
import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from gru_sweep.errors import ConfigError
from gru_sweep.tasks import DATA_SCHEMAS, TASK_NAMES, build_task

torch.set_num_threads(1)


def copy_task(T, variable=False, **kw):
    return build_task({"name": "copy", "seq_len": T, "variable": variable, **kw}, seed=0)


# -- copy -------------------------------------------------------------------------------------
def test_copy_layout_matches_arjovsky():
    T = 7
    task = copy_task(T)
    x, y = task.sample(torch.Generator().manual_seed(1), 64)
    assert x.shape == y.shape == (64, T + 20) and x.dtype == y.dtype == torch.long
    assert (task.vocab_size, task.input_size, task.output_size, task.readout) == (10, 10, 9, "all")
    assert task.tokens_per_sample == T + 20
    symbols = x[:, :10]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    assert (x[:, 10:T + 9] == 0).all()             # T - 1 blanks
    assert (x[:, T + 9] == 9).all()                # the delimiter
    assert (x[:, T + 10:] == 0).all()              # 10 blanks while recalling
    assert (y[:, :T + 10] == 0).all()              # T + 10 blank targets
    assert torch.equal(y[:, T + 10:], symbols)     # then the symbols, in order
    assert len(symbols.unique()) == 8              # all 8 symbols are drawn


def test_variable_copy_layout_and_delay_distribution():
    T, n = 12, 6000
    x, y = copy_task(T, variable=True).sample(torch.Generator().manual_seed(2), n)
    assert x.shape == y.shape == (n, T + 20)
    delays = []
    for xi, yi in zip(x.tolist(), y.tolist()):
        p = xi.index(9)
        assert xi.count(9) == 1 and all(v == 0 for i, v in enumerate(xi[10:], 10) if i != p)
        assert yi[p + 1:p + 11] == xi[:10]
        assert all(v == 0 for i, v in enumerate(yi) if not p < i <= p + 10)
        delays.append(p - 9)
    counts = torch.bincount(torch.tensor(delays), minlength=T + 1)
    assert counts[0] == 0 and (counts[1:] > 0).all()
    expected = n / T  # uniform on 1..T: every count within 5 sigma
    assert ((counts[1:] - expected).abs() < 5 * math.sqrt(expected)).all()


@pytest.mark.parametrize("variable", [False, True])
def test_copy_memoryless_baseline_measured(variable):
    """The predictor that knows the layout but not the symbols: blank until the delimiter, then
    uniform over the 8 symbols for 10 steps, then blank: loss 10 ln 8 / (T + 20)."""
    T, n = 30, 2000
    task = copy_task(T, variable)
    x, y = task.sample(torch.Generator().manual_seed(3), n)
    logp = torch.full((n, T + 20, 9), -30.0)
    logp[..., 0] = 0.0
    after = torch.cumsum(torch.cumsum((x == 9).long(), 1), 1)  # 1, 2, ... from the delimiter on
    recall = (after >= 2) & (after <= 11)
    logp[recall] = torch.tensor([-30.0] + [math.log(1 / 8)] * 8)
    logp[recall] += 1e-3 * torch.randn(int(recall.sum()), 9, generator=torch.Generator().manual_seed(4))
    m = task.metrics(logp, y)
    assert set(m) == {"loss", "loss_rel_baseline", "recall_loss", "recall_acc"}
    assert task.baseline["loss"] == pytest.approx(10 * math.log(8) / (T + 20), rel=1e-12)
    assert m["loss"].item() == pytest.approx(task.baseline["loss"], rel=1e-3)
    assert m["loss_rel_baseline"].item() == pytest.approx(1.0, rel=1e-3)
    assert m["recall_loss"].item() == pytest.approx(math.log(8), rel=1e-3)
    sigma = math.sqrt(1 / 8 * 7 / 8 / (10 * n))
    assert abs(m["recall_acc"].item() - 1 / 8) < 5 * sigma
    assert torch.equal(task.loss(logp, y), m["loss"])


def test_copy_baseline_values_quoted_in_issue():
    assert copy_task(100).baseline["loss"] == pytest.approx(0.1733, abs=1e-4)
    assert copy_task(1000).baseline["loss"] == pytest.approx(0.0204, abs=1e-4)


def test_copy_perfect_prediction_scores_full_recall():
    task = copy_task(5)
    x, y = task.probe_batch(16)
    m = task.metrics(F.one_hot(y, 9).float() * 50.0, y)
    assert m["recall_acc"].item() == 1.0 and m["loss"].item() < 1e-6


# -- adding -----------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [2, 9, 50])
def test_adding_layout(T):
    task = build_task({"name": "adding", "seq_len": T}, seed=0)
    x, y = task.sample(torch.Generator().manual_seed(5), 500)
    assert x.shape == (500, T, 2) and y.shape == (500, 1) and x.dtype == torch.float32
    assert (task.vocab_size, task.input_size, task.output_size, task.readout) == (None, 2, 1, "last")
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert ((markers == 0) | (markers == 1)).all()
    half = T // 2
    assert (markers[:, :half].sum(1) == 1).all() and (markers[:, half:].sum(1) == 1).all()
    for v, mk, target in zip(values.tolist(), markers.tolist(), y[:, 0].tolist()):
        assert target == pytest.approx(sum(a for a, b in zip(v, mk) if b == 1), abs=1e-6)
    if T == 50:  # every allowed marker position occurs
        first, second = markers[:, :half].argmax(1), markers[:, half:].argmax(1) + half
        assert set(first.tolist()) == set(range(half)) and set(second.tolist()) == set(range(half, T))


def test_adding_baseline_measured():
    task = build_task({"name": "adding", "seq_len": 10}, seed=0)
    _, y = task.sample(torch.Generator().manual_seed(6), 200_000)
    m = task.metrics(torch.ones_like(y), y)  # always answer 1
    assert set(m) == {"loss", "mse_rel_baseline"}
    # (S - 1) for S = U1 + U2 is triangular on [-1, 1]: Var[(S - 1)^2] = 1/15 - 1/36
    sigma = math.sqrt((1 / 15 - 1 / 36) / len(y))
    assert abs(m["loss"].item() - 1 / 6) < 5 * sigma
    assert task.baseline == {"loss": pytest.approx(1 / 6)}
    assert m["mse_rel_baseline"].item() == pytest.approx(m["loss"].item() * 6)
    assert y.mean().item() == pytest.approx(1.0, abs=5 * math.sqrt(1 / 6 / len(y)))


def test_adding_loss_refuses_a_per_step_prediction():
    task = build_task({"name": "adding", "seq_len": 10}, seed=0)
    x, y = task.probe_batch(4)
    with pytest.raises(RuntimeError):
        task.loss(torch.zeros(4, 10), y)


# -- all tasks ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    return str(path)


def small_cfg(name, corpus_file):
    return {
        "copy": {"name": "copy", "seq_len": 6, "variable": True, "val_size": 10},
        "adding": {"name": "adding", "seq_len": 6, "val_size": 10},
        "text": {"name": "text", "seq_len": 6, "path": corpus_file},
        "markov": {"name": "markov", "seq_len": 6, "vocab_size": 4, "order": 2, "num_chars": 20_000},
    }[name] | {"batch_size": 4, "batches_per_epoch": 3}


def batches(loader, n):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def same(a, b):
    return all(torch.equal(p, q) for u, v in zip(a, b) for p, q in zip(u, v)) and len(a) == len(b)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_same_seed_same_batches(name, corpus_file):
    cfg = small_cfg(name, corpus_file)
    a, b, c = build_task(cfg, seed=7), build_task(cfg, seed=7), build_task(cfg, seed=8)
    assert same(batches(a.train_dataloader(), 3), batches(b.train_dataloader(), 3))
    assert not same(batches(a.train_dataloader(), 3), batches(c.train_dataloader(), 3))
    # validation and probe sets depend on the data config only, not the run seed
    assert same(list(a.val_dataloader()), list(c.val_dataloader()))
    assert same([a.probe_batch(5)], [c.probe_batch(5)])
    assert same([a.probe_batch(5)], [b.probe_batch(5)])
    val = list(a.val_dataloader())
    assert same(val, list(a.val_dataloader()))  # fixed across epochs


@pytest.mark.parametrize("name", TASK_NAMES)
def test_interface_and_metric_names(name, corpus_file):
    task = build_task(small_cfg(name, corpus_file), seed=0)
    x, y = task.probe_batch(3)
    if task.vocab_size is None:
        assert x.shape == (3, task.seq_len, task.input_size) and x.is_floating_point()
    else:
        assert x.shape[:2] == (3, task.tokens_per_sample) and x.dtype == torch.long
        assert task.input_size == task.vocab_size and int(x.max()) < task.vocab_size
    shape = (3, task.output_size) if task.readout == "last" else (*y.shape, task.output_size)
    pred = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    metrics = task.metrics(pred, y)
    assert task.monitor in metrics and task.mode == "min"
    assert torch.equal(metrics["loss"], task.loss(pred, y))
    assert "loss" in task.baseline
    assert all(not v.requires_grad and v.ndim == 0 for v in metrics.values())
    assert len(task.train_dataloader()) == 3


@pytest.mark.parametrize("name", TASK_NAMES)
def test_batches_are_assembled_on_the_task_device(name, corpus_file):
    """setup() points task.device at the trainer's device; every batch is then built there
    (the meta device stands in for a GPU) from the same CPU draws."""
    task = build_task(small_cfg(name, corpus_file), seed=0)
    task.device = torch.device("meta")
    x, y = task.sample(torch.Generator().manual_seed(0), 4)
    vx, vy = next(iter(task.val_dataloader()))
    px, py = task.probe_batch(3)
    assert {t.device.type for t in (x, y, vx, vy, px, py)} == {"meta"}
    cpu = build_task(small_cfg(name, corpus_file), seed=0)
    assert [t.shape for t in (x, y)] == [t.shape for t in cpu.sample(torch.Generator().manual_seed(0), 4)]


def test_training_stream_state_resumes_mid_epoch():
    cfg = {"name": "copy", "seq_len": 5, "batch_size": 2, "batches_per_epoch": 3}
    loader = build_task(cfg, seed=3).train_dataloader()
    straight = [b for _ in range(3) for b in loader]  # three epochs: global batches 0..8
    resumed = build_task(cfg, seed=3).train_dataloader()
    first = batches(resumed, 2)
    state = resumed.state_dict()
    fresh = build_task(cfg, seed=3).train_dataloader()
    fresh.load_state_dict(state)
    rest = list(fresh) + [b for _ in range(2) for b in fresh]
    assert same(first + rest, straight)


class _Recorder(pl.LightningModule):
    """Records the batches it trains on; a single weight so checkpoints are small."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[0].clone())
        return (self.w * batch[0].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(task, max_steps, root, ckpt_path=None, callbacks=()):
    model = _Recorder()
    trainer = pl.Trainer(max_steps=max_steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", default_root_dir=root,
                         callbacks=list(callbacks), enable_checkpointing=bool(callbacks))
    trainer.fit(model, datamodule=task, ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lightning_resume_mid_epoch_continues_the_same_batches(tmp_path):
    """A checkpoint taken mid-epoch restores the stream position through Lightning's loader state."""
    cfg = {"name": "adding", "seq_len": 4, "batch_size": 2, "batches_per_epoch": 3}
    straight = _fit(build_task(cfg, seed=1), 7, tmp_path / "a")
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=4, save_top_k=-1)
    _fit(build_task(cfg, seed=1), 4, tmp_path / "b", callbacks=[ckpt])
    resumed = _fit(build_task(cfg, seed=1), 7, tmp_path / "b", ckpt_path=str(next((tmp_path / "ck").glob("*.ckpt"))))
    assert len(straight) == 7 and len(resumed) == 3
    assert same([(b,) for b in resumed], [(b,) for b in straight[4:]])


# -- config errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("name,key,value", [
    ("copy", "seq_len", 0), ("copy", "batch_size", 0), ("copy", "batches_per_epoch", -1),
    ("copy", "val_size", 0), ("adding", "seq_len", 1), ("markov", "val_fraction", 0.0),
    ("markov", "test_fraction", 1.5), ("markov", "order", 0), ("markov", "vocab_size", 1),
    ("markov", "concentration", 0.0), ("markov", "num_chars", 0),
])
def test_bad_keys_raise_config_error_naming_the_key(name, key, value):
    with pytest.raises(ConfigError) as err:
        build_task({"name": name, key: value}, seed=0)
    assert err.value.key == f"data.{key}" and err.value.value == value
    # the schema alone (as the config loader merges it) names the key relative to the group
    with pytest.raises(ConfigError) as err:
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DATA_SCHEMAS[name]), {key: value}))
    assert err.value.key == key


def test_fractions_must_leave_a_training_split():
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction must be < 1") as err:
        build_task({"name": "markov", "val_fraction": 0.5, "test_fraction": 0.5}, seed=0)
    assert err.value.key == "data.test_fraction"


def test_unknown_task_and_bad_seed():
    with pytest.raises(ConfigError, match="choose one of copy, adding, text, markov"):
        build_task({"name": "copying"}, seed=0)
    with pytest.raises(ConfigError) as err:
        build_task({"name": "copy"}, seed=-1)
    assert err.value.key == "seed"


def test_markov_table_too_large():
    with pytest.raises(ConfigError, match="transition probabilities exceed"):
        build_task({"name": "markov", "vocab_size": 65, "order": 4}, seed=0)
