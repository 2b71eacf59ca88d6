"""The training Dataset (ClipDataset) and the data command line.

    python dataset.py --synthetic [--data-dir DIR] [--num-subjects N] [--clips-per-subject N] [--seed N]
    python dataset.py --synthetic --as-videos [--layout {folders,nthu}] [--data-dir DIR]
    python dataset.py --prepare SOURCE --format {nthu,rldd,folders} [--data-dir DIR] ...

The storage format is fatigue.data.clip_store's; augmentation is fatigue.data.augment's,
and the training loaders are in fatigue.data.loaders.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

import prepare
from fatigue.claim import CLAIM_FILE, FolderClaim, add_claim_args
from fatigue.data import augment as augmentation  # `augment` is ClipDataset's flag
from fatigue.data import clip_store, synthetic, synthetic_videos
from fatigue.errors import UserError, run_cli

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
        self.clips = clip_store.open_clips(data_dir)
        self.rows = [i for i, c in enumerate(self.manifest["clips"]) if c["split"] == split]
        self.labels = [self.manifest["clips"][i]["label"] for i in self.rows]
        self.subjects = [self.manifest["clips"][i]["subject"] for i in self.rows]
        stored_t, stored_c = self.clips.shape[1], self.clips.shape[2]
        if sequence_length > stored_t:
            raise UserError(f"--sequence-length {sequence_length} is longer than the stored "
                            f"clips ({stored_t} frames); use at most {stored_t} or rebuild the data")
        if channels != stored_c:
            raise UserError(f"--channels {channels} does not match the data set "
                            f"({stored_c} channel{'s' if stored_c > 1 else ''})")
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--prepare" in argv or any(a.startswith("--prepare=") for a in argv):
        return prepare.main(argv)  # real videos (python dataset.py --prepare X --help)
    parser = argparse.ArgumentParser(
        description="Make the clip data set that training reads: the built-in synthetic one "
                    "(--synthetic), or one prepared from driver videos (--prepare SOURCE "
                    "--format {nthu,rldd,folders}; 'python dataset.py --prepare X --help' "
                    "lists its options).",
        epilog="Examples: python dataset.py --synthetic --data-dir data;  python dataset.py "
               "--synthetic --as-videos --data-dir videos && python dataset.py --prepare videos "
               "--format folders --data-dir data/videos")
    parser.add_argument("--synthetic", action="store_true",
                        help="write the built-in synthetic data set")
    parser.add_argument("--as-videos", action="store_true",
                        help="with --synthetic: write video files of an animated real face "
                             "instead, to be turned into clips by --prepare")
    parser.add_argument("--layout", choices=("folders", "nthu"), default="folders",
                        help="with --as-videos: the folder layout to write (default: folders)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="output folder (default: data)")
    parser.add_argument("--num-subjects", type=int, default=None,
                        help="synthetic subjects (default: 16 for clips, 6 for videos); "
                             "split by subject into train/val/test")
    parser.add_argument("--clips-per-subject", type=int, default=40,
                        help="synthetic clips per subject, half alert, half drowsy (default: 40)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    parser.add_argument("--image-size", type=int, default=32, help="frame side (default: 32)")
    parser.add_argument("--sequence-length", type=int, default=30,
                        help="frames per clip (default: 30)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite a data set already in --data-dir")
    add_claim_args(parser, "--data-dir")
    args = parser.parse_args(argv)
    if not args.synthetic:
        parser.error("say what to make: --synthetic, or --prepare SOURCE --format FORMAT")
    num_subjects = args.num_subjects or (6 if args.as_videos else 16)
    if not args.as_videos and (num_subjects < 3 or args.clips_per_subject < 2
                               or args.sequence_length < 16):
        raise UserError("need --num-subjects of at least 3 (train, val and test each get one), "
                        "--clips-per-subject of at least 2 and --sequence-length of at least 16")
    # Checked and written under the folder's claim: no other command writes it meanwhile.
    with FolderClaim(args.data_dir, wait=args.wait, break_claim=args.break_claim,
                     option="--data-dir"):
        out = Path(args.data_dir)
        if args.as_videos:
            if any(p.name != CLAIM_FILE for p in out.iterdir()) and not args.force:
                raise UserError(f"{out}/ is not empty; add --force to write into it anyway or "
                                f"choose another --data-dir")
            print(synthetic_videos.write_videos(out, layout=args.layout,
                                                num_subjects=num_subjects, seed=args.seed))
            return 0
        if clip_store.dataset_exists(out) and not args.force:
            raise UserError(f"{out}/ already holds a data set; add --force to replace it "
                            f"or choose another --data-dir")
        print(synthetic.generate(out, seed=args.seed, num_subjects=num_subjects,
                                 clips_per_subject=args.clips_per_subject,
                                 image_size=args.image_size, sequence_length=args.sequence_length))
    return 0

if __name__ == "__main__":
    run_cli(main)
