"""Character-level text: vocabulary, contiguous splits, windows and chunks decoded back to the
file's own text, the unigram baseline recomputed with collections.Counter, and the errors."""
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gru_sweep.errors import ConfigError
from gru_sweep.tasks import DATA_SCHEMAS, build_task

torch.set_num_threads(1)

TEXT = "".join(f"Line {i}: naïve café, Ωμέγα — {i * i % 97}!\n" for i in range(60))  # ~2,400 chars


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def text_task(path, **kw):
    return build_task({"name": "text", "path": str(path), **kw}, seed=0)


def decode(task, tokens):
    return "".join(task.chars[i] for i in tokens.tolist())


def test_vocabulary_and_contiguous_splits(text_file):
    task = text_task(text_file, seq_len=20, val_fraction=0.1, test_fraction=0.2)
    assert task.chars == "".join(sorted(set(TEXT)))
    assert task.vocab_size == task.input_size == task.output_size == len(set(TEXT))
    n = len(TEXT)
    n_val, n_test = int(n * 0.1), int(n * 0.2)
    n_train = n - n_val - n_test
    parts = {name: decode(task, rows[0]) for name, rows in task.splits.items()}
    assert parts == {"train": TEXT[:n_train], "val": TEXT[n_train:n_train + n_val], "test": TEXT[n_train + n_val:]}
    assert task.has_test and task.readout == "all" and task.tokens_per_sample == 20


def test_training_windows_are_random_substrings_of_the_train_split(text_file):
    task = text_task(text_file, seq_len=15)
    train = decode(task, task.splits["train"][0])
    x, y = task.sample(torch.Generator().manual_seed(0), 300)
    assert x.shape == y.shape == (300, 15)
    starts = set()
    for xi, yi in zip(x, y):
        window = decode(task, xi) + decode(task, yi[-1:])
        assert decode(task, yi) == window[1:]
        start = train.find(window)
        assert start >= 0
        starts.add(start)
    # offsets spread over the split (find() reports a repeated window at its first occurrence)
    assert len(starts) > 150 and max(starts) > len(train) // 2


def test_evaluation_walks_the_split_in_contiguous_chunks(text_file):
    T = 16
    task = text_task(text_file, seq_len=T, batch_size=5)
    val = decode(task, task.splits["val"][0])
    xs, ys = zip(*task.val_dataloader())
    x, y = torch.cat(xs), torch.cat(ys)
    chunks = (len(val) - 1) // T
    assert len(x) == chunks and max(len(b) for b in xs) == 5
    assert decode(task, x.flatten()) == val[:chunks * T]
    assert decode(task, y.flatten()) == val[1:chunks * T + 1]
    test = decode(task, task.splits["test"][0])
    xt, yt = zip(*task.test_dataloader())
    assert decode(task, torch.cat(xt).flatten()) == test[:(len(test) - 1) // T * T]


def test_unigram_baseline_and_bits(text_file):
    task = text_task(text_file, seq_len=10)
    # The memoryless predictor fitted on the training split (add-one smoothing), scored on val.
    train, val = decode(task, task.splits["train"][0]), decode(task, task.splits["val"][0])
    counts, total = Counter(train), len(train) + task.vocab_size
    expected = -sum(math.log((counts[c] + 1) / total) for c in val) / len(val)
    assert task.baseline["loss"] == pytest.approx(expected, rel=1e-12)
    assert task.baseline["bpc"] == pytest.approx(expected / math.log(2), rel=1e-12)
    x, y = task.probe_batch(4)
    uniform = torch.zeros(*y.shape, task.vocab_size)
    m = task.metrics(uniform, y)
    assert set(m) == {"loss", "bpc"}
    assert m["loss"].item() == pytest.approx(math.log(task.vocab_size), rel=1e-6)
    assert m["bpc"].item() == pytest.approx(math.log2(task.vocab_size), rel=1e-6)


def test_relative_path_is_stored_absolute(text_file, monkeypatch):
    monkeypatch.chdir(text_file.parent)
    schema = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DATA_SCHEMAS["text"]),
                                                 {"path": text_file.name, "seq_len": 10}))
    assert schema.path == str(text_file.resolve())


def raises_with(cfg, key, *phrases):
    with pytest.raises(ConfigError) as err:
        build_task({"name": "text", **cfg}, seed=0)
    message = str(err.value)
    assert err.value.key == key and all(p in message for p in phrases), message
    return message


def test_missing_path_says_what_to_pass():
    raises_with({}, "data.path", "no text file given", "data.path=/path/to/file.txt")
    raises_with({"path": ""}, "data.path", "data.path=/path/to/file.txt")
    # the conf/data default is path: null
    cfg = OmegaConf.load(Path(__file__).parents[1] / "conf" / "data" / "text.yaml")
    assert cfg.path is None
    with pytest.raises(ConfigError, match="data.path=/path/to/file.txt"):
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DATA_SCHEMAS["text"]), cfg))


def test_unusable_files(tmp_path):
    raises_with({"path": str(tmp_path / "absent.txt")}, "data.path", "no such file", "data.path=")
    raises_with({"path": str(tmp_path)}, "data.path", "is a directory")
    (tmp_path / "empty.txt").write_bytes(b"")
    raises_with({"path": str(tmp_path / "empty.txt")}, "data.path", "is empty")
    (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1") * 50)
    raises_with({"path": str(tmp_path / "latin1.txt")}, "data.path", "is not UTF-8", "offset 3")


def test_split_too_small_for_one_sequence(text_file):
    n = len(TEXT)
    message = raises_with({"path": str(text_file), "seq_len": int(n * 0.05)}, "data.seq_len",
                          "val split", "data.seq_len", "data.val_fraction")
    assert f"seq_len + 1 = {int(n * 0.05) + 1}" in message
    raises_with({"path": str(text_file), "seq_len": 100, "val_fraction": 0.2, "test_fraction": 0.01},
                "data.seq_len", "test split", "data.test_fraction")
    raises_with({"path": str(text_file), "seq_len": 1000, "val_fraction": 0.5, "test_fraction": 0.45},
                "data.seq_len", "train split")


SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="needs ../shared/data/tinyshakespeare.txt")
def test_tinyshakespeare():
    task = text_task(SHAKESPEARE, seq_len=100)
    assert task.vocab_size == 65
    assert sum(rows.numel() for rows in task.splits.values()) == 1_115_394
    assert 3.0 < task.baseline["bpc"] < 5.0
