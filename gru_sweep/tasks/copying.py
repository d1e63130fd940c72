"""The copy task (Arjovsky, Shah & Bengio 2016), optionally with a variable delay (Henaff et al. 2016).

Tokens: 0 = blank, 1..8 = data symbols, 9 = delimiter; output classes 0..8 (blank + symbols, the
delimiter is never a target). With delay T = seq_len, one sequence has T + 20 steps:

    input   s1 .. s10  blank x (T-1)  delim  blank x 10
    target  blank x (T + 10)                 s1 .. s10

so the delimiter sits at index T + 9 and the recall at T + 10 .. T + 19.

Variable delay (`variable: true`): each sequence draws its delay d uniformly from 1..T and keeps
the fixed length T + 20: delimiter at d + 9, recall at d + 10 .. d + 19, then T - d trailing
blanks whose target is blank (padding the model has to learn to emit, not masked out). The loss
still averages over all T + 20 steps, so the memoryless baseline below is unchanged.

Memoryless baseline: predict blank everywhere except the 10 steps after the delimiter, where it
predicts uniformly over the 8 symbols: 10 ln 8 / (T + 20) nats per step (T=100: 0.1733,
T=1000: 0.0204). Accuracy over all steps would flatter it ((T + 10 + 10/8) / (T + 20)), so
recall_loss and recall_acc are measured on the 10 recall steps only (where the target is a symbol).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gru_sweep.data_schema import CopyConfig
from gru_sweep.tasks.base import Batch, SyntheticTask, sequence_cross_entropy

BLANK, DELIMITER = 0, 9
NUM_SYMBOLS = 8  # data symbols are tokens 1..8
RECALL_LEN = 10  # symbols to memorise


class CopyTask(SyntheticTask):
    readout = "all"

    def __init__(self, cfg: CopyConfig, seed: int):
        super().__init__(cfg, seed)
        self.variable = cfg.variable
        self.vocab_size = self.input_size = NUM_SYMBOLS + 2
        self.output_size = NUM_SYMBOLS + 1
        self.tokens_per_sample = cfg.seq_len + 2 * RECALL_LEN
        self.baseline = {
            "loss": RECALL_LEN * math.log(NUM_SYMBOLS) / self.tokens_per_sample,
            "recall_loss": math.log(NUM_SYMBOLS),
            "recall_acc": 1.0 / NUM_SYMBOLS,
        }

    def sample(self, generator: torch.Generator, n: int) -> Batch:
        T, length, device = self.seq_len, self.tokens_per_sample, self.device
        symbols = torch.randint(1, NUM_SYMBOLS + 1, (n, RECALL_LEN), generator=generator).to(device)
        if self.variable:
            delay = torch.randint(1, T + 1, (n, 1), generator=generator).to(device)
        else:
            delay = torch.full((n, 1), T, device=device)
        x = torch.zeros(n, length, dtype=torch.long, device=device)
        x[:, :RECALL_LEN] = symbols
        x.scatter_(1, delay + RECALL_LEN - 1, DELIMITER)
        y = torch.zeros(n, length, dtype=torch.long, device=device)
        y.scatter_(1, delay + RECALL_LEN + torch.arange(RECALL_LEN, device=device), symbols)
        return x, y

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy (nats) averaged over every step; pred [B, T+20, 9] logits."""
        return sequence_cross_entropy(pred, target)

    @torch.no_grad()
    def metrics(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        loss = self.loss(pred, target)
        recall = target != BLANK  # exactly the 10 recall steps of each sequence
        recall_pred, recall_target = pred[recall], target[recall]
        return {
            "loss": loss,
            "loss_rel_baseline": loss / self.baseline["loss"],
            "recall_loss": F.cross_entropy(recall_pred, recall_target),
            "recall_acc": (recall_pred.argmax(-1) == recall_target).float().mean(),
        }
