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

import numpy as np
import torch

from gru_sweep.data_schema import SPLITS, TextConfig, read_splits
from gru_sweep.tasks.corpus import CorpusTask, unigram_cross_entropy

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
