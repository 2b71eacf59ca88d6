"""Running a trained model on clips: loading a checkpoint's model, predicting a split's
logits, and scoring a checkpoint on a split (what evaluate.py prints and report.py draws).

The training loop validates with `predict` and scores its best model with
`evaluate_checkpoint`; evaluate.py, detection and export load models with `load_model`.
The figures themselves are computed by metrics.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

from config import Config
from fatigue.data.clip_store import data_fingerprint, dataset_exists, load_manifest
from fatigue.data.video import crop_settings
from fatigue import allocator
from fatigue.errors import UserError
from fatigue.files import MANIFEST_FILE
from fatigue.data.clips import ClipDataset
from fatigue.checkpoints.store import CheckpointError, load_checkpoint
from fatigue.checkpoints.schema import HISTORY_KEYS, load_weights, other_data
from fatigue.data.augment import to_model_input
from fatigue.inference.metrics import classification_report, frame_accuracy
from fatigue.text import agree, counted, first_few
# Aliased: predict's `autocast_dtype` parameter (a dtype, its name kept for callers) would
# shadow the function.
from model import autocast_dtype as amp_dtype_for, build_model, pick_device

# Bulky per-clip keys of evaluate_checkpoint's result, left out of printed and JSON summaries.
PER_CLIP_KEYS = ("labels", "probabilities", "history")


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
            clips = to_model_input(clips, None, image_size or clips.shape[-1])
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(clips)
        logits.append(out.float().cpu())
        labels.append(torch.as_tensor(y))
    if not logits:
        return torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """A checkpoint's model, rebuilt from its own config, in eval mode on the CPU, and the
    checkpoint itself. Loaded only through checkpoints.store.load_checkpoint (safe, verified)."""
    state = load_checkpoint(path)
    cfg = Config.from_dict(state["config"])
    model = build_model(cfg)
    load_weights(model, state["model_state_dict"], cfg.backbone, str(path))
    return model.eval(), state


def evaluate_checkpoint(path: str | Path, data_dir: str | None = None, device: str = "auto",
                        split: str = "test", batch_size: int = 64,
                        model: nn.Module | None = None) -> dict:
    """Rebuild a checkpoint's model from its own config and score it on a split. `model`:
    an already built one of that config (the training run's own) takes the weights instead.

    Returns classification_report(...) plus per-subject and (NTHU) frame-level accuracy,
    the checkpoint's epoch and validation accuracy, and for plots (report.py): the class
    names, the per-clip `labels` and softmax `probabilities`, and the training `history`."""
    if model is None:
        model, state = load_model(path)
    else:
        state = load_checkpoint(path)
        load_weights(model, state["model_state_dict"], state["config"].get("backbone"), str(path))
    cfg = Config.from_dict(state["config"])
    data_dir = data_to_score(path, cfg, data_dir)
    stored = load_manifest(data_dir)["clip_shape"][0]
    if cfg.sequence_length > stored:  # in the model's terms: evaluate has no such option
        raise UserError(f"{path} sees clips of {cfg.sequence_length} frames and those in "
                        f"{data_dir}/ have {stored}: give --data-dir a data set prepared with "
                        f"--sequence-length {cfg.sequence_length} or more")
    try:
        data = ClipDataset(data_dir, split, cfg.sequence_length, cfg.image_size, cfg.channels)
    except UserError as err:
        raise UserError(f"{path} does not fit the data in {data_dir}/: {err}") from None
    classes = data.manifest["classes"]
    if len(classes) != cfg.num_classes:
        raise CheckpointError(f"{path} predicts {cfg.num_classes} classes, the data set in "
                              f"{data_dir}/ has {len(classes)}; evaluate on matching data")
    trained = list(state["data_classes"] or classes)
    if trained != list(classes) and sorted(trained) == sorted(classes):
        raise UserError(f"the data set in {data_dir}/ numbers its classes {', '.join(classes)}"
                        f" and {path} {', '.join(trained)}: scored, every label would be read "
                        f"as another class; evaluate on data prepared with the model's classes")
    dev = pick_device(device)
    allocator.keep_freed_memory(dev)  # batches of clips reuse the same memory (on the CPU)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    logits, labels = predict(model.to(dev), loader, dev, amp_dtype_for(cfg.amp, dev))
    report = classification_report(logits, labels, classes)
    correct = (logits.argmax(1) == labels).numpy()
    subjects = np.array(data.subjects)
    report["per_subject"] = {s: float(correct[subjects == s].mean())
                             for s in sorted(set(data.subjects))}
    # The model saw the centred sequence_length frames of each stored clip (ClipDataset).
    offset = (data.clips.shape[1] - cfg.sequence_length) // 2
    records = [data.manifest["clips"][i] for i in data.rows]
    report["per_nthu_set"] = per_nthu_set(records, correct)
    per_frame = [r.get("frame_labels") for r in records]
    report["frame_accuracy"] = frame_accuracy(
        logits.argmax(1).numpy(), per_frame,
        [slice(offset, offset + cfg.sequence_length)] * len(records))
    report["frame_labelled_clips"] = sum(digits is not None for digits in per_frame)
    fingerprint = data_fingerprint(data.manifest)
    report.update(model=str(path), epoch=state["epoch"], val_acc=state["val_acc"],
                  data_dir=str(data_dir), split=split, classes=list(classes),
                  data_warning="; ".join(filter(None, (
                      data_rebuilt(state, fingerprint, data_dir, cfg.data_dir),
                      crops_differ(state, data.manifest, data_dir),
                      kind_differs(state, data.manifest, data_dir),
                      subjects_seen(state, set(data.subjects), split)
                      if same_people(state, fingerprint, cfg.data_dir) else None,
                      classes_renamed(trained, list(classes), data_dir)))) or None,
                  labels=labels.tolist(), probabilities=torch.softmax(logits, 1).tolist(),
                  history={k: list(state[k]) for k in HISTORY_KEYS})  # the report's curves
    return report


def data_to_score(path: str | Path, cfg: Config, data_dir: str | None) -> str:
    """The data set folder to score on (`data_dir`, else the one the model trained on);
    refused in one line when it holds none."""
    if data_dir is None and not dataset_exists(cfg.data_dir):
        raise UserError(f"the data set {path} trained on ({cfg.data_dir}/, as its training "
                        f"command named it, from the folder it ran in) is not here; give its "
                        f"folder with --data-dir")
    if data_dir is not None and not dataset_exists(data_dir):
        found = (f"{data_dir} is a file, not a data set folder" if Path(data_dir).is_file()
                 else f"no data set in {data_dir}/ (no {MANIFEST_FILE})")
        raise UserError(f"{found}: give --data-dir a folder that dataset.py or prepare wrote")
    return data_dir or cfg.data_dir


def per_nthu_set(records: list[dict], correct: np.ndarray) -> dict:
    """Accuracy and clips of each NTHU-DDD set among the scored clips (papers report the
    evaluation set's apart): data prepared from it records each clip's set; {} otherwise."""
    sets = np.array([r.get("nthu_set", "") for r in records])
    return {name: {"accuracy": float(correct[sets == name].mean()),
                   "clips": int((sets == name).sum())} for name in sorted(set(sets) - {""})}


def same_people(state: dict, now: str, trained_on: str | Path) -> bool:
    """Whether the data scored (fingerprint `now`) holds the people of the model's training
    data under the same names: the very data set, or the one a cross-validation fold's data
    was cut from (its manifest names it). Another data set may reuse names (s03, 001) for
    other people."""
    if now == state["data_fingerprint"]:
        return True
    if not dataset_exists(trained_on):
        return False
    origin = load_manifest(trained_on).get("cross_validation") or {}
    return origin.get("source_fingerprint") == now


def subjects_seen(state: dict, subjects: set[str], split: str) -> str | None:
    """A warning when subjects of the split scored were among those the model trained on
    (a cross-validation fold scored on the data set's own test split, a data set whose
    splits were made otherwise): its figures are then optimistic. None when none were, or
    the checkpoint has no record of its splits."""
    seen = sorted(subjects & set((state.get("data_splits") or {}).get("train", [])))
    if not seen or split == "train":
        return None
    return (f"{counted(len(seen), 'subject')} of this {split} split ({first_few(seen)}) "
            f"{agree(len(seen), 'was', 'were')} among the subjects this model trained on: its "
            f"figures are optimistic (a cross-validation fold scores on its own folder's test "
            f"split)")


def classes_renamed(trained: list[str], here: list[str], data_dir: str | Path) -> str | None:
    """A warning when the data set names its classes otherwise than the model's data did
    (their order is taken as their meaning)."""
    if trained == here:
        return None
    return (f"the data set in {data_dir}/ names its classes {', '.join(here)}, the model's "
            f"{', '.join(trained)}: taken as the same, in that order")


def crops_differ(state: dict, manifest: dict, data_dir: str | Path) -> str | None:
    """A warning when the clips were cut otherwise than the model's training clips (another
    frame rate, crop region, normalisation...): scored on them, the model is not scored on
    what detect feeds it. None when they match, or either side has no record."""
    trained, here = state["preprocessing"], crop_settings(manifest)
    if not trained or not here:
        return None
    differ = [f"{k} {here[k]} (trained on {trained[k]})" for k in sorted(trained)
              if k in here and here[k] != trained[k]]
    return (f"the clips in {data_dir}/ were cut otherwise than this model's training clips: "
            + ", ".join(differ) + "; detect would crop as in training") if differ else None


def kind_differs(state: dict, manifest: dict, data_dir: str | Path) -> str | None:
    """A warning when the model trained on the built-in drawn faces and is scored on face
    crops of videos, or the reverse: its figures then say little of either. None when both
    are of one kind, or the checkpoint does not record its data's source."""
    trained, here = state["data_source"], manifest.get("source")
    if not trained or not here or (trained == "synthetic") == (here == "synthetic"):
        return None
    kinds = {True: "the built-in drawn faces", False: "face crops of videos"}
    return (f"this model trained on {kinds[trained == 'synthetic']} and the clips in "
            f"{data_dir}/ are {kinds[here == 'synthetic']}: its figures here say little")


def data_rebuilt(state: dict, now: str, data_dir: str | Path,
                 trained_on: str | Path) -> str | None:
    """A warning when the folder the model trained on holds another data set now (its
    fingerprint `now`; prepared or generated again): its held-out split may then hold clips
    the model trained on. None when the data is the same, is another folder, or the
    checkpoint predates the fingerprint."""
    saved = state["data_fingerprint"]
    if not other_data(state, now) or Path(data_dir).resolve() != Path(trained_on).resolve():
        return None
    return (f"{data_dir}/ holds another data set than the one this model trained on (data "
            f"fingerprint {now}, the checkpoint's {saved}): made again since, or another "
            f"project's; its clips may include ones the model trained on (give --data-dir to "
            f"choose the data)")
