"""How fast is the training loop, next to the model's own pace?

    python benchmark.py                      # CPU (or CUDA when present), default model
    python benchmark.py --backbone resnet18 --json bench.json
    python benchmark.py --lightning          # also a LightningModule doing the same work

Measures, on a throwaway data set of random clips:
- the real loop (train.py's own run: loader, loss, optimizer, metrics, progress bar,
  checkpoint writes) in its default mode with augmentation off, against a bare loop of the
  same model in plain PyTorch (fatigue/benchmarking.py) over the same clips already on the
  device: their ratio is the loop's overhead. The machine's speed drifts, so both run in
  interleaved rounds (bare, real, the variants, real, bare) and the ratio is given per round,
  with its median and spread. The variants, each against the same round's bare loop: the real
  loop with augmentation on, with --deterministic yes, and (--lightning) Lightning;
- the loop's loader alone, against the clips per second the training step consumes;
- a checkpoint save (our atomic, checksummed write) against plain torch.save of the same
  state, the time a save blocks the loop (background writes), load time and size;
- seconds from launching `train.py --resume` to its first training step, phase by phase (a
  child process, `python -m fatigue.first_step`), and the heavy modules imported by then that
  this run does not need;
- peak memory: the benchmark process's RSS, and on CUDA the real loop's own peak.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import fatigue  # noqa: F401  first: Ctrl+C while torch loads is one line (fatigue/__init__.py)
import numpy as np
import torch

from config import AMP_MODES, BACKBONES, DEVICES, Config, Parser, build_config, yes_no
from dataset import ClipDataset
from fatigue import allocator, benchmarking, files
from fatigue.checkpoints import store as checkpoint
from fatigue.checkpoints.run_log import LOG_FILE
from fatigue.data.clip_store import write_clip_store
from fatigue.data.loaders import DeviceClipLoader, EpochSampler, make_train_loader
from fatigue.errors import UserError, run_cli
from fatigue.training import command
from model import autocast_dtype, pick_device, uses_channels_last

ROOT = Path(__file__).resolve().parent
# config.py names no constant for --channels-last's choices: take them from its field.
CHANNELS_LAST_MODES = next(f.metadata["choices"] for f in fields(Config)
                           if f.name == "channels_last")
# The real loop's runs: its default mode with augmentation off (the bare loop's work), and
# the variants whose own cost is shown beside it.
REAL_RUNS = {"loop": [], "augment": ["--augment", "yes"],
             "deterministic": ["--deterministic", "yes"]}
LABELS = {"loop": "real / bare", "augment": "real, augmentation on / bare",
          "deterministic": "real, --deterministic yes / bare", "lightning": "Lightning / bare"}
STARTUP_TARGET_S = 1.5  # the target for everything after `import torch` and CUDA's start


def make_data(folder: Path, train_clips: int, val_clips: int,
              cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """A throwaway data set of random clips (the loop's speed does not depend on content);
    returns the train split's clips [N, T, C, S, S] (uint8) and labels [N]."""
    rng = np.random.default_rng(0)
    n = train_clips + val_clips
    clips = rng.integers(0, 256, (n, cfg.sequence_length, cfg.channels, cfg.image_size,
                                  cfg.image_size), dtype=np.uint8)
    records = [{"id": f"c{i}", "subject": f"s{i % 7}", "label": i % 2,
                "split": "train" if i < train_clips else "val"} for i in range(n)]
    write_clip_store(folder, clips, records, {"classes": ["alert", "drowsy"]})
    return clips[:train_clips], np.array([r["label"] for r in records[:train_clips]])


def check_run(what: str, code: int, said: str) -> None:
    """A training run the benchmark made: a stop (Ctrl+C, SIGTERM) stops the benchmark as
    Ctrl+C does; a failure raises with the run's last line."""
    if code in (130, 143):
        raise KeyboardInterrupt
    if code:
        last = (said.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"the {what} training run failed (exit code {code}): {last}")


def real_loop(argv: list[str], device: torch.device) -> tuple[float, int]:
    """The best epoch's clips/s of a train.py run (the first epoch is warm-up), each epoch's
    rate from its training_log.jsonl line, and on CUDA the run's peak memory (bytes)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    said = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(said):
        code = command.main(argv)
    check_run("measured", code, said.getvalue())
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    log_file = Path(argv[argv.index("--model-dir") + 1]) / LOG_FILE
    log = [json.loads(line) for line in log_file.read_text().splitlines()]
    return max(r["clips"] / (r["train_seconds"] + r["save_block_seconds"]) for r in log[1:]), peak


def run_folder(runs: Path, name: str, round_index: int, repeat: int) -> Path:
    """The model folder of a real run: the `repeat`-th run of `name` in round `round_index`."""
    return runs / f"{name}-{round_index}-{repeat}"


def round_order(variants: list[str], round_index: int) -> list[str]:
    """One round's runs, symmetric so that a steady drift of the machine's speed favours
    neither side: bare, real, the variants (reversed every other round), real, bare."""
    middle = variants if round_index % 2 == 0 else variants[::-1]
    return ["bare", "loop", *middle, "loop", "bare"]


def measure_rounds(args: argparse.Namespace, cfg: Config, device: torch.device, argv: list[str],
                   runs: Path, batches: benchmarking.Batches) -> tuple[dict, int]:
    """{name: [clips/s of each round]} for the bare loop, the real loop and its variants (a
    round's figure: the mean of its runs of that name), and the real loop's CUDA peak."""
    variants = ["augment", "deterministic"] + (["lightning"] if args.lightning else [])
    per_round: dict[str, list[float]] = {name: [] for name in ["bare", "loop", *variants]}
    cuda_peak = 0
    for index in range(args.rounds):
        speeds: dict[str, list[float]] = {name: [] for name in per_round}
        for name in round_order(variants, index):
            if name == "bare":
                speed = max(benchmarking.bare_loop(cfg, device, batches, args.epochs))
            elif name == "lightning":
                speed = max(benchmarking.lightning_loop(cfg, device, batches, args.epochs))
            else:
                folder = run_folder(runs, name, index, len(speeds[name]))
                speed, peak = real_loop(argv + REAL_RUNS[name] + [
                    "--model-dir", str(folder), "--epochs", str(args.epochs)], device)
                cuda_peak = max(cuda_peak, peak if name == "loop" else 0)
            speeds[name].append(speed)
        for name, values in speeds.items():
            per_round[name].append(statistics.fmean(values))
    return per_round, cuda_peak


def summarise(per_round: dict, sequence_length: int) -> dict:
    """Median clips/s of each measurement and, for all but the bare loop, the median ratio
    to the same round's bare loop and its min-max spread; the per-round lists too."""
    result: dict = {"per_round": {k: [round(v, 1) for v in vs] for k, vs in per_round.items()},
                    "ratios_per_round": {}}
    for name, speeds in per_round.items():
        result[f"{name}_clips_per_s"] = round(statistics.median(speeds), 1)
        result[f"{name}_frames_per_s"] = round(statistics.median(speeds) * sequence_length, 1)
        if name != "bare":
            ratios = [s / b for s, b in zip(speeds, per_round["bare"])]
            result["ratios_per_round"][name] = [round(r, 4) for r in ratios]
            result[f"{name}_vs_bare"] = round(statistics.median(ratios), 4)
            result[f"{name}_vs_bare_spread"] = [round(min(ratios), 4), round(max(ratios), 4)]
    result["loop_overhead"] = round(1 - result["loop_vs_bare"], 4)
    return result


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
        benchmarking.sync(device)
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


def startup_breakdown(argv: list[str], device: torch.device, cfg: Config) -> dict:
    """`train.py argv` launched in a new process and ended at its first step: the seconds to
    its end, each phase's seconds (fatigue.first_step), the time after `import torch` and CUDA's
    start, and the heavy modules imported by then that this run does not need."""
    launched = time.time()
    out = subprocess.run([sys.executable, "-m", "fatigue.first_step", repr(launched), device.type,
                          *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    wall = time.time() - launched
    lines = [line for line in out.stdout.splitlines() if line.startswith('{"phases"')]
    if not lines:
        raise RuntimeError(f"the resumed run took no step: {out.stderr[-500:]}")
    report = json.loads(lines[-1])
    names = [name for name, _ in report["phases"]]
    started = names.index("CUDA initialisation" if "CUDA initialisation" in names
                          else "import torch") + 1
    # mobilenet_v3_small comes from torchvision, whose import loads the compiler stack.
    needed = ({"torchvision", "torch._dynamo", "sympy", "torch.distributed.fsdp"}
              if cfg.backbone == "mobilenet_v3_small" else set())
    if cfg.compile:
        needed |= {"torch._dynamo", "sympy"}
    return {"resume_to_first_step_s": round(wall, 3),
            "startup_phases": [[name, round(s, 3)] for name, s in report["phases"]],
            "startup_after_torch_s": round(sum(s for _, s in report["phases"][started:]), 3),
            "imported_but_unused": [m for m in report["imported"] if m not in needed]}


def profile_loop(argv: list[str], device: torch.device, rows: int) -> str:
    """The operations that take most CPU time in a short training run of two epochs,
    start-up, validation and the final evaluation included (on a GPU that is the time
    spent launching work: what a launch-bound loop waits for)."""
    # Lazy: the profiler is only wanted with --profile, and importing it costs time.
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    said = io.StringIO()
    with profiler_log_dropped():
        with profile(activities=activities) as prof, contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(said):
            code = command.main(argv + ["--epochs", "2"])
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    check_run("profiled", code, said.getvalue())
    return table


# Kineto's log line: LEVEL:date time pid:tid file.cpp:line] message
KINETO_LINE = re.compile(r"[A-Z]+:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ \w+\.cpp:\d+\] ")


@contextlib.contextmanager
def profiler_log_dropped() -> Iterator[None]:
    """PyTorch's profiler (Kineto) logs to file descriptor 2, past Python's sys.stderr: its
    start and stop, and on a machine without a GPU an 'ERROR ... gpuGetDeviceCount failed'
    that is no error of the run. Inside, descriptor 2 goes to a temporary file; what it
    caught other than Kineto's lines (a native error, a crash's dump) is written after."""
    sys.stderr.flush()
    kept = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(kept, 2)
            os.close(kept)
            caught.seek(0)
            lines = caught.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not KINETO_LINE.match(line)))
            sys.stderr.flush()


def run(args: argparse.Namespace) -> dict:
    """Every measurement of the module docstring, on a throwaway data set and run folders
    that are deleted after; returns the figures (--json writes them as they are)."""
    device = pick_device(args.device)
    # Checked as train.py checks it (an image too small for the backbone...).
    cfg = build_config({"batch_size": args.batch_size, "sequence_length": args.sequence_length,
                        "image_size": args.image_size, "backbone": args.backbone,
                        "num_workers": args.num_workers, "device": device.type,
                        "amp": args.amp, "compile": args.compile,
                        "channels_last": args.channels_last, "seed": 0})
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "backbone": args.backbone, "batch_size": args.batch_size,
              "sequence_length": args.sequence_length, "image_size": args.image_size,
              "amp": str(autocast_dtype(args.amp, device) or "off").replace("torch.", ""),
              "channels_last": uses_channels_last(cfg, device), "num_workers": args.num_workers,
              "rounds": args.rounds, "epochs": args.epochs, "steps": args.steps,
              # The process's, so every loop measured here has it, as train.py's runs do.
              "allocator": ("heap, freed memory kept (fatigue/allocator.py)"
                            if allocator.keep_freed_memory(device)
                            else "the C library's default")}
    if args.lightning and benchmarking.import_lightning() is None:
        args.lightning = False
        result["lightning"] = "not installed (pip install lightning): not measured"
    if args.tmp_dir:
        Path(args.tmp_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as tmp:
        tmp = Path(tmp)
        data, runs = tmp / "data", tmp / "runs"
        clips, labels = make_data(data, args.steps * args.batch_size, args.batch_size, cfg)
        argv = ["--data-dir", str(data), "--batch-size", str(args.batch_size),
                "--sequence-length", str(args.sequence_length),
                "--image-size", str(args.image_size), "--backbone", args.backbone,
                "--num-workers", str(args.num_workers), "--device", device.type,
                "--amp", args.amp, "--compile", "yes" if args.compile else "no",
                "--channels-last", args.channels_last, "--augment", "no",
                "--seed", "0", "--save-every", "1"]
        batches = benchmarking.cut_batches(torch.from_numpy(clips).to(device),
                                           torch.from_numpy(labels).to(device),
                                           args.batch_size, seed=0)
        per_round, cuda_peak = measure_rounds(args, cfg, device, argv, runs, batches)
        result.update(summarise(per_round, args.sequence_length))
        dataset = ClipDataset(data, "train", cfg.sequence_length, cfg.image_size, cfg.channels,
                              augment=True, seed=0, raw=True)
        speed, result["loader"] = loader_speed(cfg, device, dataset, EpochSampler(len(dataset), 0))
        result["loader_clips_per_s"] = round(speed, 1)
        measured_run = run_folder(runs, "loop", 0, 0)  # its checkpoints, and its resume
        result.update(checkpoint_speed(measured_run))
        result.update(startup_breakdown(argv + ["--model-dir", str(measured_run), "--epochs",
                                                str(args.epochs + 1), "--resume"], device, cfg))
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if device.type == "cuda":
            result["cuda_peak_mb"] = round(cuda_peak / 2**20, 1)
        if args.profile:
            result["profile"] = profile_loop(argv + ["--model-dir", str(tmp / "profiled")],
                                             device, args.profile)
    return result


def ratio_text(r: dict, name: str) -> str:
    low, high = r[f"{name}_vs_bare_spread"]
    return (f"{100 * r[f'{name}_vs_bare']:.1f}% median, {100 * low:.1f}-{100 * high:.1f}% over "
            f"{r['rounds']} rounds  ({r[f'{name}_clips_per_s']:.1f} clips/s)")


def table(r: dict) -> str:
    """The figures as the printed two-column table."""
    rows = [
        ("device", f"{r['device']} ({r['backbone']}, batch {r['batch_size']}, "
                   f"{r['sequence_length']} frames of {r['image_size']}px, amp {r['amp']}"
                   + (", channels_last" if r["channels_last"] else "") + ")"),
        ("rounds", f"{r['rounds']} x (bare, real, variants, real, bare), each run "
                   f"{r['epochs']} epochs of {r['steps']} steps, the first warm-up"),
        ("real training loop", f"{r['loop_clips_per_s']:.1f} clips/s  "
                               f"({r['loop_frames_per_s']:.0f} frames/s), augmentation off"),
        ("bare loop, same clips", f"{r['bare_clips_per_s']:.1f} clips/s  "
                                  f"({r['bare_frames_per_s']:.0f} frames/s), plain PyTorch"),
        ("memory allocator (all loops)", r["allocator"]),
    ]
    rows += [(label, ratio_text(r, name)) for name, label in LABELS.items()
             if f"{name}_vs_bare" in r]
    if "lightning" in r:
        rows.append(("Lightning / bare", r["lightning"]))
    rows += [
        ("real loop's overhead", f"{100 * r['loop_overhead']:.1f}% (median round)"
                                 + ("; one round shows no spread: --rounds 5 to trust a few %"
                                    if r["rounds"] == 1 else "")),
        ("data loader alone", f"{r['loader_clips_per_s']:.1f} clips/s, {r['loader']} "
                              f"({r['loader_clips_per_s'] / r['bare_clips_per_s']:.1f}x what "
                              f"the step consumes)"),
        ("checkpoint save", f"{r['ckpt_save_ms']:.1f} ms  (torch.save alone "
                            f"{r['torch_save_ms']:.1f} ms)"),
        ("loop blocked by a save", f"{r['ckpt_block_ms']:.2f} ms (write runs in the background)"),
        ("checkpoint load", f"{r['ckpt_load_ms']:.1f} ms (with checksum check)"),
        ("checkpoint size", f"{r['ckpt_mb']:.2f} MB (torch.save alone {r['torch_save_mb']:.2f} MB)"),
        ("launch to first step (--resume)", f"{r['resume_to_first_step_s']:.2f} s, of which:"),
    ]
    rows += [(f"  {name}", f"{seconds:.3f} s") for name, seconds in r["startup_phases"]]
    rows += [
        ("after import torch, CUDA's start", f"{r['startup_after_torch_s']:.2f} s "
                                             f"(target: at most {STARTUP_TARGET_S} s)"),
        ("imported but unused", ", ".join(r["imported_but_unused"]) or "none"),
        ("peak memory", f"{r['peak_rss_mb']:.0f} MB RSS"
                        + (f", {r['cuda_peak_mb']:.0f} MB CUDA (real loop)" if "cuda_peak_mb" in r else "")),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def build_parser() -> argparse.ArgumentParser:
    """benchmark.py's options; the model and data defaults are train.py's (config.Config)."""
    parser = Parser(
        description="Measure the training loop against a bare PyTorch loop of the same model "
                    "(in interleaved rounds, with the spread), the loader, checkpoint save and "
                    "load, launch to first step with --resume, and peak memory. Prints a table.",
        epilog="Example: python benchmark.py --backbone resnet18 --image-size 64 --json "
               "bench.json. What each row means: docs/performance.md.")
    parser.add_argument("--device", default=Config.device, choices=DEVICES,
                        help=f"where to measure; auto is CUDA when present (default: "
                             f"{Config.device})")
    parser.add_argument("--batch-size", type=int, default=Config.batch_size,
                        help=f"clips per step, as train.py (default: {Config.batch_size})")
    parser.add_argument("--sequence-length", type=int, default=Config.sequence_length,
                        help=f"frames per clip (default: {Config.sequence_length})")
    parser.add_argument("--image-size", type=int, default=Config.image_size,
                        help=f"side of each frame in pixels (default: {Config.image_size})")
    parser.add_argument("--backbone", default=Config.backbone, choices=BACKBONES,
                        help=f"the CNN read on each frame (default: {Config.backbone})")
    parser.add_argument("--num-workers", type=int, default=Config.num_workers,
                        help=f"loader worker processes of the real loop, as train.py "
                             f"(default: {Config.num_workers})")
    parser.add_argument("--amp", default=Config.amp, choices=AMP_MODES,
                        help=f"mixed precision, as train.py (default: {Config.amp})")
    parser.add_argument("--compile", type=yes_no, default=Config.compile, metavar="{yes,no}",
                        help="measure with torch.compile, as train.py's option (default: no)")
    parser.add_argument("--channels-last", default=Config.channels_last,
                        choices=CHANNELS_LAST_MODES,
                        help="NHWC convolution inputs, as train.py's option "
                             f"(default: {Config.channels_last})")
    parser.add_argument("--steps", type=int, default=4, help="training steps per epoch "
                                                             "(default: 4)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs of each measured run, 3 or more; the first is warm-up, "
                             "the best of the others counts (default: 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of bare, real, variants, real, bare; each "
                             "gives its own ratios (default: 3)")
    parser.add_argument("--lightning", action="store_true",
                        help="also measure a LightningModule doing the bare loop's work "
                             "(needs `pip install lightning`)")
    parser.add_argument("--tmp-dir", default=None, type=files.output_folder,
                        help="where the throwaway files go")
    parser.add_argument("--json", metavar="PATH", type=files.output_file,
                        help="also write the figures as JSON")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="also print the ROWS operations that take most CPU time in a "
                             "two-epoch run of the measured real loop (torch.profiler; "
                             "start-up, validation and the final evaluation included)")
    return parser


def check_options(args: argparse.Namespace) -> None:
    """One line naming the option that is wrong, before anything is measured (the model's
    options are checked as train.py checks them, where run() builds its config)."""
    small = [f"--{name.replace('_', '-')} {getattr(args, name)}"
             for name in ("batch_size", "sequence_length", "image_size", "steps", "rounds")
             if getattr(args, name) < 1]
    if small:
        raise UserError(f"{', '.join(small)}: give at least 1")
    if args.epochs < 3:
        raise UserError(f"--epochs {args.epochs}: give at least 3 (the first is warm-up, the "
                        f"second pays one-off costs)")
    if args.profile < 0:
        raise UserError(f"--profile {args.profile}: give 0 (off) or a number of rows")


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table (and --profile's), write --json."""
    args = build_parser().parse_args(argv)
    # --epochs 3 at least: the first is warm-up, and the second pays once for what a run
    # does once (its first curves drawn: 0.6 s); alone, it measured the loop at 3% of bare.
    check_options(args)
    began = time.perf_counter()
    result = run(args)
    result["benchmark_seconds"] = round(time.perf_counter() - began, 1)
    print(table(result))
    print(f"(measured in {result['benchmark_seconds']:.0f} s)")
    if args.profile:
        print("\nWhere a two-epoch training run's CPU time goes:\n" + result.pop("profile"))
    if args.json:
        files.write_output_text(args.json, json.dumps(result, indent=1) + "\n")
        print(f"Figures: {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
