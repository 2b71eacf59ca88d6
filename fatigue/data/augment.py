"""Training augmentation: what each clip of an epoch gets (`augmentation_plan`, drawn from
(seed, epoch) alone) and the conversion of uint8 clips into augmented float model input
(`to_model_input`), which the Dataset, the loaders and live detection all share.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fatigue import seeds

NO_AUGMENT = (0.0, 0.0, 0.0, 1.0, 0.0)  # flip, shift y, shift x, contrast, brightness


def centred_plan(n: int, extra: int) -> tuple[np.ndarray, np.ndarray]:
    """The plan for evaluation: every clip's centred frames [n], unchanged [n, 5].

    `extra`: how many more frames a stored clip has than the model reads."""
    starts = np.full(n, extra // 2, dtype=np.int64)
    params = np.tile(np.array(NO_AUGMENT, dtype=np.float32), (n, 1))
    return starts, params


def augmentation_plan(seed: int, epoch: int, n: int, extra: int, image_size: int,
                      camera: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every clip's first frame [n] and augmentation [n, 5] (as NO_AUGMENT orders them;
    with `camera`, [n, 9]: CAMERA_JITTER's columns follow) for one training epoch, row i
    for clip i.

    Drawn at once from (seed, epoch) alone, so a clip's draw never depends on the order the
    clips are taken in, on the process taking it, or on what ran before: a resumed run sees
    the same data. `extra`: how many more frames a stored clip has than the model reads."""
    rng = np.random.default_rng(seeds.augmentation_entropy(seed, epoch))
    shift = max(1, round(0.06 * image_size))
    starts = rng.integers(0, extra + 1, n)
    params = np.stack([rng.random(n) < 0.5, rng.integers(-shift, shift + 1, n),
                       rng.integers(-shift, shift + 1, n), rng.uniform(0.75, 1.25, n),
                       rng.uniform(-0.12, 0.12, n)], axis=1).astype(np.float32)
    if camera:
        params = np.concatenate([params, camera_jitter_plan(seed, epoch, n)], axis=1)
    return starts, params


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
    params = params.to(x.device, torch.float32, non_blocking=True)
    flip, dy, dx, contrast, brightness = params[:, :5].unbind(1)
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
    x = x.float().mul_(scale).add_(offset)
    if params.shape[1] > len(NO_AUGMENT):
        x = camera_jitter(x, params[:, len(NO_AUGMENT):])
    return x.clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------- camera jitter
# Each training clip seen through its own camera: taken smaller and enlarged (a cheap or
# far sensor), blurred (focus, motion), with sensor noise. A model that has seen many
# cameras' looks learns what stays the same: the eyes. Levels are a few fixed values, so
# clips of one level are processed together and a clip's result never depends on the others
# in its batch.
SENSOR_SCALES = (1.0, 0.7, 0.5, 0.35)   # side of the picture taken, share of the input's
BLUR_SIGMAS = (0.0, 0.5, 0.8, 1.2)      # pixels of the model's input
NOISE_MAX = 0.05                         # standard deviation, on 0..1 levels
NOISE_FRAMES = 64                        # frames of the fixed noise bank a clip reads from
CAMERA_JITTER = (0.0, 0.0, 0.0, 0.0)     # no jitter: scale level, blur level, noise, offset


def camera_jitter_plan(seed: int, epoch: int, n: int) -> np.ndarray:
    """Every clip's camera jitter [n, 4] for one epoch (columns as CAMERA_JITTER), from its
    own stream of (seed, epoch): the rest of the plan keeps its values with or without it."""
    rng = np.random.default_rng(seeds.camera_jitter_entropy(seed, epoch))
    half = lambda: rng.random(n) < 0.5  # noqa: E731 - each effect on about half the clips
    scale = np.where(half(), 0, rng.integers(1, len(SENSOR_SCALES), n))
    blur = np.where(half(), 0, rng.integers(1, len(BLUR_SIGMAS), n))
    noise = np.where(half(), 0.0, rng.uniform(0.005, NOISE_MAX, n))
    offset = rng.integers(0, NOISE_FRAMES, n)
    return np.stack([scale, blur, noise, offset], axis=1).astype(np.float32)


def camera_jitter(x: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """float clips [B, T, C, S, S] seen through each clip's camera (`jitter` [B, 4])."""
    b, t, c, size, _ = x.shape
    scale, blur = jitter[:, 0].long(), jitter[:, 1].long()
    for level in range(1, len(SENSOR_SCALES)):
        rows = (scale == level).nonzero().flatten()
        if len(rows):
            side = max(4, round(size * SENSOR_SCALES[level]))
            frames = x[rows].flatten(0, 2)[:, None]
            frames = F.interpolate(frames, size=(side, side), mode="bilinear",
                                   align_corners=False, antialias=True)
            frames = F.interpolate(frames, size=(size, size), mode="bilinear",
                                   align_corners=False)
            x[rows] = frames.view(len(rows), t, c, size, size)
    for level in range(1, len(BLUR_SIGMAS)):
        rows = (blur == level).nonzero().flatten()
        if len(rows):
            x[rows] = _gaussian_blur(x[rows], BLUR_SIGMAS[level])
    bank = _noise_bank(size, x.device)
    frames = (jitter[:, 3].long()[:, None] + torch.arange(t, device=x.device)) % NOISE_FRAMES
    noise = bank[frames].unsqueeze(2)  # [B, T, 1, S, S]: the same on every channel
    return x.add_(noise * jitter[:, 2].view(b, 1, 1, 1, 1))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    b, t, c, size, _ = x.shape
    radius = max(1, int(math.ceil(2 * sigma)))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = (taps / taps.sum()).to(x.device)
    frames = F.pad(x.flatten(0, 2)[:, None], (radius,) * 4, mode="replicate")
    frames = F.conv2d(frames, taps.view(1, 1, 1, -1))
    frames = F.conv2d(frames, taps.view(1, 1, -1, 1))
    return frames.view(b, t, c, size, size)


_NOISE_BANKS: dict[tuple, torch.Tensor] = {}


def _noise_bank(size: int, device: torch.device) -> torch.Tensor:
    """NOISE_FRAMES frames of unit Gaussian noise [K, S, S], fixed (seed 0) per size and device."""
    key = (size, str(device))
    if key not in _NOISE_BANKS:
        gen = torch.Generator().manual_seed(0)
        _NOISE_BANKS[key] = torch.randn(NOISE_FRAMES, size, size, generator=gen).to(device)
    return _NOISE_BANKS[key]
