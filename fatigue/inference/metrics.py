"""Predictions and classification metrics, shared by validation, evaluate.py, the report
(report.py), live detection (detect.py) and export (export.py).

ROC, precision-recall and threshold figures treat the class named "drowsy" (else the last
class) as the positive one: the one an alarm should catch. They are computed here with
numpy alone, so the suite does not need scikit-learn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn


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


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def positive_index(class_names: list[str]) -> int:
    """The class an alarm is for: 'drowsy' when the data set has it, else the last class
    (RLDD's three classes end with drowsy, too)."""
    return class_names.index("drowsy") if "drowsy" in class_names else len(class_names) - 1


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


# ----------------------------------------------------------------------------- curves
def roc_curve(positive: np.ndarray, scores: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates for every distinct score used as threshold (a clip
    is called positive when its score >= threshold), from (0, 0) to (1, 1).

    Returns (fpr, tpr, thresholds); thresholds[0] is +inf (nothing called positive)."""
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    s, y = np.asarray(scores, dtype=np.float64)[order], positive[order]
    # Ties must move together: only the last index of each run of equal scores is a point.
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, int)
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / max(1, y.sum())]
    fpr = np.r_[0.0, fp / max(1, (~y).sum())]
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); nan when one class is absent."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(positive, scores)
    return float(np.trapezoid(tpr, fpr))


def precision_recall_curve(positive: np.ndarray, scores: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, highest threshold first."""
    positive = np.asarray(positive, dtype=bool)
    fpr, tpr, thresholds = roc_curve(positive, scores)
    tp = tpr[1:] * positive.sum()
    fp = fpr[1:] * (~positive).sum()
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-12), 1.0)
    return precision, tpr[1:], thresholds[1:]


def average_precision(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum (no optimistic interpolation)."""
    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(positive, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def binary_counts(positive: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Counts and rates when clips scoring >= threshold are called positive."""
    positive = np.asarray(positive, dtype=bool)
    called = np.asarray(scores) >= threshold
    tp, fp = int((called & positive).sum()), int((called & ~positive).sum())
    fn, tn = int((~called & positive).sum()), int((~called & ~positive).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "accuracy": _ratio(tp + tn, len(positive)), "precision": precision,
            "recall": recall, "specificity": _ratio(tn, tn + fp),
            "f1": _ratio(2 * precision * recall, precision + recall)}


def threshold_sweep(positive: np.ndarray, scores: np.ndarray, steps: int = 20) -> list[dict]:
    """binary_counts at thresholds 0, 1/steps, ..., 1: the trade-off an alarm is tuned on."""
    return [binary_counts(positive, scores, t) for t in np.linspace(0.0, 1.0, steps + 1)]


# ----------------------------------------------------------------------------- reports
def classification_report(logits: torch.Tensor, labels: torch.Tensor,
                          class_names: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1, macro F1, the confusion matrix, and with
    the drowsy class as positive: specificity, ROC-AUC and average precision."""
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
    pos = positive_index(class_names)
    is_pos = y == pos
    scores = torch.softmax(logits.float(), 1)[:, pos].numpy() if len(y) else np.zeros(0)
    # Specificity: the share of not-drowsy clips the model lets pass without an alarm.
    negatives = cm[np.arange(len(class_names)) != pos]
    return {"accuracy": float((p == y).mean()) if len(y) else float("nan"),
            "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
            "per_class": per_class, "confusion_matrix": cm.tolist(), "clips": int(len(y)),
            "positive_class": class_names[pos],
            "specificity": _ratio(negatives.sum() - negatives[:, pos].sum(), negatives.sum()),
            "roc_auc": roc_auc(is_pos, scores), "average_precision": average_precision(is_pos, scores)}


def frame_accuracy(preds: np.ndarray, frame_labels: list[str | None],
                   windows: list[slice]) -> float | None:
    """Frame-level accuracy (NTHU): every frame a clip's model input holds is scored with
    that clip's prediction against its own label. Frames in two overlapping clips count
    twice, once per clip. None when no clip carries frame labels."""
    correct = total = 0
    for pred, digits, window in zip(preds, frame_labels, windows):
        if digits is None:
            continue
        frames = np.frombuffer(digits.encode(), dtype=np.uint8)[window] - ord("0")
        correct += int((frames == pred).sum())
        total += len(frames)
    return correct / total if total else None


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """A checkpoint's model, rebuilt from its own config, in eval mode on the CPU, and the
    checkpoint itself. Loaded only through checkpoint.load_checkpoint (safe, verified)."""
    from fatigue.checkpoints.store import CheckpointError, load_checkpoint
    from config import Config
    from model import build_model

    state = load_checkpoint(path)
    model = build_model(Config.from_dict(state["config"]))
    try:
        model.load_state_dict(state["model_state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit the model its config "
                              f"describes ({str(err).splitlines()[0][:120]})") from None
    return model.eval(), state


def evaluate_checkpoint(path: str | Path, data_dir: str | None = None, device: str = "auto",
                        split: str = "test", batch_size: int = 64) -> dict:
    """Rebuild a checkpoint's model from its own config and score it on a split.

    Returns classification_report(...) plus per-subject and (NTHU) frame-level accuracy,
    the checkpoint's epoch and validation accuracy, and for plots (report.py): the class
    names, the per-clip `labels` and softmax `probabilities`, and the training `history`."""
    from fatigue.checkpoints.store import CheckpointError
    from config import Config
    from dataset import ClipDataset
    from model import autocast_dtype, pick_device

    model, state = load_model(path)
    cfg = Config.from_dict(state["config"])
    data_dir = data_dir or cfg.data_dir
    data = ClipDataset(data_dir, split, cfg.sequence_length, cfg.image_size, cfg.channels)
    classes = data.manifest["classes"]
    if len(classes) != cfg.num_classes:
        raise CheckpointError(f"{path} predicts {cfg.num_classes} classes, the data set in "
                              f"{data_dir}/ has {len(classes)}; evaluate on matching data")
    dev = pick_device(device)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    logits, labels = predict(model.to(dev), loader, dev, autocast_dtype(cfg.amp, dev))
    report = classification_report(logits, labels, classes)
    correct = (logits.argmax(1) == labels).numpy()
    subjects = np.array(data.subjects)
    report["per_subject"] = {s: float(correct[subjects == s].mean())
                             for s in sorted(set(data.subjects))}
    # The model saw the centred sequence_length frames of each stored clip (ClipDataset).
    offset = (data.clips.shape[1] - cfg.sequence_length) // 2
    records = [data.manifest["clips"][i] for i in data.rows]
    report["frame_accuracy"] = frame_accuracy(
        logits.argmax(1).numpy(), [r.get("frame_labels") for r in records],
        [slice(offset, offset + cfg.sequence_length)] * len(records))
    history_keys = ("train_losses", "val_losses", "train_accuracies", "val_accuracies",
                    "learning_rates")
    report.update(model=str(path), epoch=state["epoch"], val_acc=state["val_acc"],
                  data_dir=str(data_dir), split=split, classes=list(classes),
                  labels=labels.tolist(), probabilities=torch.softmax(logits, 1).tolist(),
                  history={k: list(state.get(k, [])) for k in history_keys})
    return report


# Bulky per-clip keys of evaluate_checkpoint's result, left out of printed and JSON summaries.
PER_CLIP_KEYS = ("labels", "probabilities", "history")
