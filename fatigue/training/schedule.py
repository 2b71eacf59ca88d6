"""The learning-rate schedule: cosine decay over the run, rebuilt when a resume changes
--lr or --epochs, at the position the run has reached."""
from __future__ import annotations

import math

import torch

from config import Config


def lr_factor(epoch: int, total_epochs: int) -> float:
    """Cosine decay from 1 to 0.01 over the run; a pure function of (epoch, total), so
    the schedule can be rebuilt for a new total at the right position."""
    progress = min(epoch, total_epochs) / max(1, total_epochs)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def make_schedule(optimizer: torch.optim.Optimizer, cfg: Config) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, cfg.num_epochs))


def rebuild_schedule(optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: Config) -> None:
    """Make the restored schedule follow the current config: a new --lr becomes the base,
    a new --epochs a new horizon, at the position the run has reached."""
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.learning_rate
        group["weight_decay"] = cfg.weight_decay
    scheduler.base_lrs = [cfg.learning_rate] * len(optimizer.param_groups)
    for group in optimizer.param_groups:
        group["lr"] = cfg.learning_rate * lr_factor(scheduler.last_epoch, cfg.num_epochs)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
