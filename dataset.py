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
from torch.utils.data import DataLoader, Dataset, Sampler

from fatigue.errors import UserError, run_cli

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
        self._plan_key: int | None = None
        self._plan: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def epoch_plan(self, epoch: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Every clip's first frame [N] and augmentation [N, 5] for one epoch (None: for
        evaluation, the centred frames unchanged). Drawn at once from (seed, epoch) alone,
        row i for clip i, so a clip's draw never depends on the order the clips are taken
        in, on the process taking it, or on what ran before: a resumed run sees the same data."""
        key = epoch if self.augment else None
        if self._plan_key == key and self._plan is not None:
            return self._plan  # one plan is kept: a DataLoader asks clip by clip
        extra, n = self.clips.shape[1] - self.sequence_length, len(self)
        if key is None:
            starts = np.full(n, extra // 2, dtype=np.int64)
            params = np.tile(np.array(NO_AUGMENT, dtype=np.float32), (n, 1))
        else:
            rng = np.random.default_rng([self.seed % 2**64, epoch])  # entropy must be >= 0
            shift = max(1, round(0.06 * self.image_size))
            starts = rng.integers(0, extra + 1, n)
            params = np.stack([rng.random(n) < 0.5, rng.integers(-shift, shift + 1, n),
                               rng.integers(-shift, shift + 1, n), rng.uniform(0.75, 1.25, n),
                               rng.uniform(-0.12, 0.12, n)], axis=1).astype(np.float32)
        self._plan_key, self._plan = key, (starts, params)
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
        return (to_model_input(clip[None], clip_params[None] if augmented else None,
                               self.image_size)[0], self.labels[index])


def available_memory() -> int | None:
    """Bytes of RAM that can be taken without swapping (page cache counts as free), or
    None where the system does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        return None


class DeviceClipLoader:
    """Training batches as model input [B, T, C, S, S] with labels, cut from the whole split
    held in memory as uint8 (GPU memory when training there).

    What a DataLoader does, without per-clip Python work or host-to-device copies: the
    epoch's plan moves to the device once, and `to_model_input` runs on chunks of up to
    CHUNK_BATCHES batches at once, so that between two training steps there is almost no
    work left to launch. `to_model_input` gives a clip the same values whatever other
    clips share its call, so this yields exactly what ModelBatches over a DataLoader of the
    same raw dataset and sampler yields, and a resumed epoch what an unbroken one does
    (bit for bit when the stored frames have the model's size; after a resize, a GPU's
    float sums may differ in the last bit).
    """

    CHUNK_BATCHES = 16
    CHUNK_BYTES = 128 * 2**20  # the most one chunk's conversion holds at once

    def __init__(self, dataset: ClipDataset, sampler: EpochSampler, batch_size: int,
                 device: torch.device):
        self.dataset, self.sampler, self.batch_size, self.device = dataset, sampler, batch_size, device
        self.clips = torch.from_numpy(np.asarray(dataset.clips[dataset.rows])).to(device)
        self.labels = torch.tensor(dataset.labels, device=device)
        _, _, channels, height, width = self.clips.shape
        # Per pixel of a clip: the uint8 frames and, when resizing, their float copy (5
        # bytes at the stored size), the float input and its shifted copy (8 at the model's).
        clip_bytes = dataset.sequence_length * channels * (
            5 * height * width * ((height, width) != (dataset.image_size,) * 2)
            + 8 * dataset.image_size ** 2)
        fitting = self.CHUNK_BYTES // (clip_bytes * batch_size)
        self.chunk = batch_size * max(1, min(self.CHUNK_BATCHES, fitting))  # clips

    @staticmethod
    def fits(dataset: ClipDataset, device: torch.device, num_workers: int = 0) -> bool:
        """Use it when the split takes at most a quarter of the free (GPU) memory; on the
        CPU only without worker processes (asking for workers asks for a DataLoader), and
        sharing the RAM with the other processes torchrun started on this machine."""
        size = len(dataset) * int(np.prod(dataset.clips.shape[1:]))
        if device.type == "cuda":
            return size <= 0.25 * torch.cuda.mem_get_info(device)[0]
        if device.type != "cpu" or num_workers:
            return False
        free = available_memory()
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return free is not None and size * processes <= 0.25 * free

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        index = torch.tensor(self.sampler.indices(), dtype=torch.long)
        starts, params = (torch.from_numpy(a)[index].to(self.device)
                          for a in self.dataset.epoch_plan(self.sampler.epoch))
        index = index.to(self.device)
        frames = torch.arange(self.dataset.sequence_length, device=self.device)
        augment = self.dataset.augment
        for position in range(0, len(index), self.chunk):
            part = slice(position, position + self.chunk)
            rows = index[part]
            clips = self.clips[rows[:, None], starts[part, None] + frames]  # (n, T, C, H, W)
            inputs = to_model_input(clips, params[part] if augment else None,
                                    self.dataset.image_size)
            labels = self.labels[rows]
            for b in range(0, len(rows), self.batch_size):
                yield inputs[b:b + self.batch_size], labels[b:b + self.batch_size]


class ModelBatches:
    """A DataLoader over a raw ClipDataset, its batches turned into model input on
    `device` (the uint8 clips travel, a quarter of the float bytes): yields
    (input [B, T, C, S, S], labels), as DeviceClipLoader does."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device
        self.dataset = loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for clips, params, labels in self.loader:
            params = params.to(self.device, non_blocking=True) if self.dataset.augment else None
            yield (to_model_input(clips.to(self.device, non_blocking=True), params,
                                  self.dataset.image_size),
                   labels.to(self.device, non_blocking=True))


def to_model_input(clips: torch.Tensor, params: torch.Tensor | None,
                   image_size: int) -> torch.Tensor:
    """uint8 clips [B, T, C, H, W] -> float [B, T, C, S, S] in [0, 1], each clip with its
    own flip, shift, contrast and brightness (`params` [B, 5], as NO_AUGMENT orders them)
    applied identically to all its frames. Runs wherever the tensors are (on the GPU when
    training there), as a handful of batched operations: on a GPU each operation costs a
    kernel launch, and none of them waits for the GPU."""
    b, t, c, h, w = clips.shape
    size = image_size
    x = clips
    if (h, w) != (size, size):
        x = F.interpolate(x.flatten(0, 1).float(), size=(size, size), mode="bilinear",
                          align_corners=False).view(b, t, c, size, size)
    if params is None:
        return x.float().div_(255.0)
    flip, dy, dx, contrast, brightness = params.to(x.device, torch.float32,
                                                   non_blocking=True).unbind(1)
    # Flip and cyclic shift are one per-clip permutation of the pixels: output pixel (r, c)
    # is input pixel ((r - dy) mod S, (c - dx) mod S), its column mirrored when flipped.
    pos = torch.arange(size, device=x.device)
    rows = (pos - dy.long()[:, None]) % size  # (B, S)
    cols = (pos - dx.long()[:, None]) % size
    cols = torch.where(flip[:, None] > 0.5, size - 1 - cols, cols)
    pixel = (rows[:, :, None] * size + cols[:, None, :]).view(b, 1, 1, size * size)
    x = x.reshape(b, t, c, size * size).gather(3, pixel.expand(b, t, c, size * size))
    x = x.view(b, t, c, size, size)
    # Contrast around the clip's mean, then brightness, with the 1/255 folded in:
    # ((x - m) * k + m) / 255 + d  ==  x * (k / 255) + (m * (1 - k) / 255 + d).
    # An exact integer sum of the uint8 pixels and no fused multiply-add: a clip's result
    # does not depend on which other clips share its batch (after a resize the pixels are
    # floats, summed in float64, whose order a GPU may vary).
    total = x.sum(dim=(1, 2, 3, 4), dtype=torch.int64 if x.dtype == torch.uint8 else torch.float64)
    mean = (total.double() / (t * c * size * size)).float()
    scale = (contrast / 255.0).view(b, 1, 1, 1, 1)
    offset = (mean * (1 - contrast) / 255.0 + brightness).view(b, 1, 1, 1, 1)
    return x.float().mul_(scale).add_(offset).clamp_(0.0, 1.0)


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

    def indices(self) -> list[int]:
        """This process's clips of the epoch still to train on, in order."""
        return self.shard()[self.start:]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.epoch) for i in self.indices()])

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
    from fatigue.data import synthetic
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
        from fatigue.data import synthetic_videos
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
    from fatigue.data import synthetic
    print(synthetic.generate(args.data_dir, seed=args.seed, num_subjects=num_subjects,
                             clips_per_subject=args.clips_per_subject,
                             image_size=args.image_size, sequence_length=args.sequence_length))
    return 0


if __name__ == "__main__":
    run_cli(main)
