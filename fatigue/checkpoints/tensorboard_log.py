"""TensorBoard curves of a run: `tensorboard --logdir models/tensorboard` (the package is in
requirements.txt; an environment without it trains on, with a note).

Every point is written at the run's global step (an epoch's figures at the step that ends
it), so that a resumed run continues the same curves. The writer a resumed run opens tells
TensorBoard to purge the points after the checkpoint's step (written by the process that was
stopped, and written again now), so each step is shown once. Points are flushed before every
checkpoint, so none that a checkpoint covers is lost with the process. The folder lives in
the model folder and moves with the run when a new run archives it.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable

import torch

FOLDER = "tensorboard"


class TensorBoardLog:
    """The writer; a failed write (a full disk, a folder gone) ends the curves with one
    warning and never the training, whose checkpoints say what they say of such a disk."""

    def __init__(self, writer, folder: Path, say: Callable[..., None],
                 restore_hook: Callable[[], None]) -> None:
        self.writer, self.folder, self.say = writer, folder, say
        self.restore_hook = restore_hook
        # Step losses still on the device: read all at once when flushed, so that logging
        # them never makes the loop wait for the GPU.
        self.pending: list[tuple[int, torch.Tensor]] = []

    @classmethod
    def open(cls, model_dir: str | Path, global_step: int, config: dict,
             say: Callable[..., None]) -> "TensorBoardLog | None":
        """The run's writer, continuing after `global_step`; None (and one note) without
        the package."""
        try:
            # Imported when a run starts (its import is not start-up's), and an environment
            # may lack the package.
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            say(f"note: no TensorBoard curves (pip install tensorboard to have them in "
                f"{Path(model_dir) / FOLDER}/); training_log.jsonl and training_curves.png "
                f"are written as always")
            return None
        except Exception as err:  # installed but broken (a protobuf of another version...)
            reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
            say(f"note: no TensorBoard curves: the installed tensorboard does not load "
                f"({reason}); training_log.jsonl and training_curves.png are written as always")
            return None
        folder = Path(model_dir) / FOLDER
        before = set(folder.glob("events.out.tfevents.*"))
        restore_hook = quiet_writer_threads()
        try:
            writer = SummaryWriter(str(folder), purge_step=global_step + 1 if global_step else None)
        except OSError as err:
            for made in set(folder.glob("events.out.tfevents.*")) - before:
                made.unlink(missing_ok=True)  # begun, never written: not a run of its own
            say(cant_write(folder, err), file=sys.stderr, flush=True)
            restore_hook()
            return None
        rows = "\n".join(f"| {key} | {value} |" for key, value in config.items())
        log = cls(writer, folder, say, restore_hook)
        log._guarded(lambda: writer.add_text("config", f"| option | value |\n|---|---|\n{rows}",
                                             global_step))
        return log

    def step(self, global_step: int, loss: torch.Tensor) -> None:
        self.pending.append((global_step, loss.detach()))
        if len(self.pending) >= 100:
            self._guarded(self._write_pending)

    def _write_pending(self) -> None:
        if self.pending:
            values = torch.stack([loss for _, loss in self.pending]).tolist()
            for (step, _), value in zip(self.pending, values):
                self.writer.add_scalar("train/step_loss", value, step)
            self.pending = []

    def epoch(self, global_step: int, epoch: int, train: dict, val: dict) -> None:
        """An epoch's figures, at the step that ends it; flushed."""
        figures = {"train/loss": train["loss"], "train/accuracy": train["accuracy"],
                   "val/loss": val["loss"], "val/accuracy": val["accuracy"],
                   "learning_rate": train["lr"], "epoch": epoch,
                   "throughput/clips_per_second": train["timed_clips"] / max(train["seconds"], 1e-9)}

        def write() -> None:
            for tag, value in figures.items():
                self.writer.add_scalar(tag, value, global_step)
        self._guarded(write)
        self.flush()

    def flush(self) -> None:
        self._guarded(lambda: (self._write_pending(), self.writer.flush()))

    def close(self) -> None:
        self._guarded(lambda: (self._write_pending(), self.writer.close()))
        self.restore_hook()  # the writer's thread has ended

    def _guarded(self, write: Callable[[], object]) -> None:
        """`write`, unless an earlier one failed; a failure says so once and ends the curves."""
        if self.writer is None:
            return
        try:
            write()
        except OSError as err:
            self.writer, self.pending = None, []
            self.say(cant_write(self.folder, err), file=sys.stderr, flush=True)


def cant_write(folder: Path, err: OSError) -> str:
    return (f"warning: TensorBoard curves stop: could not write in {folder}/ "
            f"({err.strerror or err}); training goes on without them")


def quiet_writer_threads() -> Callable[[], None]:
    """TensorBoard writes from a thread of its own, which prints its traceback when a write
    fails, and hands the error to the next flush in the main thread (said there, once).
    Until the returned function is called, its failures are silenced in the thread; any
    other thread's are printed as always."""
    printing = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, OSError)
                and type(args.thread).__module__.startswith("tensorboard.")):
            printing(args)
    threading.excepthook = hook

    def restore() -> None:
        if threading.excepthook is hook:  # not if another hook was set since
            threading.excepthook = printing
    return restore
