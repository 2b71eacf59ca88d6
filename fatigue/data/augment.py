"""Training augmentation: what each clip of an epoch gets (`augmentation_plan`, drawn from
(seed, epoch) alone) and the conversion of uint8 clips into augmented float model input
(`to_model_input`), which the Dataset, the loaders and live detection all share.
"""
from __future__ import annotations

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


def augmentation_plan(seed: int, epoch: int, n: int, extra: int,
                      image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every clip's first frame [n] and augmentation [n, 5] (as NO_AUGMENT orders them) for
    one training epoch, row i for clip i.

    Drawn at once from (seed, epoch) alone, so a clip's draw never depends on the order the
    clips are taken in, on the process taking it, or on what ran before: a resumed run sees
    the same data. `extra`: how many more frames a stored clip has than the model reads."""
    rng = np.random.default_rng(seeds.augmentation_entropy(seed, epoch))
    shift = max(1, round(0.06 * image_size))
    starts = rng.integers(0, extra + 1, n)
    params = np.stack([rng.random(n) < 0.5, rng.integers(-shift, shift + 1, n),
                       rng.integers(-shift, shift + 1, n), rng.uniform(0.75, 1.25, n),
                       rng.uniform(-0.12, 0.12, n)], axis=1).astype(np.float32)
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
