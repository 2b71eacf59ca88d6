"""Every random stream of a run, derived from the run's --seed in one place.

Each function reproduces the exact values the suite has always used, so that runs and
checkpoints made before this module existed resume bit-identically. A stream depends only
on (seed, epoch, rank), never on what ran before: a resumed run draws the same numbers."""
from __future__ import annotations

import random

import numpy as np
import torch


def model_init_seed(seed: int) -> int:
    """torch's global seed when the model's weights are initialised."""
    return seed


def loader_seed(seed: int) -> int:
    """The DataLoader's own generator (worker seeds), so it never draws from the global RNG."""
    return seed


def shuffle_seed(seed: int, epoch: int) -> int:
    """The epoch's clip order (EpochSampler)."""
    return seed * 7919 + epoch


def augmentation_entropy(seed: int, epoch: int) -> list[int]:
    """numpy entropy of the epoch's augmentation plan (row i for clip i); numpy needs it >= 0."""
    return [seed % 2**64, epoch]


def camera_jitter_entropy(seed: int, epoch: int) -> list[int]:
    """numpy entropy of the epoch's camera jitter plan (its own stream: the rest of the
    augmentation plan draws the same numbers with or without it)."""
    return [seed % 2**64, epoch, 1]


def fold_deal_entropy(seed: int) -> list[int]:
    """numpy entropy of a cross-validation study's deal of subjects into folds."""
    return [seed % 2**64, 0x6376]  # "cv": its own stream of the run's --seed


def step_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """torch's global seed at the start of an epoch (dropout and the like), per process."""
    return seed * 100_003 + epoch + 1_000_003 * rank


def rng_state() -> dict:
    """Every global RNG state of this process, as tensors and plain values (so that a
    checkpoint holding it loads with torch.load(weights_only=True))."""
    np_state = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                      *np_state[2:]],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Put back what `rng_state` captured."""
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
