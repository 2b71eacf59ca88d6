"""The per-epoch log (JSON lines) and the training-curves plot of a run."""
from __future__ import annotations

import json
from pathlib import Path

from fatigue import files

LOG_FILE = "training_log.jsonl"
CURVES_FILE = "training_curves.png"


def append_epoch(model_dir: str | Path, record: dict) -> None:
    with open(Path(model_dir) / LOG_FILE, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def truncate_after(model_dir: str | Path, epoch: int) -> None:
    """Drop log lines of epochs after `epoch`: after a crash or a fallback to an older
    checkpoint those epochs are trained again and logged anew."""
    path = Path(model_dir) / LOG_FILE
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if _epoch_of(line) <= epoch]
    files.atomic_write_text(path, "".join(line + "\n" for line in kept))


def _epoch_of(line: str) -> float:
    """A log line's epoch; a line torn by a crash in the middle of an append counts as
    beyond any epoch, so it is dropped."""
    try:
        return json.loads(line)["epoch"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


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
