"""The training data set: ClipDataset (one split of a clip store, as model input or raw
uint8 clips with their augmentation), and ensure_dataset (the built-in synthetic set, made
when the default data folder is empty).

Training imports this module, not dataset.py (the data command line): what the command
line needs (video generation, preparation) is not loaded into every training run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fatigue.claim import FolderClaim
from fatigue.data import augment as augmentation  # `augment` is ClipDataset's flag
from fatigue.data import clip_store, synthetic
from fatigue.errors import NodeError, UserError
from fatigue.text import counted

DEFAULT_DATA_DIR = "data"


class ClipDataset(Dataset):
    """Clips of one split as (float clip [T, C, H, W] in [0, 1], label).

    Training items are indexed by (index, epoch) pairs from EpochSampler, so that the
    augmentation of every clip is fixed by (seed, epoch, index). With `raw=True` an item
    is (uint8 clip, augmentation parameters, label) instead: the training loop moves the
    uint8 clips (a quarter of the bytes) to its device and turns them into augmented float
    input there with `to_model_input`, the same function this class uses otherwise.
    """

    def __init__(self, data_dir: str | Path, split: str, sequence_length: int,
                 image_size: int, channels: int, augment: bool = False, seed: int = 0,
                 raw: bool = False, camera_jitter: bool = False):
        self.manifest = clip_store.load_manifest(data_dir)
        self.clips = clip_store.open_clips(data_dir, self.manifest)
        self.rows = [i for i, c in enumerate(self.manifest["clips"]) if c["split"] == split]
        self.labels = [self.manifest["clips"][i]["label"] for i in self.rows]
        self.subjects = [self.manifest["clips"][i]["subject"] for i in self.rows]
        stored_t, stored_c = self.clips.shape[1], self.clips.shape[2]
        if sequence_length > stored_t:
            raise NodeError(f"--sequence-length {sequence_length} is longer than the stored "
                            f"clips ({stored_t} frames); use at most {stored_t} or rebuild the data")
        if channels != stored_c:
            raise NodeError(f"--channels {channels} does not match the data set "
                            f"({counted(stored_c, 'channel')})")
        self.sequence_length, self.image_size = sequence_length, image_size
        self.augment, self.seed, self.raw = augment, seed, raw
        self.camera_jitter = camera_jitter  # with augment: each clip through its own camera
        self._plan_key: int | None = None
        self._plan: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def epoch_plan(self, epoch: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Every clip's first frame [N] and augmentation [N, 5] for one epoch (None: for
        evaluation, the centred frames unchanged); see augmentation_plan."""
        key = epoch if self.augment else None
        if self._plan_key == key and self._plan is not None:
            return self._plan  # one plan is kept: a DataLoader asks clip by clip
        extra, n = self.clips.shape[1] - self.sequence_length, len(self)
        if key is None:
            plan = augmentation.centred_plan(n, extra)
        else:
            plan = augmentation.augmentation_plan(self.seed, key, n, extra, self.image_size,
                                                  self.camera_jitter)
        self._plan_key, self._plan = key, plan
        return self._plan

    def __getitem__(self, item: int | tuple[int, int]):
        index, epoch = item if isinstance(item, tuple) else (item, None)
        starts, params = self.epoch_plan(epoch)
        start = int(starts[index])
        stored = self.clips[self.rows[index]]  # uint8 [T_stored, C, H, W], memory-mapped
        clip = torch.from_numpy(np.array(stored[start:start + self.sequence_length]))
        clip_params = torch.from_numpy(params[index].copy())
        if self.raw:
            return clip, clip_params, self.labels[index]
        augmented = self.augment and epoch is not None
        return (augmentation.to_model_input(clip[None], clip_params[None] if augmented else None,
                                            self.image_size)[0], self.labels[index])


def ensure_dataset(data_dir: str, explicitly_given: bool, seed: int, image_size: int,
                   sequence_length: int, channels: int, wait: float = 0.0,
                   break_claim: bool = False) -> None:
    """Make the built-in synthetic data set when the default data folder holds none, holding
    the data folder's claim while writing it (`wait`, `break_claim`: see FolderClaim).

    A folder the user named explicitly is never filled behind their back: a missing data
    set there is an error."""
    if clip_store.dataset_exists(data_dir):
        return
    if explicitly_given:
        clip_store.load_manifest(data_dir)  # raises the explanatory error
    if channels != 1:
        raise UserError("the built-in synthetic data set is grayscale; use --channels 1")
    with FolderClaim(data_dir, wait=wait, break_claim=break_claim, option="--data-dir"):
        if clip_store.dataset_exists(data_dir):
            return  # another command made it while this one waited for the claim
        print(f"No data set in {data_dir}/: making the built-in synthetic one there "
              f"(to train on real videos, see 'python dataset.py --help').", flush=True)
        synthetic.generate(data_dir, seed=seed, image_size=image_size,
                           sequence_length=max(sequence_length, 30))
