"""How fast is the training loop, next to the model's own pace?

    python benchmark.py                      # CPU (or CUDA when present), default model
    python benchmark.py --backbone resnet18 --json bench.json

Measures, on a throwaway data set of random clips:
- the real loop (train.py's own `fit`: data loader, augmentation, loss, optimizer, metrics,
  progress bar, checkpoint writes) against a bare loop of the same model over the same
  batches already in memory: their ratio is the loop's overhead;
- the DataLoader alone, against the clips per second the training step consumes;
- a checkpoint save (our atomic, checksummed write) against plain torch.save of the same
  state, the time a save blocks the loop (background writes), load time and size;
- seconds from `python train.py --resume` to its first training step (a child process
  runs this script's hidden `_until-first-step` command: train.py's main with a global
  optimizer hook that ends the process at the first step);
- peak memory: the benchmark process's RSS, and on CUDA the real loop's own peak.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import train
from config import AMP_MODES, BACKBONES, DEVICES, Config
from dataset import ClipDataset
from fatigue.checkpoints import store as checkpoint
from fatigue.data.clip_store import write_clip_store
from fatigue.data.loaders import DeviceClipLoader, EpochSampler, make_train_loader
from fatigue.errors import UserError, run_cli
from fatigue.training.loop import accumulate_gradients, optimizer_step
from model import autocast_dtype, build_model, pick_device, uses_channels_last

ROOT = Path(__file__).resolve().parent
# The hidden command a child process runs to time `train.py --resume` to its first step,
# and the line it prints there.
FIRST_STEP_COMMAND = "_until-first-step"
FIRST_STEP_MARKER = "FIRST_STEP"
# config.py names no constant for --channels-last's choices: take them from its field.
CHANNELS_LAST_MODES = next(f.metadata["choices"] for f in fields(Config)
                           if f.name == "channels_last")


def make_data(folder: Path, train_clips: int, val_clips: int, cfg: Config) -> None:
    """A throwaway data set of random clips: the loop's speed does not depend on content."""
    rng = np.random.default_rng(0)
    n = train_clips + val_clips
    clips = rng.integers(0, 256, (n, cfg.sequence_length, cfg.channels, cfg.image_size,
                                  cfg.image_size), dtype=np.uint8)
    records = [{"id": f"c{i}", "subject": f"s{i % 7}", "label": i % 2,
                "split": "train" if i < train_clips else "val"} for i in range(n)]
    write_clip_store(folder, clips, records, {"classes": ["alert", "drowsy"]})


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the work's end, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(cfg: Config, device: torch.device, batches: list, repeats: int) -> float:
    """Clips/s of forward, backward and optimizer step alone, data already on the device."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).place(device, cfg).train()
    step_model = torch.compile(model) if cfg.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    amp = autocast_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None

    def epoch() -> None:
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)
            accumulate_gradients(step_model, x, y, cfg.accum_steps, amp, scaler)
            optimizer_step(model, optimizer, scaler, cfg.grad_clip)

    epoch()  # warm-up (and compilation), as the real loop's first epoch
    best = 0.0
    for _ in range(repeats):  # the best epoch, as for the real loop: least disturbed
        sync(device)
        began = time.perf_counter()
        epoch()
        sync(device)
        best = max(best, sum(len(y) for _, y in batches) / (time.perf_counter() - began))
    return best


def loader_speed(cfg: Config, device: torch.device, dataset: ClipDataset,
                 sampler: EpochSampler) -> tuple[float, str]:
    """Clips/s the training loop's loader delivers, converted to model input on the
    device, and which loader that is."""
    loader = make_train_loader(dataset, sampler, cfg, device)
    best = 0.0
    for epoch in range(2):  # the first pass warms the page cache and the workers
        sampler.set_epoch(epoch)
        began, clips = time.perf_counter(), 0
        for _, labels in loader:
            clips += len(labels)
        sync(device)
        best = max(best, clips / (time.perf_counter() - began))
    kind = ("in-memory batches" if isinstance(loader, DeviceClipLoader)
            else f"DataLoader, {cfg.num_workers} workers")
    return best, kind


def checkpoint_speed(folder: Path) -> dict:
    """Median save, plain torch.save, blocking and load times (ms) of the run's latest
    checkpoint over five rounds, and both files' sizes (MB)."""
    state = checkpoint.load_checkpoint(folder / checkpoint.LATEST)
    target = folder / "bench"
    target.mkdir()
    store = checkpoint.CheckpointStore(target)
    times = {"ckpt_save_ms": [], "torch_save_ms": [], "ckpt_block_ms": [], "ckpt_load_ms": []}
    background = checkpoint.CheckpointStore(target / "bg", background=True)
    for _ in range(5):
        began = time.perf_counter()
        store.save(state)
        times["ckpt_save_ms"].append(time.perf_counter() - began)
        began = time.perf_counter()
        torch.save(state, target / "plain.pth")
        times["torch_save_ms"].append(time.perf_counter() - began)
        began = time.perf_counter()
        background.save(state)
        times["ckpt_block_ms"].append(time.perf_counter() - began)
        background.wait()
        began = time.perf_counter()
        checkpoint.load_checkpoint(target / checkpoint.LATEST)
        times["ckpt_load_ms"].append(time.perf_counter() - began)
    result = {k: round(1000 * float(np.median(v)), 2) for k, v in times.items()}
    result["ckpt_mb"] = round(checkpoint.file_size_mb(target / checkpoint.LATEST), 3)
    result["torch_save_mb"] = round(checkpoint.file_size_mb(target / "plain.pth"), 3)
    return result


def _exit_after_step(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
    """A global optimizer step post-hook: the first step has been taken, the measurement
    is over. os._exit ends the process at once: no save, no waiting for a background
    checkpoint write or for the rest of the epoch."""
    print(FIRST_STEP_MARKER, flush=True)
    os._exit(0)


def until_first_step(argv: list[str]) -> int:
    """train.py's main on `argv`, ended at its first optimizer step (which prints
    FIRST_STEP_MARKER); returns train.py's exit code when no step is ever taken."""
    register_optimizer_step_post_hook(_exit_after_step)
    return train.main(argv)


def resume_to_first_step(argv: list[str]) -> float:
    """Seconds from launching `train.py argv` in a new process to its first step."""
    began = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "benchmark.py"), FIRST_STEP_COMMAND,
                          *argv], capture_output=True, text=True, timeout=600)
    if FIRST_STEP_MARKER not in out.stdout:
        raise RuntimeError(f"resume run failed: {out.stderr[-500:]}")
    return time.perf_counter() - began


def profile_loop(argv: list[str], device: torch.device, rows: int) -> str:
    """The operations that take most CPU time in a short training run of two epochs,
    start-up, validation and the final evaluation included (on a GPU that is the time
    spent launching work: what a launch-bound loop waits for)."""
    # Lazy: the profiler is only wanted with --profile, and importing it costs time.
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        code = train.main(argv + ["--epochs", "2"])
    if code:
        raise RuntimeError(f"the profiled training run failed (exit code {code})")
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run(args: argparse.Namespace) -> dict:
    """Every measurement of the module docstring, on a throwaway data set and run folder
    that are deleted after; returns the figures (--json writes them as they are)."""
    device = pick_device(args.device)
    cfg = Config(batch_size=args.batch_size, sequence_length=args.sequence_length,
                 image_size=args.image_size, backbone=args.backbone, num_workers=args.num_workers,
                 device=device.type, amp=args.amp, compile=args.compile,
                 channels_last=args.channels_last, seed=0)
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        tmp = Path(tmp)
        data, models = tmp / "data", tmp / "models"
        train_clips = args.steps * args.batch_size
        make_data(data, train_clips, args.batch_size, cfg)
        argv = ["--data-dir", str(data), "--model-dir", str(models), "--batch-size",
                str(args.batch_size), "--sequence-length", str(args.sequence_length),
                "--image-size", str(args.image_size), "--backbone", args.backbone,
                "--num-workers", str(args.num_workers), "--device", device.type,
                "--amp", args.amp, "--compile", "yes" if args.compile else "no",
                "--channels-last", args.channels_last,
                "--seed", "0", "--save-every", "1"]
        # The bare loop, on the very batches of an epoch, already on the device; half its
        # epochs before the real loop and half after, so that a slow spell of a shared
        # machine does not favour either side.
        dataset = ClipDataset(data, "train", cfg.sequence_length, cfg.image_size, cfg.channels,
                              augment=True, seed=0, raw=True)
        sampler = EpochSampler(len(dataset), 0)
        repeats = max(1, args.epochs // 2)
        bare = bare_loop(cfg, device, list(make_train_loader(dataset, sampler, cfg, device)),
                         repeats)
        if device.type == "cuda":  # the real loop's own memory, and its own choice of loader
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        # The real loop: train.py's fit, several epochs; the first is warm-up.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            train.main(argv + ["--epochs", str(args.epochs)])
        cuda_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
        log = [json.loads(line) for line in (models / "training_log.jsonl").read_text().splitlines()]
        loop = max(r["clips"] / (r["train_seconds"] + r["save_block_seconds"])
                   for r in log[1:] or log)  # the first epoch is warm-up
        bare = max(bare, bare_loop(cfg, device, list(make_train_loader(
            dataset, sampler, cfg, device)), repeats))
        result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                  "backbone": args.backbone, "batch_size": args.batch_size,
                  "sequence_length": args.sequence_length, "image_size": args.image_size,
                  "amp": str(autocast_dtype(args.amp, device)).replace("torch.", ""),
                  "channels_last": uses_channels_last(cfg, device),
                  "loop_clips_per_s": round(loop, 1),
                  "loop_frames_per_s": round(loop * args.sequence_length, 1),
                  "bare_clips_per_s": round(bare, 1),
                  "bare_frames_per_s": round(bare * args.sequence_length, 1),
                  "loop_overhead": round(1 - loop / bare, 4),
                  "loop_vs_bare": round(loop / bare, 4),
                  "num_workers": args.num_workers}
        speed, result["loader"] = loader_speed(cfg, device, dataset, sampler)
        result["loader_clips_per_s"] = round(speed, 1)
        result.update(checkpoint_speed(models))
        result["resume_to_first_step_s"] = round(
            resume_to_first_step(argv + ["--epochs", str(args.epochs + 1), "--resume"]), 2)
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if device.type == "cuda":
            result["cuda_peak_mb"] = round(cuda_peak / 2**20, 1)
        if args.profile:
            argv[argv.index("--model-dir") + 1] = str(tmp / "profiled")
            result["profile"] = profile_loop(argv, device, args.profile)
    return result


def table(r: dict) -> str:
    """The figures as the printed two-column table."""
    rows = [
        ("device", f"{r['device']} ({r['backbone']}, batch {r['batch_size']}, "
                   f"{r['sequence_length']} frames of {r['image_size']}px, amp {r['amp']}"
                   + (", channels_last" if r["channels_last"] else "") + ")"),
        ("real training loop", f"{r['loop_clips_per_s']:.1f} clips/s  "
                               f"({r['loop_frames_per_s']:.0f} frames/s)"),
        ("bare loop, same batches", f"{r['bare_clips_per_s']:.1f} clips/s  "
                                    f"({r['bare_frames_per_s']:.0f} frames/s)"),
        ("real / bare", f"{100 * r['loop_vs_bare']:.1f}%  (overhead "
                        f"{100 * r['loop_overhead']:.1f}%)"),
        ("data loader alone", f"{r['loader_clips_per_s']:.1f} clips/s, {r['loader']} "
                              f"({r['loader_clips_per_s'] / r['bare_clips_per_s']:.1f}x what "
                              f"the step consumes)"),
        ("checkpoint save", f"{r['ckpt_save_ms']:.1f} ms  (torch.save alone "
                            f"{r['torch_save_ms']:.1f} ms)"),
        ("loop blocked by a save", f"{r['ckpt_block_ms']:.2f} ms (write runs in the background)"),
        ("checkpoint load", f"{r['ckpt_load_ms']:.1f} ms (with checksum check)"),
        ("checkpoint size", f"{r['ckpt_mb']:.2f} MB (torch.save alone {r['torch_save_mb']:.2f} MB)"),
        ("launch to first step (--resume)", f"{r['resume_to_first_step_s']:.2f} s"),
        ("peak memory", f"{r['peak_rss_mb']:.0f} MB RSS"
                        + (f", {r['cuda_peak_mb']:.0f} MB CUDA (real loop)" if "cuda_peak_mb" in r else "")),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def build_parser() -> argparse.ArgumentParser:
    """benchmark.py's options; the model and data defaults are train.py's (config.Config)."""
    parser = argparse.ArgumentParser(description="Measure the training loop against the "
                                                 "model's own speed (see the module docstring).")
    parser.add_argument("--device", default=Config.device, choices=DEVICES)
    parser.add_argument("--batch-size", type=int, default=Config.batch_size)
    parser.add_argument("--sequence-length", type=int, default=Config.sequence_length)
    parser.add_argument("--image-size", type=int, default=Config.image_size)
    parser.add_argument("--backbone", default=Config.backbone, choices=BACKBONES)
    parser.add_argument("--num-workers", type=int, default=Config.num_workers)
    parser.add_argument("--amp", default=Config.amp, choices=AMP_MODES)
    parser.add_argument("--compile", action="store_true", help="measure with torch.compile")
    parser.add_argument("--channels-last", default=Config.channels_last,
                        choices=CHANNELS_LAST_MODES,
                        help="NHWC convolution inputs, as train.py's option "
                             f"(default: {Config.channels_last})")
    parser.add_argument("--steps", type=int, default=24, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs of the real loop; the first is warm-up, the best of the "
                             "others counts; the bare loop runs half as many (plus a warm-up) "
                             "before the real loop and again after, its best epoch counting "
                             "(default: 4)")
    parser.add_argument("--tmp-dir", default=None, help="where the throwaway files go")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also print the ROWS operations that take most CPU time in a "
                             "two-epoch training run (torch.profiler; start-up, validation and "
                             "the final evaluation included)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table (and --profile's), write --json. A first argument
    FIRST_STEP_COMMAND is the hidden command resume_to_first_step's child runs instead."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [FIRST_STEP_COMMAND]:
        return until_first_step(argv[1:])
    args = build_parser().parse_args(argv)
    if min(args.batch_size, args.sequence_length, args.image_size, args.steps) < 1 or args.epochs < 2:
        raise UserError("sizes must be at least 1 and --epochs at least 2")
    result = run(args)
    print(table(result))
    if args.profile:
        print("\nWhere a two-epoch training run's CPU time goes:\n" + result.pop("profile"))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    run_cli(main)
