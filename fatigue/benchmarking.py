"""Reference training loops for benchmark.py: the yardsticks the real loop is measured against.

Both are written here from plain PyTorch (and Lightning), on purpose apart from the project's
training code: a yardstick that called the training loop's own step functions would partly
measure the loop with itself. They share only what is being measured, the model
(model.build_model), and the choices that make the work the same: the mixed precision
(model.autocast_dtype) and the memory layout (the model's `place`, as model.uses_channels_last
says). Their data is the real loop's training split held on the device as uint8, cut into
batches in one fixed shuffled order; each batch becomes float input in [0, 1] inside the step,
the work the real loop's input conversion does with augmentation off.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import time
import warnings
from types import ModuleType
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from config import Config
from model import autocast_dtype, build_model

Batches = list[tuple[torch.Tensor, torch.Tensor]]  # (uint8 clips [B, T, C, S, S], labels [B])


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the work's end, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def cut_batches(clips: torch.Tensor, labels: torch.Tensor, batch_size: int,
                seed: int) -> Batches:
    """uint8 clips [N, T, C, S, S] and labels [N] on the device, cut into batches of
    `batch_size` in one shuffled order, fixed by `seed`."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    order = order.to(clips.device)
    return [(clips[part], labels[part]) for part in order.split(batch_size)]


def default_kernels(device: torch.device) -> None:
    """The kernel settings of the real loop's default (fast) mode: cuDNN autotuning on a GPU,
    no deterministic algorithms. Process-wide, so set again before each reference run: a
    real run in deterministic mode in the same process leaves them changed."""
    if torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = device.type == "cuda"


def placed_model(cfg: Config, device: torch.device) -> torch.nn.Module:
    """The model the real loop trains, with the same initial seed, on `device` in training
    mode, NHWC where the real loop uses it."""
    torch.manual_seed(cfg.seed)
    return build_model(cfg).place(device, cfg).train()


def bare_step(cfg: Config, device: torch.device) -> tuple[torch.nn.Module, Callable]:
    """The model (as placed_model) and a step over it: uint8 clips to float in [0, 1],
    forward (under autocast with mixed precision), cross-entropy, backward, gradient
    clipping, AdamW step; a gradient scaler with fp16 only."""
    model = placed_model(cfg, device)
    step_model = torch.compile(model) if cfg.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    amp = autocast_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None

    def step(clips: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = step_model(clips.float() / 255)
        loss = F.cross_entropy(logits.float(), labels)
        if scaler:  # fp16: scaled backward, unscaled before clipping
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def bare_loop(cfg: Config, device: torch.device, batches: Batches, epochs: int) -> list[float]:
    """Clips/s of each epoch after the first (warm-up, and compilation with cfg.compile) of
    bare_step over `batches`."""
    default_kernels(device)
    _, step = bare_step(cfg, device)
    clips_per_epoch = sum(len(y) for _, y in batches)
    speeds = []
    for _ in range(epochs):
        sync(device)
        began = time.perf_counter()
        for clips, labels in batches:
            step(clips, labels)
        sync(device)
        speeds.append(clips_per_epoch / (time.perf_counter() - began))
    return speeds[1:]


def import_lightning() -> ModuleType | None:
    """Lightning's trainer package (`lightning.pytorch`, or the older `pytorch_lightning`),
    or None when neither is installed: Lightning is an optional extra, never required."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        with contextlib.suppress(ImportError):
            return importlib.import_module(name)
    return None


class _Iterable:
    """The batches as one iterable: Lightning would take a plain list for several loaders."""

    def __init__(self, batches: Batches):
        self.batches = batches

    def __iter__(self) -> Iterator:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def lightning_loop(cfg: Config, device: torch.device, batches: Batches,
                   epochs: int) -> list[float]:
    """Clips/s of each epoch after the first (warm-up) of a LightningModule doing the bare
    loop's work: the same model, AdamW, gradient clipping by the Trainer, the same mixed
    precision, the uint8 batches converted in training_step. Needs Lightning (see
    import_lightning)."""
    pl = import_lightning()
    if pl is None:
        raise ImportError("Lightning is not installed (pip install lightning)")
    amp = autocast_dtype(cfg.amp, device)
    precision = {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed"}.get(amp, "32-true")
    clips_per_epoch = sum(len(y) for _, y in batches)
    speeds: list[float] = []

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = placed_model(cfg, device)

        def training_step(self, batch: tuple, batch_index: int) -> torch.Tensor:
            clips, labels = batch
            return F.cross_entropy(self.model(clips.float() / 255).float(), labels)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=cfg.learning_rate,
                                     weight_decay=cfg.weight_decay)

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            sync(device)
            self.began = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            sync(device)
            speeds.append(clips_per_epoch / (time.perf_counter() - self.began))

    default_kernels(device)
    # Its advice (workers, loggers, precision notes) is not wanted in the benchmark's output.
    quiet = logging.getLogger(pl.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            trainer = pl.Trainer(
                max_epochs=epochs, accelerator="gpu" if device.type == "cuda" else "cpu",
                devices=1, precision=precision, benchmark=device.type == "cuda",
                gradient_clip_val=cfg.grad_clip or None, callbacks=[EpochTimer()], logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0)
            trainer.fit(Module(), train_dataloaders=_Iterable(batches))
    finally:
        quiet.setLevel(level)
    return speeds[1:]
