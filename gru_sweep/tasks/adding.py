"""The adding problem (Le, Jaitly & Hinton 2015).

Input [B, T, 2]: channel 0 holds values drawn from U[0, 1]; channel 1 is zero except for one 1 at
an index in [0, T//2) and one in [T//2, T). Target [B, 1]: the sum of the two marked values, read
from the last step. Loss: mean squared error. Baseline: always answering 1 (the mean of the sum)
scores the variance of a sum of two U[0, 1], 2/12 = 1/6.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from gru_sweep.data_schema import AddingConfig
from gru_sweep.tasks.base import Batch, SyntheticTask


class AddingTask(SyntheticTask):
    readout = "last"

    def __init__(self, cfg: AddingConfig, seed: int):
        super().__init__(cfg, seed)
        self.vocab_size = None
        self.input_size = 2
        self.output_size = 1
        self.tokens_per_sample = cfg.seq_len
        self.baseline = {"loss": 1.0 / 6.0}

    def sample(self, generator: torch.Generator, n: int) -> Batch:
        T, half = self.seq_len, self.seq_len // 2
        values = torch.rand(n, T, generator=generator)
        first = torch.randint(0, half, (n, 1), generator=generator)
        second = torch.randint(half, T, (n, 1), generator=generator)
        values, marked = values.to(self.device), torch.cat([first, second], dim=1).to(self.device)
        markers = torch.zeros(n, T, device=self.device).scatter_(1, marked, 1.0)
        y = values.gather(1, marked).sum(1, keepdim=True)
        return torch.stack([values, markers], dim=-1), y

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """MSE; pred [B, 1] from the last step (view_as refuses a [B, T] prediction instead of broadcasting)."""
        return F.mse_loss(pred.view_as(target), target)

    @torch.no_grad()
    def metrics(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        loss = self.loss(pred, target)
        return {"loss": loss, "mse_rel_baseline": loss / self.baseline["loss"]}
