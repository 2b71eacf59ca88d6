"""The evaluation report: `python evaluate.py --model PATH --report DIR` writes into DIR

    metrics.json          the figures evaluate prints (accuracy, per-class precision, recall
                          and F1, specificity and ROC-AUC with drowsy as positive, macro F1,
                          per-subject and frame-level accuracy, confusion matrix)
    confusion_matrix.png  counts and row-normalised shares
    roc.png               ROC curve with its area
    precision_recall.png  precision against recall, with the average precision
    threshold_sweep.csv   what an alarm threshold on P(drowsy) of 0, 0.05, ..., 1 would give
    training_curves.png   loss, accuracy and learning rate of the run, from the checkpoint

With several --model options each model's files go into DIR/<model name>/, and DIR gets
comparison.csv (one row per model), roc_comparison.png (all ROC curves on one plot) and
metrics.json (all models).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from fatigue.checkpoints import run_log
from fatigue.inference.evaluation import PER_CLIP_KEYS
from fatigue.inference.metrics import (average_precision, positive_index, precision_recall_curve,
                                       roc_auc, roc_curve, threshold_sweep)

DPI = 90  # small PNGs: a report is read on screen


def _pyplot():
    # Lazy: pyplot is slow to import and only a --report draws; evaluate.py without
    # --report never pays for it.
    import matplotlib
    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt
    return plt


def scores_of(r: dict) -> tuple[np.ndarray, np.ndarray]:
    """(is positive [N] bool, P(positive) [N]) of one evaluate_checkpoint result."""
    pos = positive_index(r["classes"])
    probs = np.asarray(r["probabilities"], dtype=np.float64).reshape(len(r["labels"]), -1)
    return np.asarray(r["labels"]) == pos, probs[:, pos] if len(probs) else np.zeros(0)


def _json_ready(value):
    """NaN (an undefined figure) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def figures(r: dict) -> dict:
    """The figures of one result, ready for JSON: per-clip arrays left out, NaN as null."""
    return _json_ready({k: v for k, v in r.items() if k not in PER_CLIP_KEYS})


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


# ----------------------------------------------------------------------------- plots
def plot_confusion(r: dict, path: Path) -> Path:
    """Counts and row-normalised shares, side by side."""
    plt = _pyplot()
    cm = np.asarray(r["confusion_matrix"], dtype=np.float64)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    names = r["classes"]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6))
    for ax, values, title, fmt in ((axes[0], cm, "counts", "{:.0f}"),
                                   (axes[1], shares, "share of the true class", "{:.2f}")):
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)  # same colours in both panels
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center",
                        color="white" if shares[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    fig.suptitle(f"{Path(r['model']).name}: {r['clips']} {r['split']} clips, "
                 f"accuracy {100 * r['accuracy']:.1f}%", fontsize=10)
    return _save(fig, path)


def plot_roc(curves: list[tuple[str, np.ndarray, np.ndarray]], title: str, path: Path) -> Path:
    """ROC curves of (label, is positive, score) triples on one plot."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for label, positive, scores in curves:
        fpr, tpr, _ = roc_curve(positive, scores)
        auc = roc_auc(positive, scores)
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})", drawstyle="default")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xlabel("false-positive rate (1 - specificity)")
    ax.set_ylabel("true-positive rate (recall)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_precision_recall(label: str, positive: np.ndarray, scores: np.ndarray,
                          path: Path) -> Path:
    """Precision against recall, with the average precision and the chance level."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    precision, recall, _ = precision_recall_curve(positive, scores)
    ax.step(np.r_[0.0, recall], np.r_[precision[:1], precision], where="post",
            label=f"{label} (AP {average_precision(positive, scores):.3f})")
    ax.axhline(positive.mean() if len(positive) else 0, color="grey", lw=0.8, ls="--",
               label="chance (share of positives)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("precision-recall", fontsize=10)
    return _save(fig, path)


def plot_history(history: dict, folder: Path) -> Path | None:
    """The run's training curves (run_log's plot), or None when the run has no epoch."""
    epochs = len(history.get("train_losses", []))
    if not epochs:
        return None
    full = {k: list(history.get(k, [])) for k in ("train_losses", "val_losses",
                                                    "train_accuracies", "val_accuracies",
                                                    "learning_rates")}
    for key, values in full.items():  # older checkpoints may lack a series: draw it empty
        if len(values) != epochs:
            full[key] = [float("nan")] * epochs
    run_log.plot_curves(folder, full)
    return folder / run_log.CURVES_FILE


# ----------------------------------------------------------------------------- files
SWEEP_COLUMNS = ("threshold", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall",
                 "specificity", "f1")


def write_sweep(positive: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """threshold_sweep as CSV: what each alarm threshold would catch and let pass."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, SWEEP_COLUMNS)
        writer.writeheader()
        for row in threshold_sweep(positive, scores):
            writer.writerow({k: round(v, 4) if isinstance(v, float) else v
                             for k, v in _json_ready(row).items()})  # undefined: empty
    return path


def write_model_files(r: dict, folder: Path) -> list[Path]:
    """One model's metrics JSON, plots, sweep and training curves in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(r["model"]).name
    positive, scores = scores_of(r)
    (folder / "metrics.json").write_text(json.dumps(figures(r), indent=1))
    written = [folder / "metrics.json", plot_confusion(r, folder / "confusion_matrix.png"),
               plot_roc([(name, positive, scores)], f"ROC, {r['positive_class']} = positive",
                        folder / "roc.png"),
               plot_precision_recall(name, positive, scores, folder / "precision_recall.png"),
               write_sweep(positive, scores, folder / "threshold_sweep.csv")]
    curves = plot_history(r.get("history", {}), folder)
    return written + ([curves] if curves else [])


def model_tags(paths: list[str]) -> list[str]:
    """Short unique folder names: file stems, numbered where two share one."""
    stems = [Path(p).stem for p in paths]
    return [s if stems.count(s) == 1 else f"{i + 1}_{s}" for i, s in enumerate(stems)]


COMPARISON_COLUMNS = ("model", "epoch", "clips", "accuracy", "macro_f1", "roc_auc",
                      "average_precision", "specificity", "recall", "precision",
                      "frame_accuracy")


def write_report(reports: list[dict], out_dir: str | Path) -> list[Path]:
    """Write the report of one or several evaluate_checkpoint results; returns the files
    written, the metrics JSON first."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(reports) == 1:
        return write_model_files(reports[0], out)
    written = [out / "metrics.json", out / "comparison.csv"]
    (out / "metrics.json").write_text(json.dumps([figures(r) for r in reports], indent=1))
    tags = model_tags([r["model"] for r in reports])
    with open(out / "comparison.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, COMPARISON_COLUMNS)
        writer.writeheader()
        for r in reports:
            pos = r["per_class"][r["positive_class"]]
            row = {k: r.get(k) for k in COMPARISON_COLUMNS}
            row.update(recall=pos["recall"], precision=pos["precision"])
            writer.writerow({k: round(v, 4) if isinstance(v, float) else v
                             for k, v in _json_ready(row).items()})  # undefined: empty
    written.append(plot_roc([(tag, *scores_of(r)) for tag, r in zip(tags, reports)],
                            f"ROC of {len(reports)} models, {reports[0]['positive_class']} "
                            f"= positive", out / "roc_comparison.png"))
    for tag, r in zip(tags, reports):
        written += write_model_files(r, out / tag)
    return written
