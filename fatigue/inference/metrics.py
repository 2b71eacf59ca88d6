"""Classification metrics: pure math on logits, labels and scores, shared by validation,
evaluation (evaluation.py), the report (report.py) and the deployment info (deployment.py).
Running a model to get those logits is evaluation.py's job, not this module's.

ROC, precision-recall and threshold figures treat the class named "drowsy" (else the last
class) as the positive one: the one an alarm should catch. They are computed here with
numpy alone, so the suite does not need scikit-learn.
"""
from __future__ import annotations

import math

import numpy as np
import torch


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
        tp, support, predicted = cm[k, k], int(cm[k, :].sum()), int(cm[:, k].sum())
        # A class absent from the data (a cross-validation fold whose subjects show one
        # class) has no recall or F1: NaN, left out of macro F1 and of means over folds,
        # never a 0 that would read as a model that misses it.
        precision = tp / predicted if predicted else (0.0 if support else math.nan)
        recall = tp / support if support else math.nan
        f1 = (math.nan if not support else
              2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        per_class[name] = {"precision": float(precision), "recall": float(recall),
                           "f1": float(f1), "support": support}
    present = [c["f1"] for c in per_class.values() if c["support"]]
    pos = positive_index(class_names)
    is_pos = y == pos
    scores = torch.softmax(logits.float(), 1)[:, pos].numpy() if len(y) else np.zeros(0)
    # Specificity: the share of not-drowsy clips the model lets pass without an alarm.
    negatives = cm[np.arange(len(class_names)) != pos]
    return {"accuracy": float((p == y).mean()) if len(y) else float("nan"),
            "macro_f1": float(np.mean(present)) if present else math.nan,
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


def alarm_threshold(positive: np.ndarray, scores: np.ndarray, steps: int = 20,
                    lowest: float = 0.3, highest: float = 0.9) -> float:
    """The alarm's on-threshold chosen on validation clips: of the sweep's thresholds in
    [lowest, highest], one that best separates the classes (largest recall minus
    false-positive rate). When several do equally well (validation clips well apart), the
    middle one of them: the widest margin on both sides, where the highest would make the
    alarm wait for a probability the model reaches only seconds into a closure."""
    rows = [r for r in threshold_sweep(positive, scores, steps)
            if lowest - 1e-9 <= r["threshold"] <= highest + 1e-9]
    separation = [np.nan_to_num(r["recall"]) + np.nan_to_num(r["specificity"]) for r in rows]
    best = [r["threshold"] for r, value in zip(rows, separation)
            if value >= max(separation) - 1e-12]
    return round(float(best[(len(best) - 1) // 2]), 4)


HYSTERESIS_GAP = 0.05  # the least an off-threshold chosen on validation lies below the on


def alarm_off_threshold(positive: np.ndarray, scores: np.ndarray, on: float,
                        usual_off: float) -> float:
    """The alarm's off-threshold chosen on validation clips, for the on-threshold `on`:
    `usual_off` (the default's hysteresis below `on`), raised to the upper quartile of the
    alert clips' scores where that is higher, but kept at least HYSTERESIS_GAP below `on`
    (11/14 of an on-threshold of 0.3 or more, the lowest alarm_threshold picks, is). An
    alarm ends when the average falls below the off-threshold, so a model whose open-eye
    windows score above it (a weakly trained one) would keep its alarm on after the eyes
    open, for ever; without a gap, one wavering around `on` would start and end again."""
    alert = scores[~positive.astype(bool)]
    raised = min(float(np.quantile(alert, 0.75)), on - HYSTERESIS_GAP) if len(alert) else 0.0
    return round(max(usual_off, raised), 4)
