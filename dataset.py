"""Clip storage, the training Dataset, and the data command line.

Storage (one folder, `data/` by default):
    clips.npy      uint8 array [N, T, C, H, W], memory-mapped at load time
    manifest.json  one record per clip (id, subject, label, split, source, start, ...),
                   the class names, the split's subjects; written last, so its presence
                   marks a complete data set.

Synthetic clips (synthetic.py) and prepared real videos both land in this format, and
the training suite reads nothing else.

    python dataset.py --synthetic [--data-dir DIR] [--num-subjects N] [--clips-per-subject N] [--seed N]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from errors import UserError, run_cli

FORMAT_VERSION = 1
CLIPS_FILE = "clips.npy"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- storage
def dataset_exists(data_dir: str | Path) -> bool:
    return (Path(data_dir) / MANIFEST_FILE).is_file()


def _atomic_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def write_clip_store(data_dir: str | Path, clips: np.ndarray | Iterable[np.ndarray],
                     records: list[dict], meta: dict) -> None:
    """Write a data set.

    Args:
        clips: uint8 [N, T, C, H, W], or an iterable of such blocks whose rows follow
            `records` in order (so big data sets never sit in memory whole).
        records: one dict per clip with at least id, subject, label and split.
        meta: must hold `classes` (names, index = label); anything else is kept as is.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    blocks = [clips] if isinstance(clips, np.ndarray) else clips
    out = None
    row = 0
    tmp = data_dir / (CLIPS_FILE + ".tmp")
    for block in blocks:
        if block.dtype != np.uint8 or block.ndim != 5:
            raise ValueError("clips must be uint8 [N, T, C, H, W]")
        if out is None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                            shape=(len(records),) + block.shape[1:])
        out[row:row + len(block)] = block
        row += len(block)
    if out is None or row != len(records):
        raise ValueError(f"{row} clips written for {len(records)} records")
    out.flush()
    shape = list(out.shape[1:])
    del out
    for rec in records:
        if rec.get("split") not in SPLITS:
            raise ValueError(f"clip {rec.get('id')} has no split")
    manifest = {"format_version": FORMAT_VERSION, "clip_shape": shape, **meta,
                "splits": {s: sorted({r["subject"] for r in records if r["split"] == s})
                           for s in SPLITS},
                "clips": records}
    # The old manifest goes only now, just before its clips are replaced: until here a
    # failure leaves the previous data set whole; after, no manifest marks a half-done one.
    (data_dir / MANIFEST_FILE).unlink(missing_ok=True)
    _atomic_replace(tmp, data_dir / CLIPS_FILE)
    tmp_manifest = data_dir / (MANIFEST_FILE + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=1))
    _atomic_replace(tmp_manifest, data_dir / MANIFEST_FILE)


def load_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / MANIFEST_FILE
    if not path.is_file():
        raise UserError(f"no data set in {data_dir}/ (no {MANIFEST_FILE}); make one with "
                        f"'python dataset.py --synthetic --data-dir {data_dir}' or prepare "
                        f"videos with 'python dataset.py --prepare SOURCE --format "
                        f"{{nthu,rldd,folders}} --data-dir {data_dir}'")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is unreadable ({err}); rebuild the data set") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has format {manifest.get('format_version')}, this code "
                        f"reads {FORMAT_VERSION}; rebuild the data set")
    return manifest


def data_fingerprint(manifest: dict) -> str:
    """Identifies a data set by what training sees: clip ids, subjects, labels, splits, shape."""
    key = [manifest["clip_shape"], manifest["classes"],
           [(c["id"], c["subject"], c["label"], c["split"]) for c in manifest["clips"]]]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def open_clips(data_dir: str | Path) -> np.ndarray:
    path = Path(data_dir) / CLIPS_FILE
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err}); rebuild the data set") from None


# ----------------------------------------------------------------------------- training data
def sample_seed(seed: int, epoch: int, index: int) -> int:
    """One seed per (run seed, epoch, clip): augmentation never depends on the order in
    which clips are drawn or on what ran before, so a resumed run sees the same data."""
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**63)


NO_AUGMENT = (0.0, 0.0, 0.0, 1.0, 0.0)  # flip, shift y, shift x, contrast, brightness


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
                 raw: bool = False):
        self.manifest = load_manifest(data_dir)
        self.clips = open_clips(data_dir)
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

    def __len__(self) -> int:
        return len(self.rows)

    def plan(self, index: int, epoch: int | None) -> tuple[int, tuple[float, ...] | None]:
        """Where the clip's frames start and how it is augmented (None: not at all),
        fixed by (seed, epoch, index)."""
        extra = self.clips.shape[1] - self.sequence_length
        if not (self.augment and epoch is not None):
            return extra // 2, None  # evaluation: the centred frames, unchanged
        rng = np.random.default_rng(sample_seed(self.seed, epoch, index))
        start = int(rng.integers(0, extra + 1)) if extra else 0
        return start, augment_params(rng, self.image_size)

    def __getitem__(self, item: int | tuple[int, int]):
        index, epoch = item if isinstance(item, tuple) else (item, None)
        start, params = self.plan(index, epoch)
        stored = self.clips[self.rows[index]]  # uint8 [T_stored, C, H, W], memory-mapped
        clip = torch.from_numpy(np.array(stored[start:start + self.sequence_length]))
        if self.raw:
            return clip, torch.tensor(params or NO_AUGMENT), self.labels[index]
        return (to_model_input(clip[None], None if params is None else torch.tensor([params]),
                               self.image_size)[0], self.labels[index])


class DeviceClipLoader:
    """Batches cut on the GPU from the whole split held in GPU memory as uint8: what a
    DataLoader does, without per-clip Python work or host-to-device copies on the way.
    Yields what a DataLoader over a raw ClipDataset yields, from the same plan."""

    def __init__(self, dataset: ClipDataset, sampler: EpochSampler, batch_size: int,
                 device: torch.device):
        self.dataset, self.sampler, self.batch_size, self.device = dataset, sampler, batch_size, device
        self.clips = torch.from_numpy(np.asarray(dataset.clips[dataset.rows])).to(device)
        self.labels = torch.tensor(dataset.labels, device=device)

    @staticmethod
    def fits(dataset: ClipDataset, device: torch.device) -> bool:
        """Use it when the split takes at most a quarter of the GPU's free memory."""
        if device.type != "cuda":
            return False
        size = len(dataset) * int(np.prod(dataset.clips.shape[1:]))
        return size <= 0.25 * torch.cuda.mem_get_info(device)[0]

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        items = list(self.sampler)
        plans = [self.dataset.plan(index, epoch) for index, epoch in items]
        index = torch.tensor([i for i, _ in items], device=self.device)
        starts = torch.tensor([start for start, _ in plans], device=self.device)
        params = torch.tensor([p or NO_AUGMENT for _, p in plans], device=self.device)
        frames = torch.arange(self.dataset.sequence_length, device=self.device)
        for b in range(0, len(items), self.batch_size):
            rows = index[b:b + self.batch_size]
            take = (starts[b:b + self.batch_size, None] + frames)  # (B, T): frames to keep
            clips = self.clips[rows[:, None], take]  # (B, T, C, H, W)
            yield clips, params[b:b + self.batch_size], self.labels[rows]


def augment_params(rng: np.random.Generator, image_size: int) -> tuple[float, ...]:
    """One clip's flip, shift (pixels), contrast and brightness, as NO_AUGMENT orders them."""
    shift = max(1, round(0.06 * image_size))
    return (float(rng.random() < 0.5), float(rng.integers(-shift, shift + 1)),
            float(rng.integers(-shift, shift + 1)), rng.uniform(0.75, 1.25),
            rng.uniform(-0.12, 0.12))


def to_model_input(clips: torch.Tensor, params: torch.Tensor | None,
                   image_size: int) -> torch.Tensor:
    """uint8 clips [B, T, C, H, W] -> float [B, T, C, S, S] in [0, 1], each clip with its
    own flip, shift, contrast and brightness applied identically to all its frames.
    Runs wherever the tensors are (on the GPU when training there)."""
    x = clips.float().div_(255.0)
    b, t, c, h, w = x.shape
    if (h, w) != (image_size, image_size):
        x = F.interpolate(x.flatten(0, 1), size=(image_size, image_size), mode="bilinear",
                          align_corners=False).view(b, t, c, image_size, image_size)
    if params is None:
        return x
    # No data-dependent branches below: on a GPU they would stall the CPU every step.
    flip, dy, dx, contrast, brightness = params.to(x.device, torch.float32,
                                                   non_blocking=True).unbind(1)
    x = torch.where(flip.view(b, 1, 1, 1, 1) > 0.5, x.flip(-1), x)
    # A per-clip cyclic shift, as one gather: row r of the output is row (r - dy) of the input.
    pos = torch.arange(image_size, device=x.device)
    rows = (pos[None, :] - dy.long()[:, None]) % image_size  # (B, S)
    cols = (pos[None, :] - dx.long()[:, None]) % image_size
    batch = torch.arange(b, device=x.device)[:, None, None]
    x = x[batch, :, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 4, 1, 2)  # (B,T,C,S,S)
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    shape = (b, 1, 1, 1, 1)
    return ((x - mean) * contrast.view(shape) + mean + brightness.view(shape)).clamp_(0.0, 1.0)


class EpochSampler(Sampler):
    """Shuffled (index, epoch) pairs; the order depends only on (seed, epoch), and
    `start` skips the clips already trained on in a resumed epoch without loading them.

    With several processes (torchrun), process `rank` takes every `world_size`-th clip of
    that order, the order padded by its own first clips to a multiple of `world_size`
    (as DistributedSampler does), so every process runs the same number of steps."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return torch.randperm(self.size, generator=gen).tolist()

    def shard(self) -> list[int]:
        order = self.order()
        padded = order + order[:(-len(order)) % self.world_size]
        return padded[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.epoch) for i in self.shard()[self.start:]])

    def __len__(self) -> int:
        return len(self.shard()) - self.start


# ----------------------------------------------------------------------------- command line
DEFAULT_DATA_DIR = "data"


def ensure_dataset(data_dir: str, explicitly_given: bool, seed: int, image_size: int,
                   sequence_length: int, channels: int) -> None:
    """Make the built-in synthetic data set when the default data folder holds none.

    A folder the user named explicitly is never filled behind their back: a missing data
    set there is an error."""
    if dataset_exists(data_dir):
        return
    if explicitly_given:
        load_manifest(data_dir)  # raises the explanatory error
    import synthetic
    if channels != 1:
        raise UserError("the built-in synthetic data set is grayscale; use --channels 1")
    print(f"No data set in {data_dir}/: making the built-in synthetic one there "
          f"(to train on real videos, see 'python dataset.py --help').", flush=True)
    synthetic.generate(data_dir, seed=seed, image_size=image_size,
                       sequence_length=max(sequence_length, 30))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--prepare" in argv or any(a.startswith("--prepare=") for a in argv):
        import prepare  # real videos: see prepare.py (python dataset.py --prepare --help)
        return prepare.main(argv)
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
    args = parser.parse_args(argv)
    if not args.synthetic:
        parser.error("say what to make: --synthetic, or --prepare SOURCE --format FORMAT")
    if args.as_videos:
        import synthetic_videos
        out = Path(args.data_dir)
        if out.exists() and any(out.iterdir()) and not args.force:
            raise UserError(f"{out}/ is not empty; add --force to write into it anyway or "
                            f"choose another --data-dir")
        print(synthetic_videos.write_videos(out, layout=args.layout,
                                            num_subjects=args.num_subjects or 6, seed=args.seed))
        return 0
    num_subjects = args.num_subjects or 16
    if num_subjects < 3 or args.clips_per_subject < 2 or args.sequence_length < 16:
        raise UserError("need --num-subjects of at least 3 (train, val and test each get one), "
                        "--clips-per-subject of at least 2 and --sequence-length of at least 16")
    if dataset_exists(args.data_dir) and not args.force:
        raise UserError(f"{args.data_dir}/ already holds a data set; add --force to replace it "
                        f"or choose another --data-dir")
    import synthetic
    print(synthetic.generate(args.data_dir, seed=args.seed, num_subjects=num_subjects,
                             clips_per_subject=args.clips_per_subject,
                             image_size=args.image_size, sequence_length=args.sequence_length))
    return 0


if __name__ == "__main__":
    run_cli(main)
