"""Every random stream of a run, derived from the run's --seed in one place.

Each function reproduces the exact values the suite has always used, so that runs and
checkpoints made before this module existed resume bit-identically. A stream depends only
on (seed, epoch, rank), never on what ran before: a resumed run draws the same numbers."""
from __future__ import annotations


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


def step_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """torch's global seed at the start of an epoch (dropout and the like), per process."""
    return seed * 100_003 + epoch + 1_000_003 * rank
