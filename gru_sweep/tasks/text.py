"""Character-level language modelling on a UTF-8 text file (`data.path`; nothing is downloaded).

The vocabulary is the set of characters in the file (sorted by code point). The file is split
contiguously: the first 1 - val_fraction - test_fraction for training, then validation, then
test. The schema reads the file when the config is validated, so a missing path, an unreadable,
empty or non-UTF-8 file, or a split shorter than one sequence fails before anything else runs.
Baseline: the training split's character frequencies (add-one smoothed) scored on the
validation split: the best memoryless predictor a model could learn from the training data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from gru_sweep.errors import ConfigError
from gru_sweep.tasks.corpus import SPLITS, CorpusConfig, CorpusTask, split_sizes, unigram_cross_entropy

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


class TextTask(CorpusTask):
    def __init__(self, cfg: TextConfig, seed: int):
        text, parts = read_splits(cfg)
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        chars, ids = np.unique(codepoints, return_inverse=True)
        tokens = torch.from_numpy(ids.astype(np.int64))
        bounds = np.cumsum([0] + [len(parts[s]) for s in SPLITS])
        splits = {s: tokens[bounds[i]:bounds[i + 1]].unsqueeze(0) for i, s in enumerate(SPLITS)}
        super().__init__(cfg, seed, splits, vocab_size=len(chars))
        self.path = cfg.path
        self.chars = "".join(map(chr, chars))  # token i is self.chars[i]
        loss = unigram_cross_entropy(splits["train"], splits["val"], self.vocab_size)
        self.baseline = {"loss": loss, "bpc": loss / math.log(2)}
