"""Deterministic mode: the same seed gives the same weights, on a GPU too.

On the CPU, every kernel the suite uses is deterministic already: runs there are exact at no
cost, and `auto` means on. On a GPU, exactness needs three things, all set here before the
model is built: deterministic algorithms (PyTorch raises on any operation that has none,
rather than silently differing), cuDNN's deterministic convolutions without autotuning (the
autotuner may pick another kernel in another process), and a fixed cuBLAS workspace, which
cuBLAS reads once, when it starts: so CUBLAS_WORKSPACE_CONFIG is set before any GPU work, in
every process (each torchrun worker runs this too). `auto` means off on a GPU: the fast
kernels are worth more to most runs than the last bit (docs/performance.md has the cost).
"""
from __future__ import annotations

import os

import torch

from config import Config

# The setting PyTorch's reproducibility notes give for cuBLAS: 8 buffers of 4 MiB.
CUBLAS_WORKSPACE = ":4096:8"


def is_deterministic(cfg: Config, device: torch.device) -> bool:
    """Whether this run's steps are bit-exact: --deterministic, with auto resolved by device."""
    if cfg.deterministic != "auto":
        return cfg.deterministic == "yes"
    return device.type != "cuda"


def exact_on_gpu(deterministic: bool, device: torch.device) -> bool:
    """Whether the run's GPU kernels must be the deterministic ones (nothing to choose on
    the CPU, whose kernels are deterministic anyway)."""
    return deterministic and device.type == "cuda"


def apply(deterministic: bool, device: torch.device) -> None:
    """Set this process's kernels for the run's mode (process-wide settings, so each run
    sets all of them). The CPU's kernels need nothing: PyTorch's checks stay off there."""
    exact_gpu = exact_on_gpu(deterministic, device)
    if exact_gpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    if torch.are_deterministic_algorithms_enabled() != exact_gpu:
        # Only on a change: setting it imports the compiler stack (torch._inductor), a second
        # of start-up that a run without --compile does not otherwise pay.
        torch.use_deterministic_algorithms(exact_gpu)
    torch.backends.cudnn.deterministic = exact_gpu
    # Fixed input shapes: outside exact mode, autotuning finds the fastest kernels.
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def describe(deterministic: bool) -> str:
    return "deterministic (bit-exact)" if deterministic else "fast (not bit-exact)"


def mode_change(saved: bool | None, now: bool, device: torch.device) -> str | None:
    """What the user should know when a run resumes in another mode than it was saved in,
    or None (same mode, a checkpoint too old to say, or on the CPU, whose kernels are the
    same in both modes)."""
    if saved is None or saved == now or device.type != "cuda":
        return None
    return (f"this run was trained in {describe(saved)} mode and continues in {describe(now)} "
            f"mode: from here on it is not guaranteed to match an uninterrupted run bit for bit"
            + ("" if now else " (add --deterministic yes to keep it exact)"))
