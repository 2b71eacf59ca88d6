"""The run's position and bookkeeping, as one object that a checkpoint saves and restores.

Everything the loop needs to know about where it is lives here, not in loose locals: the
completed epochs, the optimizer steps taken, the clips done inside the current epoch, the
running loss/accuracy sums of that epoch, the last and best validation accuracy, and the
per-epoch histories. `state_dict()` / `load_state_dict()` are written side by side; the
checkpoint schema (fatigue.checkpoints.schema) puts their keys at the checkpoint's top level,
where the documented keys (`epoch`, `val_acc`, `best_val_acc`, the histories) have always been.

The running sums belong to each process (under torchrun every process sums its own shard),
so they are not in `state_dict()`: the schema gathers them from every process as
`partial_epoch`, like the per-process RNG states.
"""
from __future__ import annotations

import math

import torch

from fatigue.checkpoints.schema import HISTORY_KEYS


class TrainState:
    """Where the run is. `epoch` counts completed epochs, so the epoch being trained is
    `epoch + 1` (1-based) and the loop runs while `epoch < num_epochs`."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.epoch = 0
        self.global_step = 0
        self.samples_in_epoch = 0  # clips this process has trained on in the current epoch
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, seen
        self.val_acc: float | None = None
        self.best_val_acc = -1.0
        self.best_epoch = 0
        self.alarm_threshold: float | None = None  # chosen on the last epoch's validation
        self.alarm_off_threshold: float | None = None  # the same
        self.history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}

    # --------------------------------------------------------------------- save / restore
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "global_step": self.global_step,
                "samples_in_epoch": self.samples_in_epoch, "val_acc": self.val_acc,
                "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch,
                "alarm_threshold": self.alarm_threshold,
                "alarm_off_threshold": self.alarm_off_threshold, **self.history_copy()}

    def history_copy(self) -> dict[str, list[float]]:
        """The per-epoch histories, copied: safe to hand to another thread."""
        return {key: list(values) for key, values in self.history.items()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.global_step = state["global_step"]
        self.samples_in_epoch = state["samples_in_epoch"]
        self.val_acc = state["val_acc"]
        self.best_val_acc = state["best_val_acc"]
        self.best_epoch = state["best_epoch"]
        self.alarm_threshold = state["alarm_threshold"]
        self.alarm_off_threshold = state["alarm_off_threshold"]
        self.history = {key: list(state[key]) for key in HISTORY_KEYS}

    # --------------------------------------------------------------------- bookkeeping
    @property
    def mid_epoch(self) -> bool:
        """True when the current epoch has begun (a resume continues inside it)."""
        return self.samples_in_epoch > 0

    def restart_epoch(self) -> None:
        """Forget the position inside the current epoch: it is trained from its start."""
        self.samples_in_epoch = 0
        self.sums.zero_()

    def add_step(self, step_sums: torch.Tensor, clips: int) -> None:
        """Count one optimizer step over `clips` clips whose [loss sum, correct, seen] are
        `step_sums`."""
        self.sums += step_sums
        self.global_step += 1
        self.samples_in_epoch += clips

    def end_epoch(self, train_loss: float, train_acc: float, val_loss: float, val_acc: float,
                  lr: float, seconds: float, alarm_threshold: float | None = None,
                  alarm_off_threshold: float | None = None) -> bool:
        """Close the epoch with its metrics. Returns whether it is the best so far: its
        validation accuracy beats the best, or equals it at a lower validation loss (a small
        validation set often scores 100% for many epochs while the loss still falls; the
        first of them is seldom the model that does best on unseen subjects)."""
        self.alarm_threshold = alarm_threshold
        self.alarm_off_threshold = alarm_off_threshold
        for key, value in zip(HISTORY_KEYS, (train_loss, val_loss, train_acc, val_acc, lr,
                                             seconds)):
            self.history[key].append(value)
        self.epoch += 1
        self.restart_epoch()
        self.val_acc = val_acc
        is_best = improves(val_acc, val_loss, self.best_val_acc, self._best_val_loss())
        if is_best:
            self.best_val_acc, self.best_epoch = val_acc, self.epoch
        return is_best

    def was_best(self, epoch: int) -> bool:
        """Whether completed `epoch` became the best when it ended. The last one's answer
        is recorded (best_epoch, by whichever code ran it); earlier ones are replayed from
        the histories by end_epoch's rule."""
        if epoch == self.epoch:
            return self.best_epoch == epoch
        accuracies, losses = self.history["val_accuracies"], self.history["val_losses"]
        best, new = (-1.0, math.inf), False
        for acc, loss in zip(accuracies[:epoch], losses[:epoch]):
            new = improves(acc, loss, *best)
            best = (acc, loss) if new else best
        return new

    def _best_val_loss(self) -> float:
        """The validation loss of the best epoch; -inf where the history does not hold it
        (runs from before best_epoch was recorded), so that a tie never replaces it."""
        losses = self.history["val_losses"]
        return losses[self.best_epoch - 1] if 0 < self.best_epoch <= len(losses) else -math.inf


def improves(val_acc: float, val_loss: float, best_acc: float, best_loss: float) -> bool:
    """Whether an epoch scoring (val_acc, val_loss) on validation is a new best: a higher
    accuracy, or the same at a lower loss."""
    return val_acc > best_acc or (val_acc == best_acc and val_loss < best_loss)
