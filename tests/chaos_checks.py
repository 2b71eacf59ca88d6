"""What a chaos life (tests/chaos.py) must end with: the uninterrupted reference run's
checkpoints, bit for bit, its log lines (timings aside), curves and data, and the earlier
run's files in archive/."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

TIMING_FIELDS = {"seconds", "train_seconds", "save_block_seconds", "timed_clips", "time"}
HISTORIES = ("train_losses", "val_losses", "train_accuracies", "val_accuracies",
             "learning_rates")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_checkpoint(a: dict, b: dict) -> str | None:
    """Why two checkpoints of the same moment differ, or None (timestamps aside)."""
    for key in ("epoch", "global_step", "samples_in_epoch", "best_val_acc", "best_epoch",
                "val_acc", *HISTORIES):
        if a[key] != b[key]:
            return key
    for part in ("model_state_dict", "optimizer_state_dict", "scheduler_state_dict"):
        flat_a, flat_b = flatten(a[part]), flatten(b[part])
        if flat_a.keys() != flat_b.keys():
            return part
        for key, value in flat_a.items():
            other = flat_b[key]
            if isinstance(value, torch.Tensor):
                if not torch.equal(value, other):
                    return f"{part} {key}"
            elif value != other:
                return f"{part} {key}"
    return None


def flatten(obj: object, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in flatten(value, f"{prefix}{i}.").items()}
    return {prefix: obj}


def log_lines(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS}
            for line in path.read_text().splitlines()]


def check_life(cwd: Path, reference: Path, old_run: dict[str, str], data: bool) -> list[str]:
    """What differs between a life's end and the reference run's; empty when all is well."""
    models, ref = cwd / "models", reference / "models"
    problems = []
    ref_files = sorted(p.name for p in ref.glob("*.pth"))
    files = sorted(p.name for p in models.iterdir() if p.is_file() and p.name != ".claim"
                   and not p.name.endswith((".jsonl", ".png")))
    if files != ref_files:
        problems.append(f"files {files}, the reference has {ref_files}")
    for name in ref_files:
        if (models / name).is_file():
            why = same_checkpoint(load(models / name), load(ref / name))
            if why:
                problems.append(f"{name} differs from the reference in {why}")
    lines = log_lines(models / "training_log.jsonl") if (models / "training_log.jsonl").exists() else []
    epochs = [line["epoch"] for line in lines]
    if len(epochs) != len(set(epochs)):
        problems.append(f"log lines twice: epochs {epochs}")
    if lines != log_lines(ref / "training_log.jsonl"):
        problems.append(f"training_log.jsonl differs from the reference (epochs {epochs})")
    for name in ["training_curves.png"] + (["data/clips.npy", "data/manifest.json"] if data else []):
        here, there = cwd / ("" if "/" in name else "models") / name, \
            reference / ("" if "/" in name else "models") / name
        if not here.is_file() or sha(here) != sha(there):
            problems.append(f"{name} is missing or differs from the reference's")
    # Files (a TensorBoard folder, when the package is installed, holds wall-clock times).
    archived = {(p.name, sha(p)) for p in (models / "archive").glob("*/*") if p.is_file()}
    missing = set(old_run.items()) - archived
    if missing:
        problems.append(f"the earlier run's {sorted(n for n, _ in missing)} are not in archive/")
    if archived - set(old_run.items()):
        problems.append(f"archive/ holds files not of the earlier run: "
                        f"{sorted(n for n, _ in archived - set(old_run.items()))}")
    return [f"{cwd.name}: {p}" for p in problems]
