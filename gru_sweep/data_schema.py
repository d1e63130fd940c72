"""The ``data`` config group: one schema per task, with every check that needs no data loaded
beyond the text file itself (read at validation too, so a bad path fails before anything
starts; the task reads it again when it is built).

Plain Python (no torch), so a sweep's driver validates every grid point without loading the
training stack; gru_sweep.tasks builds the tasks these describe.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from gru_sweep.errors import ConfigError, require_int, require_positive


def require_fractions(val_fraction: float, test_fraction: float) -> None:
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ConfigError(key, value, "must be a number in (0, 1)")
    if val_fraction + test_fraction >= 1:
        raise ConfigError("test_fraction", test_fraction,
                          f"val_fraction + test_fraction must be < 1 (val_fraction={val_fraction}); "
                          "the training split is what remains")


@dataclass
class DataConfig:
    """Keys every task has; each task's schema subclasses this and sets `name`'s default."""

    name: str = ""
    seq_len: int = 100
    batch_size: int = 128
    batches_per_epoch: int = 100

    # A dataclass keeps a field's default as a class attribute, so type(self).name is the
    # task this schema belongs to.
    def __post_init__(self):
        if self.name != type(self).name:
            raise ConfigError("name", self.name, f"this schema is for task {type(self).name!r}")
        require_int("seq_len", self.seq_len, 1)
        require_int("batch_size", self.batch_size, 1)
        require_int("batches_per_epoch", self.batches_per_epoch, 1)


@dataclass
class SyntheticConfig(DataConfig):
    """Tasks whose sequences are drawn fresh for every batch."""

    val_size: int = 1024  # sequences in the fixed validation set

    def __post_init__(self):
        super().__post_init__()
        require_int("val_size", self.val_size, 1)


@dataclass
class CopyConfig(SyntheticConfig):
    name: str = "copy"
    variable: bool = False  # Henaff et al. 2016: the delay drawn uniformly from 1..seq_len per sequence


@dataclass
class AddingConfig(SyntheticConfig):
    name: str = "adding"

    def __post_init__(self):
        super().__post_init__()
        if self.seq_len < 2:
            raise ConfigError("seq_len", self.seq_len, "must be an integer >= 2 (one marker in each half)")


@dataclass
class CorpusConfig(DataConfig):
    """Split fractions: train is the first part of the corpus, then val, then test."""

    val_fraction: float = 0.05
    test_fraction: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        require_fractions(self.val_fraction, self.test_fraction)


SPLITS = ("train", "val", "test")  # in corpus order: split_sizes gives their lengths


def split_sizes(n: int, cfg: CorpusConfig) -> tuple[int, int, int]:
    """Train, val and test sizes of n items: val and test take their fractions (rounded down)."""
    n_val, n_test = int(n * cfg.val_fraction), int(n * cfg.test_fraction)
    return n - n_val - n_test, n_val, n_test


PASS_PATH = "pass data.path=/path/to/file.txt (a UTF-8 text file)"


@dataclass
class TextConfig(CorpusConfig):
    name: str = "text"
    path: Optional[str] = None

    def __post_init__(self):
        super().__post_init__()
        if not self.path:
            raise ConfigError("path", self.path, f"no text file given: {PASS_PATH}")
        # Absolute, so the resolved config still points at the file from a Ray trial's directory.
        self.path = str(Path(self.path).expanduser().resolve())
        read_splits(self)


def read_splits(cfg: TextConfig) -> tuple[str, dict[str, str]]:
    """The file's text and its train/val/test parts; ConfigError if any is unusable."""
    try:
        data = Path(cfg.path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("path", cfg.path, f"no such file: {PASS_PATH}") from None
    except IsADirectoryError:
        raise ConfigError("path", cfg.path, f"is a directory: {PASS_PATH}") from None
    except OSError as err:
        raise ConfigError("path", cfg.path, f"cannot be read ({err.strerror}): {PASS_PATH}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError("path", cfg.path, f"is not UTF-8 text (invalid byte at offset {err.start}): "
                                            f"{PASS_PATH}") from None
    if not text:
        raise ConfigError("path", cfg.path, f"is empty: {PASS_PATH}")

    n_train, n_val, _ = split_sizes(len(text), cfg)
    parts = dict(zip(SPLITS, (text[:n_train], text[n_train:n_train + n_val], text[n_train + n_val:])))
    for split, part in parts.items():
        if len(part) <= cfg.seq_len:
            fix = ("a smaller data.val_fraction/data.test_fraction" if split == "train"
                   else f"a larger data.{split}_fraction")
            raise ConfigError("seq_len", cfg.seq_len,
                              f"the {split} split of {cfg.path} has {len(part)} of {len(text)} characters, and one "
                              f"sequence needs seq_len + 1 = {cfg.seq_len + 1}: pass a smaller data.seq_len, "
                              f"{fix}, or a longer file")
    return text, parts


ROW_LEN = 4096
MAX_TABLE = 1 << 22  # transition-table entries, vocab_size ** (order + 1): 32 MiB in float64


@dataclass
class MarkovConfig(CorpusConfig):
    name: str = "markov"
    vocab_size: int = 16
    order: int = 3
    concentration: float = 0.1
    chain_seed: int = 0  # the chain and its corpus; the run seed only picks training windows
    num_chars: int = 1_000_000

    def __post_init__(self):
        super().__post_init__()
        require_int("vocab_size", self.vocab_size, 2)
        require_int("order", self.order, 1)
        if self.vocab_size ** (self.order + 1) > MAX_TABLE:
            raise ConfigError("order", self.order,
                              f"vocab_size ** (order + 1) = {self.vocab_size ** (self.order + 1)} transition "
                              f"probabilities exceed {MAX_TABLE}: pass a smaller data.order or data.vocab_size")
        require_positive("concentration", self.concentration)
        require_int("chain_seed", self.chain_seed, 0)
        require_int("num_chars", self.num_chars, 1)
        for split, rows in zip(SPLITS, split_rows(self)):
            if rows == 0:
                raise ConfigError("num_chars", self.num_chars,
                                  f"leaves the {split} split empty: pass a larger data.num_chars "
                                  f"or data.{split}_fraction")


def row_len(cfg: MarkovConfig) -> int:
    return max(ROW_LEN, cfg.seq_len + 1)


def split_rows(cfg: MarkovConfig) -> tuple[int, int, int]:
    """Chains per split: each split's share of num_chars, rounded up to whole chains."""
    return tuple(-(-n // row_len(cfg)) for n in split_sizes(cfg.num_chars, cfg))


DATA_SCHEMAS: dict[str, type[DataConfig]] = {
    schema.name: schema for schema in (CopyConfig, AddingConfig, TextConfig, MarkovConfig)}
TASK_NAMES = tuple(DATA_SCHEMAS)
