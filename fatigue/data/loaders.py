"""Training batches: the epoch's clip order (EpochSampler), and the two ways of turning a
ClipDataset into (model input, labels) batches on the training device: cut from the whole
split held in (GPU) memory (DeviceClipLoader), or from a DataLoader over the memory-mapped
clips (ModelBatches); `make_train_loader` picks one.
"""
from __future__ import annotations

import atexit
import os
import signal
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fatigue import seeds, startup
from fatigue.data.augment import to_model_input

if TYPE_CHECKING:  # annotations only: config.py and dataset.py are top-level modules
    from config import Config
    from dataset import ClipDataset


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
        gen = torch.Generator().manual_seed(seeds.shuffle_seed(self.seed, self.epoch))
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
        startup.mark("data on the device")
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


PARENT_CHECK_S = 1.0  # how often a loader worker looks whether its main process is alive


def _quiet_worker(_: int) -> None:
    # A terminal's Ctrl+C, and torchrun's SIGTERM (sent to the whole process group), reach
    # the workers too; only the main process decides to stop, and saves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Deaf to SIGTERM, a worker must still go when its main process is gone (kill -9, a
    # timeout): the DataLoader's own check runs only between batches, not in one that hangs.
    threading.Thread(target=_leave_with_parent, args=(os.getppid(),), daemon=True,
                     name="leave-with-parent").start()


def _leave_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)



# Loaders whose workers ignore SIGTERM (_quiet_worker). At exit, multiprocessing ends
# worker processes still alive with terminate(), a SIGTERM, then waits for them: these it
# would wait on for ever (a stopped run saved, then hung at exit while a loader was still
# referenced). So their workers are shut down first, as the DataLoader itself does when
# collected: told to finish, then joined.
_QUIET_LOADERS: weakref.WeakSet[DataLoader] = weakref.WeakSet()


@atexit.register  # atexit runs last-registered first: before multiprocessing's own hook
def _shut_down_quiet_workers() -> None:
    for loader in list(_QUIET_LOADERS):
        iterator = getattr(loader, "_iterator", None)  # its persistent workers, if started
        if iterator is not None:
            iterator._shutdown_workers()


def make_loader(dataset: Dataset, batch_size: int, cfg: Config, device: torch.device,
                sampler: Sampler | None = None) -> DataLoader:
    # Own generator: the DataLoader would otherwise draw its worker seed from the global
    # torch RNG, and a resumed run would draw at a different moment.
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        worker_init_fn=_quiet_worker if cfg.num_workers else None,
                        persistent_workers=cfg.num_workers > 0,
                        generator=torch.Generator().manual_seed(seeds.loader_seed(cfg.seed)))
    if cfg.num_workers:
        _QUIET_LOADERS.add(loader)
    return loader


def make_train_loader(dataset: ClipDataset, sampler: EpochSampler, cfg: Config,
                      device: torch.device) -> DeviceClipLoader | ModelBatches:
    """(model input, labels) batches on `device`: cut from the split held in (GPU) memory
    when it fits, which leaves almost no work between steps; from a DataLoader over the
    memory-mapped clips otherwise."""
    if DeviceClipLoader.fits(dataset, device, cfg.num_workers):
        return DeviceClipLoader(dataset, sampler, cfg.batch_size, device)
    return ModelBatches(make_loader(dataset, cfg.batch_size, cfg, device, sampler=sampler), device)
