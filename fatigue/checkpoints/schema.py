"""What a checkpoint holds: the one module that names its keys.

`snapshot()` builds a checkpoint and `restore()` puts one back, written side by side in one
fixed order, so that reading either tells you the other:

    1. model              model_state_dict
    2. optimizer          optimizer_state_dict (restored in its weights' memory layout)
    3. schedule           scheduler_state_dict (rebuilt for a changed --lr or --epochs)
    4. gradient scaler    scaler_state_dict (fp16 only, else None)
    5. training state     epoch, global_step, samples_in_epoch, val_acc, best_val_acc,
                          best_epoch, alarm_threshold and alarm_off_threshold (the alarm's,
                          chosen on that epoch's validation),
                          the histories (HISTORY_KEYS); partial_epoch (each process's
                          running sums); interrupted (the signal that stopped it)
    6. RNG                rng_state (process 0's), rank_rng_states (every process's), world_size
    7. data               data_fingerprint, data_splits, preprocessing (how the face
                          crops were made: detect and export apply the same),
                          data_source (synthetic, nthu, rldd, folders) and data_classes,
                          so that using the model never depends on finding its data set
    8. the run            config, deterministic (whether its steps were bit-exact),
                          pretrained_from (the weights file it started from, or None),
                          warnings, timestamp; the log is cut back to the epoch

Every key sits at the top level of the file, where the documented ones (DOCUMENTED_KEYS)
have always been, so `torch.load(path, weights_only=True)["val_acc"]` keeps working.
Files of an older format are brought to the current one by `upgrade()` when read; a field
added later goes here, with FORMAT_VERSION raised and a step added to `upgrade()`.
This module knows nothing of files: fatigue.checkpoints.store writes and reads them.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Callable, Protocol

import torch

from config import Config
from fatigue import seeds
from fatigue.errors import UserError
from fatigue.training.schedule import rebuild_schedule
from fatigue.text import counted

# 2: alarm_threshold, preprocessing; 3: config's augment_camera; 4: deterministic,
# pretrained_from, and config's deterministic, pretrained, freeze_backbone_epochs;
# 5: data_source, data_classes; 6: alarm_off_threshold
FORMAT_VERSION = 6
# The keys the README documents: every checkpoint has them at its top level.
DOCUMENTED_KEYS = ("epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict",
                   "val_acc", "best_val_acc", "train_losses", "val_losses", "train_accuracies",
                   "val_accuracies", "timestamp", "config")
# Per-epoch histories, one value per completed epoch (the training state keeps them; the
# report and the curves read them under these names).
HISTORY_KEYS = ("train_losses", "val_losses", "train_accuracies", "val_accuracies",
                "learning_rates", "epoch_seconds")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclasses.dataclass
class Trainables:
    """What training changes besides its own position."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None


@dataclasses.dataclass
class RunIdentity:
    """What the run is: its options and the data it trains on."""
    config: Config
    data_fingerprint: str
    data_splits: dict
    warnings: list[str]
    preprocessing: dict | None = None  # face-crop settings of video data (None: drawn faces)
    data_source: str | None = None  # the manifest's source: synthetic, nthu, rldd, folders
    data_classes: list[str] | None = None  # class names, index = label
    deterministic: bool | None = None  # whether its steps are bit-exact (--deterministic)
    pretrained_from: str | None = None  # the weights file the run started from (--pretrained)


# ----------------------------------------------------------------------------- snapshot
def snapshot(parts: Trainables, train: Stateful, run: RunIdentity, rank_sums: list[torch.Tensor],
             rank_rngs: list[dict], interrupted: str | None = None) -> dict:
    """The checkpoint of this moment. `rank_sums` and `rank_rngs` hold every process's
    running sums and RNG states, in rank order."""
    return {
        "format_version": FORMAT_VERSION,
        # 1. model
        "model_state_dict": parts.model.state_dict(),
        # 2. optimizer
        "optimizer_state_dict": parts.optimizer.state_dict(),
        # 3. schedule
        "scheduler_state_dict": parts.scheduler.state_dict(),
        # 4. gradient scaler
        "scaler_state_dict": parts.scaler.state_dict() if parts.scaler else None,
        # 5. training state
        **train.state_dict(),
        "partial_epoch": torch.stack([s.cpu() for s in rank_sums]),
        "interrupted": interrupted,
        # 6. RNG
        "rng_state": rank_rngs[0],
        "rank_rng_states": rank_rngs,
        "world_size": len(rank_rngs),
        # 7. data
        "data_fingerprint": run.data_fingerprint,
        "data_splits": run.data_splits,
        "preprocessing": run.preprocessing,
        "data_source": run.data_source,
        "data_classes": run.data_classes,
        # 8. the run
        "config": run.config.to_dict(),
        "deterministic": run.deterministic,
        "pretrained_from": run.pretrained_from,
        "warnings": run.warnings,
        "timestamp": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


class WeightsMisfit(UserError):
    """A checkpoint's weights that do not fit its config: every process of a run reads the
    same file, so process 0 alone says it."""
    same_in_every_process = True


def load_weights(model: torch.nn.Module, weights: dict, backbone: str, what: str) -> None:
    """Load a checkpoint's `weights` into `model`, built from its config; where they do not
    fit (a file edited, or pieced together from two runs), a UserError names `what` and
    what differs, instead of PyTorch's page of mismatches."""
    misfit = weights_misfit(model.state_dict(), weights)
    if misfit:
        raise WeightsMisfit(f"{what}: its weights do not fit the model its config describes "
                        f"(backbone {backbone}): {misfit}; was the file edited, or written by "
                        f"another program?")
    model.load_state_dict(weights)


def weights_misfit(wanted: dict, given: dict) -> str:
    """How the weights `given` differ from a model's own (`wanted`) in names and shapes;
    "" when they fit."""
    def shape(t: torch.Tensor) -> str:
        return "x".join(map(str, t.shape)) or "a scalar"
    if not isinstance(given, dict) or not all(isinstance(t, torch.Tensor) for t in given.values()):
        return "its model_state_dict is not a table of named tensors"
    missing = [k for k in wanted if k not in given]
    unknown = [k for k in given if k not in wanted]
    reshaped = [k for k in wanted if k in given and wanted[k].shape != given[k].shape]
    said = []
    if missing:
        said.append(f"{counted(len(missing), 'weight')} missing (first: {missing[0]})")
    if unknown:
        said.append(f"{counted(len(unknown), 'weight')} of no part of it (first: {unknown[0]})")
    if reshaped:
        first = reshaped[0]
        said.append(f"{counted(len(reshaped), 'weight')} of another shape (first: {first}, "
                    f"{shape(given[first])} in the file, {shape(wanted[first])} in the model)")
    return "; ".join(said)


# ----------------------------------------------------------------------------- restore
def restore(checkpoint: dict, parts: Trainables, train: Stateful, cfg: Config, rank: int,
            world_size: int, *, fingerprint: str,
            truncate_log: Callable[[int], None] | None = None) -> list[str]:
    """Put `checkpoint` (read through the store, so already upgraded) back into a freshly
    built run, in the order of `snapshot`. `cfg` is the run's config now (the checkpoint's,
    with the options given on resume applied); `fingerprint`, the data set's now (allowed to
    differ: --allow-data-change). Returns notes for the user."""
    notes = []
    # 1. model
    load_weights(parts.model, checkpoint["model_state_dict"], cfg.backbone, "the checkpoint")
    # 2. optimizer, its state in its weights' memory layout (NHWC or not)
    parts.optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    match_layouts(parts.optimizer)
    # 3. schedule, following the config now (a new --lr or --epochs)
    parts.scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
    rebuild_schedule(parts.optimizer, parts.scheduler, cfg)
    # (Not said when no epoch is left to train: the run then only reports it is done.)
    if checkpoint["config"]["num_epochs"] != cfg.num_epochs \
            and checkpoint["epoch"] < cfg.num_epochs:
        notes.append(f"Learning-rate schedule rebuilt for {cfg.num_epochs} epochs: epoch "
                     f"{checkpoint['epoch'] + 1} continues at lr "
                     f"{parts.optimizer.param_groups[0]['lr']:.2e}")
    # 4. gradient scaler
    if parts.scaler is not None and checkpoint["scaler_state_dict"]:
        parts.scaler.load_state_dict(checkpoint["scaler_state_dict"])
    # 5. training state; the position inside an epoch only for the same number of processes
    #    and the same data (it counts clips of that data's shuffled order)
    train.load_state_dict(checkpoint)
    if train.mid_epoch and checkpoint["world_size"] != world_size:
        notes.append(f"note: {counted(checkpoint['world_size'], 'process', 'processes')} "
                     f"wrote this checkpoint and "
                     f"{world_size} run now, so epoch {train.epoch + 1} restarts at its beginning "
                     f"(the position inside it does not carry over to another number of processes)")
        train.restart_epoch()
    elif train.mid_epoch and other_data(checkpoint, fingerprint):
        notes.append(f"note: the data set is not the one this checkpoint was written on, so "
                     f"epoch {train.epoch + 1} restarts at its beginning (the position inside "
                     f"it counts clips of the other data set)")
        train.restart_epoch()
    if train.mid_epoch:
        train.sums.copy_(checkpoint["partial_epoch"][rank])
        # 6. RNG, as it was at that step (a new epoch seeds its own)
        seeds.set_rng_state(checkpoint["rank_rng_states"][rank])
    # 7. data: checked by `data_change` before anything is built
    # 8. the run: the log forgets epochs after the checkpoint (they are trained again)
    if truncate_log is not None:
        truncate_log(train.epoch)
    return notes


def other_data(checkpoint: dict, fingerprint: str) -> bool:
    """Whether `fingerprint` names another data set than the checkpoint's (never for a
    checkpoint from before fingerprints)."""
    return checkpoint["data_fingerprint"] not in (None, fingerprint)


def data_change(checkpoint: dict, fingerprint: str) -> str | None:
    """How the data set differs from the checkpoint's, or None when it is the same (or the
    checkpoint does not record it)."""
    if not other_data(checkpoint, fingerprint):
        return None
    return (f"data set changed on resume at epoch {checkpoint['epoch']}: "
            f"{checkpoint['data_fingerprint']} -> {fingerprint}")


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give restored optimizer state its weight's memory layout (NHWC or not), which the
    batched update kernels expect; the values are unchanged."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


# ----------------------------------------------------------------------------- older files
def problem(checkpoint: object) -> str | None:
    """Why `checkpoint` (as loaded) cannot be used by this version, or None."""
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
        return "is not a checkpoint of this training suite (no model_state_dict)"
    if checkpoint.get("format_version", 0) > FORMAT_VERSION:
        return (f"was written by a newer version of this suite (format "
                f"{checkpoint['format_version']}); update the code")
    missing = [k for k in DOCUMENTED_KEYS if k not in checkpoint]
    if missing:
        return f"lacks {', '.join(missing)}: not a full training checkpoint"
    return None


def upgrade(checkpoint: dict) -> dict:
    """Bring a checkpoint of an older format to the current one, in place; its training
    continues as it would have. Format 0 (before versions) held the documented keys only."""
    if checkpoint.get("format_version", 0) < 1:
        checkpoint.setdefault("best_epoch", 0)
        checkpoint.setdefault("global_step", 0)
        checkpoint.setdefault("samples_in_epoch", 0)
        checkpoint.setdefault("partial_epoch", torch.zeros(1, 3, dtype=torch.float64))
        checkpoint.setdefault("interrupted", None)
        checkpoint.setdefault("scaler_state_dict", None)
        for key in HISTORY_KEYS:  # unknown for the epochs done: NaN, one per epoch
            checkpoint.setdefault(key, [float("nan")] * len(checkpoint["train_losses"]))
        checkpoint.setdefault("rank_rng_states", [checkpoint["rng_state"]]
                              if "rng_state" in checkpoint else [])
        checkpoint.setdefault("world_size", 1)
        checkpoint.setdefault("data_fingerprint", None)
        checkpoint.setdefault("data_splits", {})
        checkpoint.setdefault("warnings", [])
        checkpoint["format_version"] = 1
    if checkpoint["partial_epoch"].dim() == 1:  # one process's sums, not yet one row each
        checkpoint["partial_epoch"] = checkpoint["partial_epoch"].unsqueeze(0)
    if checkpoint["format_version"] < 2:
        # Unknown for older files: detect and export keep what they did for them (the
        # data set's manifest, else prepare's defaults, and the default alarm).
        checkpoint.setdefault("alarm_threshold", None)
        checkpoint.setdefault("preprocessing", None)
        checkpoint["format_version"] = 2
    if checkpoint["format_version"] < 3:
        # Camera jitter came later: a run started before it goes on without it, so that it
        # resumes exactly as it would have.
        checkpoint["config"].setdefault("augment_camera", "no")
        checkpoint["format_version"] = 3
    if checkpoint["format_version"] < 4:
        # auto reproduces what older code did: nothing forced on the CPU, where it was exact,
        # and cuDNN autotuning on a GPU. Whether its steps were exact is not recorded.
        checkpoint["config"].setdefault("deterministic", "auto")
        checkpoint.setdefault("deterministic", None)
        # Pretrained weights came later: older runs started from random weights.
        checkpoint["config"].setdefault("pretrained", "none")
        checkpoint["config"].setdefault("freeze_backbone_epochs", 0)
        checkpoint.setdefault("pretrained_from", None)
        checkpoint["format_version"] = 4
    if checkpoint["format_version"] < 5:
        # Unknown for older files: detect and export read them from the data set's manifest
        # when that is the one the model trained on (its fingerprint says so).
        checkpoint.setdefault("data_source", None)
        checkpoint.setdefault("data_classes", None)
        checkpoint["format_version"] = 5
    if checkpoint["format_version"] < 6:
        # Not chosen then: the alarm's off-threshold follows its on-threshold, as it did.
        checkpoint.setdefault("alarm_off_threshold", None)
        checkpoint["format_version"] = 6
    return checkpoint
