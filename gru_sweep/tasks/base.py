"""What every task shares: the schema keys, the Task interface, seeding and the batch iterables.

Seeding. Every batch comes from its own `torch.Generator`, seeded from a tuple of words
(stream, seed, index) through numpy's SeedSequence, so streams never overlap and any batch can
be regenerated on its own: training batch k of a run uses (TRAIN, seed, k); a synthetic task's
validation set and every task's probe batch use (VAL|PROBE, 0, 0) and so depend on the data
config only — every run of a sweep (every seed, cell, gate init) is scored on the same sequences.

Device. The random draws are made on the CPU, so a seed gives the same batches bit for bit on
any device (a CUDA generator would draw a different stream), and only those draws, which are
small, move to `task.device`, where the batch is assembled. `setup()` sets `task.device` to the
trainer's device, so Lightning's own transfer of a batch is a no-op. Measured on an H200 for a
copy batch (128 x 1020 tokens): 0.24 ms, against 0.42 ms built on the CPU and copied over, 8.6 ms
for a cuDNN GRU training step (hidden 128) and 154 ms for a CustomGRU one.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gru_sweep.data_schema import DataConfig, SyntheticConfig
from gru_sweep.errors import require_int

TRAIN, VAL, PROBE, CORPUS = range(4)

Batch = tuple[Tensor, Tensor]
Sampler = Callable[[torch.Generator, int], Batch]


def generator(stream: int, seed: int, index: int) -> torch.Generator:
    """A CPU generator for one batch; distinct words give statistically independent streams."""
    state = np.random.SeedSequence([stream, seed, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)  # manual_seed wants a signed 64-bit int


def sequence_cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy in nats averaged over every step; pred [B, T, V] logits, target [B, T]."""
    return F.cross_entropy(pred.flatten(0, 1), target.flatten())


class TrainBatches:
    """The training stream: a sized, stateful iterable Lightning can checkpoint and resume.

    Batch k of the run (counted across epochs) is `sample(generator(TRAIN, seed, k), batch_size)`,
    so batches depend only on the seed. Lightning stores `state_dict()` in its checkpoints and
    calls `load_state_dict` on resume (it fetches without prefetching from sized loaders, so the
    position is exactly the batches trained on): a resumed run, mid-epoch included, continues
    with the batches the uninterrupted run would have drawn.
    """

    def __init__(self, sample: Sampler, seed: int, batch_size: int, batches_per_epoch: int):
        self.sample, self.seed = sample, seed
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.next_batch = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        # A generator: the start is read at the first next(), after any load_state_dict.
        start = self.next_batch
        end = (start // self.batches_per_epoch + 1) * self.batches_per_epoch  # end of this epoch
        for k in range(start, end):
            self.next_batch = k + 1
            yield self.sample(generator(TRAIN, self.seed, k), self.batch_size)

    def state_dict(self) -> dict:
        return {"next_batch": self.next_batch}

    def load_state_dict(self, state: dict) -> None:
        self.next_batch = int(state["next_batch"])


class FixedBatches:
    """A fixed evaluation set served in order, in batches (the last one may be smaller)."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for i in range(0, len(self.x), self.batch_size):
            yield self.x[i:i + self.batch_size], self.y[i:i + self.batch_size]


class Task(pl.LightningDataModule):
    """One task: its data, and the loss, metrics and baseline the model and reports read.

    Subclasses set the attributes below in __init__ and implement `sample`, `loss`, `metrics`.
    Inputs are int64 tokens [B, T] when `vocab_size` is set (the model one-hot encodes or embeds
    them), else float [B, T, input_size]. With readout "all" the model predicts [B, T, output_size]
    and with "last" it predicts [B, output_size] from the last step.
    """

    name: str
    seq_len: int
    vocab_size: int | None
    input_size: int
    output_size: int
    readout: str  # "all" | "last"
    tokens_per_sample: int  # input steps per sequence, for token budgets
    baseline: dict[str, float]
    monitor = "loss"
    mode = "min"
    has_test = False  # whether test_dataloader() exists (a held-out split)

    def __init__(self, cfg: DataConfig, seed: int):
        super().__init__()
        require_int("seed", seed, 0)
        self.cfg, self.seed = cfg, seed
        self.name, self.seq_len, self.batch_size = cfg.name, cfg.seq_len, cfg.batch_size
        self.device = torch.device("cpu")  # where batches are assembled (see the module docstring)

    def setup(self, stage: str | None = None) -> None:
        """Lightning calls this once the trainer knows its device: assemble batches there."""
        if self.trainer is not None:
            self.device = self.trainer.strategy.root_device

    def sample(self, generator: torch.Generator, n: int) -> Batch:
        """n training sequences (x, y) drawn with `generator` (a CPU one), as whole tensors on `device`."""
        raise NotImplementedError

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def metrics(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def probe_batch(self, n: int) -> Batch:
        """A fixed batch of n sequences (same for every run of this data config)."""
        return self.sample(generator(PROBE, 0, 0), n)

    def train_dataloader(self) -> TrainBatches:
        return TrainBatches(self.sample, self.seed, self.cfg.batch_size, self.cfg.batches_per_epoch)


class SyntheticTask(Task):
    """A task drawn from a known distribution: validation is a fixed sample of `val_size` sequences."""

    cfg: SyntheticConfig

    def __init__(self, cfg: SyntheticConfig, seed: int):
        super().__init__(cfg, seed)
        self._val: Batch | None = None

    def val_dataloader(self) -> FixedBatches:
        if self._val is None or self._val[0].device != self.device:  # drawn once (per device)
            self._val = self.sample(generator(VAL, 0, 0), self.cfg.val_size)
        return FixedBatches(*self._val, self.cfg.batch_size)
