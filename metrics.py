"""Predictions and classification metrics, shared by validation and evaluate.py."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable, device: torch.device,
            autocast_dtype: torch.dtype | None = None,
            image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, K] (float32, on the CPU) and labels [N] for every clip in `batches`
    (float clips, or raw uint8 ones that are converted on the device)."""
    model.eval()
    logits, labels = [], []
    for batch in batches:
        clips, y = batch[0].to(device, non_blocking=True), batch[-1]
        if clips.dtype == torch.uint8:  # a raw ClipDataset: convert on the device
            from dataset import to_model_input
            clips = to_model_input(clips, None, image_size or clips.shape[-1])
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(clips)
        logits.append(out.float().cpu())
        labels.append(torch.as_tensor(y))
    if not logits:
        return torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    if len(labels) == 0:
        return float("nan"), float("nan")
    loss = F.cross_entropy(logits, labels).item()
    acc = (logits.argmax(1) == labels).float().mean().item()
    return loss, acc


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def classification_report(logits: torch.Tensor, labels: torch.Tensor,
                          class_names: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1, macro F1 and the confusion matrix."""
    y = labels.numpy()
    p = logits.argmax(1).numpy()
    cm = confusion_matrix(y, p, len(class_names))
    per_class = {}
    for k, name in enumerate(class_names):
        tp = cm[k, k]
        precision = tp / cm[:, k].sum() if cm[:, k].sum() else 0.0
        recall = tp / cm[k, :].sum() if cm[k, :].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall),
                           "f1": float(f1), "support": int(cm[k, :].sum())}
    return {"accuracy": float((p == y).mean()) if len(y) else float("nan"),
            "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
            "per_class": per_class, "confusion_matrix": cm.tolist(), "clips": int(len(y))}


def evaluate_checkpoint(path: str | Path, data_dir: str | None = None, device: str = "auto",
                        split: str = "test", batch_size: int = 64) -> dict:
    """Rebuild a checkpoint's model from its own config and score it on a split.

    Returns classification_report(...) plus per-subject accuracy and the checkpoint's
    epoch and validation accuracy."""
    from checkpoint import CheckpointError, load_checkpoint
    from config import Config
    from dataset import ClipDataset
    from model import autocast_dtype, build_model, pick_device

    state = load_checkpoint(path)
    cfg = Config.from_dict(state["config"])
    data_dir = data_dir or cfg.data_dir
    data = ClipDataset(data_dir, split, cfg.sequence_length, cfg.image_size, cfg.channels)
    classes = data.manifest["classes"]
    if len(classes) != cfg.num_classes:
        raise CheckpointError(f"{path} predicts {cfg.num_classes} classes, the data set in "
                              f"{data_dir}/ has {len(classes)}; evaluate on matching data")
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model_state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit the model its config "
                              f"describes ({str(err).splitlines()[0][:120]})") from None
    dev = pick_device(device)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    logits, labels = predict(model.to(dev), loader, dev, autocast_dtype(cfg.amp, dev))
    report = classification_report(logits, labels, classes)
    correct = (logits.argmax(1) == labels).numpy()
    subjects = np.array(data.subjects)
    report["per_subject"] = {s: float(correct[subjects == s].mean())
                             for s in sorted(set(data.subjects))}
    report.update(model=str(path), epoch=state["epoch"], val_acc=state["val_acc"],
                  data_dir=str(data_dir), split=split)
    return report
