"""The per-epoch log (JSON lines) and the training-curves plot of a run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from fatigue import files
from fatigue.files import CURVES_FILE, LOG_FILE  # named there: outputs never replace them



def epoch_record(epoch: int, train: dict, val: dict, written: list[str],
                 seconds: float | None, save_seconds: float | None, when: str | None) -> dict:
    """An epoch's line: its metrics, the files its save wrote, its timings (None: unknown)."""
    def rounded(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)
    return {"epoch": epoch, "train_loss": train["loss"], "train_acc": train["accuracy"],
            "val_loss": val["loss"], "val_acc": val["accuracy"], "lr": train["lr"],
            "seconds": rounded(seconds, 3), "train_seconds": rounded(train["seconds"], 3),
            "save_block_seconds": rounded(save_seconds, 4), "clips": train["clips"],
            # trained in train_seconds: fewer than clips in an epoch resumed part-way
            "timed_clips": train.get("timed_clips"), "saved": written, "time": when}


def rebuilt_record(epoch: int, history: dict, written: list[str], clips: int) -> dict:
    """Epoch `epoch`'s line from a checkpoint's histories, as it was first written apart
    from its timings (unknown: None); `written`: the files its save wrote."""
    i, accuracies = epoch - 1, history["val_accuracies"]
    train = {"loss": history["train_losses"][i], "accuracy": history["train_accuracies"][i],
             "lr": history["learning_rates"][i], "seconds": None, "clips": clips}
    val = {"loss": history["val_losses"][i], "accuracy": accuracies[i]}
    return epoch_record(epoch, train, val, written, None, None, None)


def append_epoch(model_dir: str | Path, record: dict) -> None:
    with open(Path(model_dir) / LOG_FILE, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def match_checkpoint(model_dir: str | Path, epoch: int,
                     lost_line: Callable[[int], dict]) -> None:
    """Make the log hold one line for each epoch 1..`epoch`, the epochs of the checkpoint a
    run resumes from. Lines of later epochs go (after a crash or a fallback to an older
    checkpoint those epochs are trained again and logged anew), and so do torn lines and
    repeats. A missing line, lost when the process ended between writing an epoch's
    checkpoint and logging it, is rebuilt by `lost_line(epoch)`."""
    path = Path(model_dir) / LOG_FILE
    text = path.read_text() if path.is_file() else ""
    kept: dict[float, str] = {}
    for line in text.splitlines():
        kept.setdefault(_epoch_of(line), line)
    wanted = "".join((kept.get(e) or json.dumps(lost_line(e))) + "\n" for e in range(1, epoch + 1))
    if wanted != text:
        files.atomic_write_text(path, wanted)


def _epoch_of(line: str) -> float:
    """A log line's epoch; a line torn by a crash in the middle of an append counts as
    beyond any epoch, so it is dropped."""
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def curves_outdated(model_dir: str | Path, latest: Path) -> bool:
    """Whether the curves are missing or older than the run's `latest` checkpoint (their
    last draw was cut short)."""
    curves = Path(model_dir) / CURVES_FILE
    return latest.is_file() and (not curves.is_file()
                                 or curves.stat().st_mtime_ns < latest.stat().st_mtime_ns)


def plot_curves(model_dir: str | Path, history: dict) -> None:
    """Loss, accuracy and learning rate against epoch, continuous across resumes."""
    # Imported here, not at the top: pyplot is heavy and only the plot needs it, and the
    # headless backend must be chosen before pyplot is first imported.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["train_losses"]) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, history["train_losses"], label="train")
    axes[0].plot(epochs, history["val_losses"], label="validation")
    axes[0].set_title("loss")
    axes[1].plot(epochs, [100 * a for a in history["train_accuracies"]], label="train")
    axes[1].plot(epochs, [100 * a for a in history["val_accuracies"]], label="validation")
    axes[1].set_title("accuracy (%)")
    axes[2].plot(epochs, history["learning_rates"])
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    try:
        files.atomic_write(Path(model_dir) / CURVES_FILE,
                           lambda fh: fig.savefig(fh, format="png", dpi=90))
    finally:
        plt.close(fig)
