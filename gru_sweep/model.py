"""The task-agnostic LightningModule: input encoding -> recurrent cell -> readout -> task loss.

Everything task-specific (loss, metrics, baseline, readout position) comes from the Task object,
so there are no task branches here.
"""
from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gru_sweep.cells import apply_gate_init, build_cell
from gru_sweep.config import ModelConfig, OptimizerConfig, RunConfig


class SequenceModel(pl.LightningModule):
    def __init__(self, run: RunConfig, task, hparams: dict):
        super().__init__()
        self.save_hyperparameters(hparams)
        self.task = task
        self.model_cfg: ModelConfig = run.model
        self.optim_cfg: OptimizerConfig = run.optimizer
        self.max_steps = run.trainer.max_steps

        if task.vocab_size is None:
            self.embed, cell_input = None, task.input_size
        elif run.model.encoding == "embedding":
            self.embed, cell_input = nn.Embedding(task.vocab_size, run.model.embedding_dim), run.model.embedding_dim
        else:
            self.embed, cell_input = None, task.vocab_size
        self.cell = build_cell(run.cell, cell_input)
        generator = torch.Generator().manual_seed(run.seed)
        apply_gate_init(self.cell, run.gate_init, generator=generator)
        self.readout = nn.Linear(self.cell.hidden_size, task.output_size)

    # -- the three pieces the probe reuses ------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        if self.task.vocab_size is None:
            return x.to(self.readout.weight.dtype)  # float tasks: follow the model's precision
        if self.embed is not None:
            return self.embed(x)
        return F.one_hot(x, self.task.vocab_size).to(self.readout.weight.dtype)

    def head(self, hidden_seq: Tensor) -> Tensor:
        """Readout from the cell's output sequence [B, T, H] to the task's prediction."""
        if self.task.readout == "last":
            hidden_seq = hidden_seq[:, -1]
        return self.readout(hidden_seq)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.cell(self.encode(x)))

    # -- Lightning hooks ------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x)
        loss = self.task.loss(pred, y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/tokens", float((self.global_step + 1) * x.shape[0] * self.task.tokens_per_sample))
        return loss

    def validation_step(self, batch, batch_idx):
        self._log_metrics("val", batch)

    def test_step(self, batch, batch_idx):
        self._log_metrics("test", batch)

    def _log_metrics(self, stage: str, batch) -> None:
        x, y = batch
        metrics = self.task.metrics(self(x), y)
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, prog_bar=False, batch_size=x.shape[0])

    def configure_optimizers(self):
        cfg = self.optim_cfg
        params = self.parameters()
        if cfg.name == "adam":
            optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
        elif cfg.name == "rmsprop":
            optimizer = torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        factor = _lr_factor(cfg, self.max_steps)
        if factor is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _lr_factor(cfg: OptimizerConfig, max_steps: int):
    """The multiplier of the base learning rate at each step, or None for a constant rate."""
    if cfg.schedule == "none":
        return None
    if cfg.schedule == "step":
        return lambda step: cfg.gamma ** (step // cfg.step_size)
    warmup = cfg.warmup_steps if cfg.schedule == "warmup_cosine" else 0

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return cosine
