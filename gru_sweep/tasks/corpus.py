"""Next-character prediction on a token corpus: what the text and Markov tasks share.

A corpus is held per split as an int64 matrix [rows, length] of independent token streams
(one row for a text file's split; many independent chains for the Markov source). Training
draws windows of seq_len + 1 tokens at uniformly random offsets inside a row (x = the first
seq_len, y = the same shifted by one). Evaluation walks each row in contiguous, non-overlapping
chunks of seq_len predictions, each scored from a fresh state, so the whole split (bar the tail
of each row shorter than a chunk) is scored once.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from gru_sweep.data_schema import CorpusConfig
from gru_sweep.tasks.base import PROBE, Batch, FixedBatches, Task, generator, sequence_cross_entropy


class CorpusTask(Task):
    readout = "all"
    has_test = True

    def __init__(self, cfg: CorpusConfig, seed: int, splits: dict[str, Tensor], vocab_size: int):
        """`splits`: each row at least seq_len + 1 tokens long (the schemas check it)."""
        super().__init__(cfg, seed)
        self.splits = splits  # "train" | "val" | "test" -> int64 [rows, length], on the CPU
        self.vocab_size = self.input_size = self.output_size = vocab_size
        self.tokens_per_sample = cfg.seq_len
        self._placed: dict[str, Tensor] = {}  # the splits on self.device

    def _split(self, split: str) -> Tensor:
        if split not in self._placed or self._placed[split].device != self.device:
            self._placed[split] = self.splits[split].to(self.device)
        return self._placed[split]

    def sample(self, generator: torch.Generator, n: int) -> Batch:
        return self.windows("train", generator, n)

    def probe_batch(self, n: int) -> Batch:
        """n windows at fixed random offsets in the validation split."""
        return self.windows("val", generator(PROBE, 0, 0), n)

    def windows(self, split: str, generator: torch.Generator, n: int) -> Batch:
        """n windows at uniformly random offsets (any row, any start that fits)."""
        rows = self._split(split)
        starts_per_row = rows.shape[1] - self.seq_len
        start = torch.randint(0, rows.shape[0] * starts_per_row, (n, 1), generator=generator).to(self.device)
        offsets = start % starts_per_row + torch.arange(self.seq_len + 1, device=self.device)
        window = rows[start // starts_per_row, offsets]
        return window[:, :-1], window[:, 1:]

    def chunks(self, split: str) -> Batch:
        """The split cut into contiguous, non-overlapping chunks: x, y each [chunks, seq_len]."""
        rows, T = self._split(split), self.seq_len
        span = (rows.shape[1] - 1) // T * T
        return rows[:, :span].reshape(-1, T), rows[:, 1:span + 1].reshape(-1, T)

    def val_dataloader(self) -> FixedBatches:
        return FixedBatches(*self.chunks("val"), self.batch_size)

    def test_dataloader(self) -> FixedBatches:
        return FixedBatches(*self.chunks("test"), self.batch_size)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy in nats per character; pred [B, T, V] logits, target [B, T]."""
        return sequence_cross_entropy(pred, target)

    @torch.no_grad()
    def metrics(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        loss = self.loss(pred, target)
        return {"loss": loss, "bpc": loss / math.log(2)}


def unigram_cross_entropy(train: Tensor, evaluated: Tensor, vocab_size: int) -> float:
    """Loss (nats) on `evaluated` of the memoryless predictor fitted on `train`: its character
    frequencies with add-one smoothing, so a character unseen in training costs a finite loss."""
    counts = torch.bincount(train.flatten(), minlength=vocab_size).double() + 1.0
    log_p = torch.log(counts / counts.sum())
    return float(-log_p[evaluated.flatten()].mean())
