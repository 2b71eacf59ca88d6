"""Train the fatigue detector, keeping checkpoints that survive any interruption.

    python train.py                      # new run (an earlier run in models/ is archived first)
    python train.py --resume             # continue exactly where latest_model.pth stopped
    python train.py --resume --epochs 150   # extend a finished run

The whole loop is in `fit` below, top to bottom. Every random choice is derived from
(seed, epoch, clip), and the checkpoint holds the position inside the epoch and every RNG
state, so a run that is stopped (Ctrl+C, SIGTERM, kill -9, power loss) and resumed ends
with the same weights, bit for bit on CPU, as one that never stopped.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import random
import signal
import sys
import time
from datetime import datetime

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from fatigue.checkpoints import run_log
from fatigue.checkpoints.store import (FORMAT_VERSION, CheckpointStore, DamagedCheckpoint, load_checkpoint)
from config import (Config, add_config_args, architecture_diff, build_config, flag_of,
                    given_options)
from dataset import (DEFAULT_DATA_DIR, ClipDataset, DeviceClipLoader, EpochSampler,
                     ModelBatches, data_fingerprint, ensure_dataset, load_manifest)
from fatigue.training.distributed import Distributed
from fatigue.errors import UserError, run_cli
from fatigue.inference.metrics import evaluate_checkpoint, predict
from model import autocast_dtype, build_model, count_parameters, pick_device

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
CURVES_EVERY_S = 30.0  # drawing the curves takes a tenth of a second: not every short epoch


# ----------------------------------------------------------------------------- helpers
class StopRequest:
    """Ctrl+C and SIGTERM only set a flag; the loop finishes the current step, saves and
    exits. (Saving inside the handler itself can hang or tear the file.)"""

    def __init__(self, verbose: bool = True) -> None:
        self.signum: int | None = None
        self.verbose = verbose
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        for sig in EXIT_CODES:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.verbose:
            print(f"\n{signal.Signals(signum).name} received: finishing the current step, then "
                  f"saving the checkpoint..." if self.signum is None else
                  "\nalready stopping: the checkpoint is being saved, please wait",
                  file=sys.stderr, flush=True)
        self.signum = signum


def lr_factor(epoch: int, total_epochs: int) -> float:
    """Cosine decay from 1 to 0.01 over the run; a pure function of (epoch, total), so
    the schedule can be rebuilt for a new total at the right position."""
    progress = min(epoch, total_epochs) / max(1, total_epochs)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def rng_state() -> dict:
    """Every RNG state, as tensors and plain values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                      *np_state[2:]],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _silent(*args, **kwargs) -> None:
    pass


def _quiet_worker(_: int) -> None:
    # A terminal's Ctrl+C, and torchrun's SIGTERM (sent to the whole process group), reach
    # the workers too; only the main process decides to stop, and saves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset, batch_size: int, cfg: Config, device: torch.device,
                sampler=None) -> DataLoader:
    # Own generator: the DataLoader would otherwise draw its worker seed from the global
    # torch RNG, and a resumed run would draw at a different moment.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                      worker_init_fn=_quiet_worker if cfg.num_workers else None,
                      persistent_workers=cfg.num_workers > 0,
                      generator=torch.Generator().manual_seed(cfg.seed))


def make_train_loader(dataset: ClipDataset, sampler: EpochSampler, cfg: Config,
                      device: torch.device) -> DeviceClipLoader | ModelBatches:
    """(model input, labels) batches on `device`: cut from the split held in (GPU) memory
    when it fits, which leaves almost no work between steps; from a DataLoader over the
    memory-mapped clips otherwise."""
    if DeviceClipLoader.fits(dataset, device, cfg.num_workers):
        return DeviceClipLoader(dataset, sampler, cfg.batch_size, device)
    return ModelBatches(make_loader(dataset, cfg.batch_size, cfg, device, sampler=sampler), device)


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give restored optimizer state its weight's memory layout (NHWC or not), which the
    batched update kernels expect; the values are unchanged."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def micro_batch(cfg: Config) -> int:
    return math.ceil(cfg.batch_size / cfg.accum_steps)


def new_history() -> dict:
    return {k: [] for k in ("train_losses", "val_losses", "train_accuracies", "val_accuracies",
                            "learning_rates", "epoch_seconds")}


# ----------------------------------------------------------------------------- the loop
def fit(cfg: Config, store: CheckpointStore, resume: dict | None = None,
        allow_data_change: bool = False, warnings: list[str] | None = None,
        dist: Distributed | None = None) -> int:
    """Train from scratch or from the checkpoint `resume`. Returns the exit code.

    Under torchrun every process runs this; process 0 alone writes files and prints."""
    dist = dist or Distributed(pick_device(cfg.device))
    device = dist.device
    say = print if dist.is_main else _silent
    amp_dtype = autocast_dtype(cfg.amp, device)
    manifest = load_manifest(cfg.data_dir)
    fingerprint = data_fingerprint(manifest)
    warnings = list(warnings or []) + list((resume or {}).get("warnings", []))
    if resume is not None and resume.get("data_fingerprint") not in (None, fingerprint):
        if not allow_data_change:
            raise UserError(f"the data set in {cfg.data_dir}/ is not the one this run was "
                            f"trained on (fingerprint {fingerprint}, checkpoint "
                            f"{resume['data_fingerprint']}); resume on the original data, or "
                            f"add --allow-data-change to continue on this one anyway")
        note = (f"data set changed on resume at epoch {resume['epoch']}: "
                f"{resume['data_fingerprint']} -> {fingerprint}")
        say(f"warning: {note}", file=sys.stderr)
        warnings.append(note)

    data_args = dict(sequence_length=cfg.sequence_length, image_size=cfg.image_size,
                     channels=cfg.channels)
    train_set = ClipDataset(cfg.data_dir, "train", augment=cfg.augment, seed=cfg.seed,
                            raw=True, **data_args)
    val_set = ClipDataset(cfg.data_dir, "val", raw=True, **data_args)
    if not len(train_set) or not len(val_set):
        raise UserError(f"the data set in {cfg.data_dir}/ needs clips in both the train and the "
                        f"val split (it has {len(train_set)} and {len(val_set)})")
    sampler = EpochSampler(len(train_set), cfg.seed, dist.rank, dist.world_size)
    train_loader = make_train_loader(train_set, sampler, cfg, device)
    val_loader, val_shard = None, list(range(dist.rank, len(val_set), dist.world_size))

    torch.manual_seed(cfg.seed)
    model = build_model(cfg).place(device, cfg)
    # The wrappers share their parameters with `model`, whose state_dict (without their
    # 'module.' and '_orig_mod.' prefixes) is what checkpoints hold.
    step_model = DistributedDataParallel(model) if dist.enabled else model
    step_model = torch.compile(step_model) if cfg.compile else step_model
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: lr_factor(e, cfg.num_epochs))
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    history, best_val_acc, best_epoch, val_acc = new_history(), -1.0, 0, None
    start_epoch, samples_done, global_step = 0, 0, 0
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, seen
    if resume is not None:
        model.load_state_dict(resume["model_state_dict"])
        optimizer.load_state_dict(resume["optimizer_state_dict"])
        match_layouts(optimizer)
        scheduler.load_state_dict(resume["scheduler_state_dict"])
        rebuild_schedule(optimizer, scheduler, cfg)
        if resume["config"]["num_epochs"] != cfg.num_epochs:
            say(f"Learning-rate schedule rebuilt for {cfg.num_epochs} epochs: epoch "
                  f"{resume['epoch'] + 1} continues at lr {optimizer.param_groups[0]['lr']:.2e}")
        if scaler is not None and resume.get("scaler_state_dict"):
            scaler.load_state_dict(resume["scaler_state_dict"])
        history = {k: list(resume.get(k, [])) for k in new_history()}
        best_val_acc, best_epoch = resume["best_val_acc"], resume.get("best_epoch", 0)
        val_acc, start_epoch = resume["val_acc"], resume["epoch"]
        samples_done, global_step = resume.get("samples_in_epoch", 0), resume.get("global_step", 0)
        saved_world = resume.get("world_size", 1)
        if samples_done and saved_world != dist.world_size:
            say(f"note: {saved_world} process(es) wrote this checkpoint and {dist.world_size} "
                f"run now, so epoch {start_epoch + 1} restarts at its beginning (the position "
                f"inside it does not carry over to another number of processes)")
            samples_done = 0
        if samples_done:
            partial = resume["partial_epoch"]
            sums = (partial[dist.rank] if partial.dim() == 2 else partial).to(device)
        if dist.is_main:
            run_log.truncate_after(cfg.model_dir, start_epoch)
    if start_epoch >= cfg.num_epochs:
        say(f"All {cfg.num_epochs} epochs of this run are done (best val acc "
              f"{100 * best_val_acc:.2f}% at epoch {best_epoch}). To train longer: "
              f"python train.py --resume --epochs {cfg.num_epochs + 50}")
        return 0

    def save(epochs_done: int, is_best: bool = False, epoch_end: bool = True,
             interrupted: str | None = None) -> list[str]:
        """Every process takes part (RNG states and partial sums are gathered); process 0
        writes. Returns the file names written."""
        rngs, partials = dist.gather(rng_state()), dist.gather(sums.cpu())
        state = {"format_version": FORMAT_VERSION, "epoch": epochs_done,
                "global_step": global_step, "samples_in_epoch": samples_done,
                "partial_epoch": torch.stack(partials), "interrupted": interrupted,
                "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(),
                "scheduler_state_dict": scheduler.state_dict(),
                "scaler_state_dict": scaler.state_dict() if scaler else None,
                "val_acc": val_acc, "best_val_acc": best_val_acc, "best_epoch": best_epoch,
                **history, "timestamp": datetime.now().astimezone().isoformat(timespec="seconds"),
                "config": cfg.to_dict(), "data_fingerprint": fingerprint,
                "data_splits": manifest["splits"], "rng_state": rngs[0],
                "rank_rng_states": rngs, "world_size": dist.world_size, "warnings": warnings}
        if not dist.is_main:
            return []
        return store.save(state, is_best=is_best, epoch_end=epoch_end)

    curves = {"epochs": len(history["train_losses"]), "time": 0.0}

    def draw_curves(force: bool = False) -> None:
        """training_curves.png, when it lacks epochs: at most every CURVES_EVERY_S
        seconds, and with `force` (on leaving the loop: the run's end, a stop, an error)."""
        epochs = len(history["train_losses"])
        if dist.is_main and epochs > curves["epochs"] and (
                force or time.time() - curves["time"] > CURVES_EVERY_S):
            run_log.plot_curves(cfg.model_dir, history)
            curves.update(epochs=epochs, time=time.time())

    def stop_now(signum: int, epochs_done: int) -> int:
        reason = signal.Signals(signum).name
        save(epochs_done, epoch_end=False, interrupted=reason)
        store.wait()
        where = (f"epoch {epochs_done + 1}, {samples_done}/{len(sampler.shard())} clips"
                 + (" of each process" if dist.enabled else "")
                 if samples_done else f"the end of epoch {epochs_done}")
        say(f"Stopped by {reason} at {where}; saved {store.latest}.\n"
            f"Continue with: {resume_command(cfg, dist.enabled)}", file=sys.stderr, flush=True)
        dist.barrier()
        return EXIT_CODES.get(signum, 1)

    say(f"Training {cfg.backbone} CNN-{cfg.temporal.upper()} ({count_parameters(model):,} "
          f"parameters) on {device}{' with ' + str(amp_dtype).split('.')[-1] if amp_dtype else ''}"
          f": {len(train_set)} train / {len(val_set)} val clips of {cfg.sequence_length} frames "
          f"from {cfg.data_dir}/, checkpoints in {cfg.model_dir}/"
          + (f"; {dist.world_size} processes, {dist.world_size * cfg.batch_size} clips per step"
             if dist.enabled else ""), flush=True)
    with StopRequest(verbose=dist.is_main) as stop, contextlib.ExitStack() as on_exit:
        on_exit.callback(draw_curves, force=True)  # however the loop ends
        for epoch in range(start_epoch, cfg.num_epochs):
            began = time.time()
            sampler.set_epoch(epoch, samples_done)
            if samples_done:  # resuming inside this epoch: the RNG as it was at that step
                set_rng_state((resume.get("rank_rng_states") or [resume["rng_state"]])[dist.rank])
            else:
                torch.manual_seed(epoch_seed(cfg.seed, epoch) + 1_000_003 * dist.rank)
                sums.zero_()
            lr = optimizer.param_groups[0]["lr"]
            model.train()
            shown = time.time()
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.num_epochs}", leave=False,
                       dynamic_ncols=True, mininterval=0.5, disable=not dist.is_main)
            for clips, labels in bar:
                step_sums = None
                while step_sums is None:
                    optimizer.zero_grad(set_to_none=True)
                    try:
                        step_sums = accumulate_gradients(step_model, clips, labels,
                                                         cfg.accum_steps, amp_dtype, scaler)
                    except torch.cuda.OutOfMemoryError:
                        pass  # handled below, once the exception has let go of its tensors
                    if step_sums is None:
                        optimizer.zero_grad(set_to_none=True)
                        torch.cuda.empty_cache()
                        micro = math.ceil(len(labels) / cfg.accum_steps)  # this batch's
                        if not cfg.auto_batch or micro == 1:
                            if not dist.enabled:  # other processes cannot join a save now
                                save(epoch, epoch_end=False)
                                store.wait()
                            raise UserError(
                                f"CUDA ran out of memory on micro-batches of {micro} clips. Lower "
                                f"--batch-size, --image-size or --sequence-length, split batches "
                                f"with --accum-steps {min(cfg.batch_size, 2 * cfg.accum_steps)}, "
                                f"or add --auto-batch; "
                                f"progress is saved, continue with {resume_command(cfg)}")
                        cfg.accum_steps = min(cfg.batch_size, 2 * cfg.accum_steps)
                        say(f"CUDA out of memory: micro-batch halved to "
                              f"{math.ceil(len(labels) / cfg.accum_steps)} clips (--accum-steps "
                              f"{cfg.accum_steps}); the effective batch stays {cfg.batch_size}",
                              file=sys.stderr, flush=True)
                sums += step_sums
                optimizer_step(model, optimizer, scaler, cfg.grad_clip)
                global_step += 1
                samples_done += len(labels)
                if time.time() - shown > 1.0:  # reading the sums waits for the GPU: rarely
                    shown = time.time()
                    loss_sum, correct, seen = sums.tolist()
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%",
                                    refresh=False)
                signum = dist.max_int(stop.signum or 0)  # all processes stop at the same step
                if signum:
                    return stop_now(signum, epoch)
                if cfg.save_every_steps and global_step % cfg.save_every_steps == 0:
                    save(epoch, epoch_end=False)
            bar.close()
            loss_sum, correct, seen = dist.sum(sums.clone()).tolist()
            train_seconds = time.time() - began

            # Validation batches as large as the training micro-batches: they fit in memory.
            if val_loader is None or val_loader.batch_size != micro_batch(cfg):
                val_loader = make_loader(val_set, micro_batch(cfg), cfg, device, sampler=val_shard)
            # The plain model: DistributedDataParallel's forward would exchange buffers, and
            # the processes' shards may differ by a batch.
            dist.share_buffers(model)
            val_loss, val_acc = validation_metrics(
                *predict(model, val_loader, device, amp_dtype, cfg.image_size), dist)
            scheduler.step()
            samples_done = 0
            for key, value in (("train_losses", loss_sum / seen), ("val_losses", val_loss),
                               ("train_accuracies", correct / seen), ("val_accuracies", val_acc),
                               ("learning_rates", lr), ("epoch_seconds", time.time() - began)):
                history[key].append(value)
            is_best = val_acc > best_val_acc
            if is_best:
                best_val_acc, best_epoch = val_acc, epoch + 1
            sums.zero_()
            save_began = time.time()
            written = save(epoch + 1, is_best=is_best)
            save_seconds = time.time() - save_began
            seconds = time.time() - began
            signum = dist.max_int(stop.signum or 0)  # arrived during validation or the save
            if not dist.is_main:
                if signum:
                    return stop_now(signum, epoch + 1)
                continue
            run_log.append_epoch(cfg.model_dir, {
                "epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "seconds": round(seconds, 3),
                "train_seconds": round(train_seconds, 3), "save_block_seconds": round(save_seconds, 4),
                "clips": int(seen),
                "saved": written, "time": datetime.now().astimezone().isoformat(timespec="seconds")})
            draw_curves()
            print(f"epoch {epoch + 1:3d}/{cfg.num_epochs}  train loss {loss_sum / seen:.4f} "
                  f"acc {100 * correct / seen:5.1f}%  val loss {val_loss:.4f} acc "
                  f"{100 * val_acc:5.1f}%  lr {lr:.2e}  {seconds:5.1f}s  saved "
                  f"{', '.join(written)}", flush=True)
            if signum:
                return stop_now(signum, epoch + 1)

    if not dist.is_main:
        return 0
    store.wait()
    print(f"Done: best val acc {100 * best_val_acc:.2f}% at epoch {best_epoch}, saved as "
          f"{store.best}.")
    test = evaluate_checkpoint(store.best, device=device.type, batch_size=micro_batch(cfg))
    if test["clips"]:
        print(f"Test accuracy of {store.best.name} on {test['clips']} clips of unseen subjects: "
              f"{100 * test['accuracy']:.2f}% (details: python evaluate.py --model {store.best})")
    return 0


def accumulate_gradients(model, clips: torch.Tensor, labels: torch.Tensor, accum_steps: int,
                         amp_dtype: torch.dtype | None, scaler) -> torch.Tensor:
    """Backpropagate one batch as `accum_steps` micro-batches whose gradients add up to the
    whole batch's. Returns [loss sum, correct, clips] of the batch (float64)."""
    sums = torch.zeros(3, dtype=torch.float64, device=clips.device)
    pieces = list(zip(clips.chunk(accum_steps), labels.chunk(accum_steps)))
    for i, (micro_clips, micro_labels) in enumerate(pieces):
        # Under DistributedDataParallel, gradients are exchanged once, after the last piece.
        last = i == len(pieces) - 1
        exchange = contextlib.nullcontext() if last or not hasattr(model, "no_sync") \
            else model.no_sync()
        with exchange:
            with torch.autocast(clips.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(micro_clips)
            loss = F.cross_entropy(logits.float(), micro_labels)
            weight = len(micro_labels) / len(labels)
            (scaler.scale(loss * weight) if scaler else loss * weight).backward()
        sums[0] += loss.detach().double() * len(micro_labels)
        sums[1] += (logits.argmax(1) == micro_labels).sum()
        sums[2] += len(micro_labels)
    return sums


def optimizer_step(model, optimizer, scaler, grad_clip: float) -> None:
    """Clip the gradient norm (after unscaling, with fp16) and update the weights."""
    if scaler:
        scaler.unscale_(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def validation_metrics(logits: torch.Tensor, labels: torch.Tensor,
                       dist: Distributed) -> tuple[float, float]:
    """Loss and accuracy over the whole validation set, each process holding a shard."""
    sums = torch.tensor([F.cross_entropy(logits, labels, reduction="sum").item(),
                         (logits.argmax(1) == labels).sum().item(), len(labels)],
                        dtype=torch.float64, device=dist.device)
    loss_sum, correct, seen = dist.sum(sums).tolist()
    return loss_sum / seen, correct / seen


def rebuild_schedule(optimizer, scheduler, cfg: Config) -> None:
    """Make the restored schedule follow the current config: a new --lr becomes the base,
    a new --epochs a new horizon, at the position the run has reached."""
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.learning_rate
        group["weight_decay"] = cfg.weight_decay
    scheduler.base_lrs = [cfg.learning_rate] * len(optimizer.param_groups)
    for group in optimizer.param_groups:
        group["lr"] = cfg.learning_rate * lr_factor(scheduler.last_epoch, cfg.num_epochs)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def resume_command(cfg: Config, distributed: bool = False) -> str:
    extra = "" if cfg.model_dir == Config.model_dir else f" --model-dir {cfg.model_dir}"
    launcher = "torchrun [the same torchrun options] " if distributed else "python "
    return f"{launcher}train.py --resume{extra}"


# ----------------------------------------------------------------------------- starting a run
def resume_config(state: dict, given: dict, model_dir: str) -> tuple[Config, list[str]]:
    """The checkpoint's config with the options given now applied; refuses a change of
    architecture, and lists the other changes."""
    saved = Config.from_dict(state["config"])
    given = {k: v for k, v in given.items() if k != "model_dir"}
    wanted = build_config(given, base=saved)
    diff = architecture_diff(saved, wanted)
    if diff:
        raise UserError("cannot resume with a different model (" + "; ".join(diff) + "). "
                        "Drop these options to resume, or start a new run with --force")
    changes = [f"{flag_of(k)} {v} (checkpoint: {getattr(saved, k)})"
               for k, v in given.items() if getattr(saved, k) != v]
    wanted.model_dir = model_dir
    return wanted, changes


def ask_to_continue(store: CheckpointStore) -> bool:
    """The main.py / checkpoint_training.py question: continue the run in the model
    folder, or start a new one? Never blocks without a terminal: then it continues."""
    try:
        state = load_checkpoint(store.latest)
        where = (f"epoch {state['epoch']}/{state['config'].get('num_epochs')}, best val acc "
                 f"{100 * state['best_val_acc']:.2f}%, saved {state['timestamp']}")
    except DamagedCheckpoint as err:
        where = f"{err}; continuing falls back to the newest intact checkpoint"
    print(f"Found a run in {store.dir}/: {store.latest.name} ({where}).")
    if not sys.stdin.isatty():
        print("Standard input is not a terminal, so continuing that run "
              "(pass --force to start a new run instead).")
        return True
    while True:
        try:
            answer = input("Continue it or start a new run? [C]ontinue / [n]ew: ").strip().lower()
        except EOFError:
            answer = ""
        if answer in ("", "c", "continue", "y", "yes", "r", "resume"):
            return True
        if answer in ("n", "new"):
            return False
        print("Please answer c (continue) or n (new; the old run is archived, not deleted).")


def build_parser(prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description or "Train the CNN-LSTM fatigue detector.")
    action = parser.add_argument_group("what to do")
    action.add_argument("--resume", action="store_true",
                        help="continue the run in --model-dir from latest_model.pth (its own "
                             "config; options given here override it)")
    action.add_argument("--force", action="store_true",
                        help="start a new run; an earlier run's files move to "
                             "<model-dir>/archive/, nothing is deleted")
    action.add_argument("--allow-data-change", action="store_true",
                        help="resume even though the data set differs from the checkpoint's")
    add_config_args(parser)
    return parser


def run(args: argparse.Namespace, ask: bool = False) -> int:
    """Start or resume a run as the parsed options say (shared by every entry point)."""
    if args.resume and args.force:
        raise UserError("--resume and --force contradict each other; choose one")
    given = given_options(args)
    dist = Distributed(pick_device(given.get("device", "auto")))
    try:
        return start(args, given, ask, dist)
    finally:
        dist.close()


def start(args: argparse.Namespace, given: dict, ask: bool, dist: Distributed) -> int:
    # Under torchrun, process 0 alone touches the model folder and makes data; the others
    # wait for it and load the checkpoint it chose.
    main_process = dist.is_main
    say = print if main_process else _silent
    model_dir = given.get("model_dir", Config.model_dir)
    store = CheckpointStore(model_dir, background=True)
    for stale in store.clean_temp_files() if main_process else []:
        say(f"removed {stale}, left by an interrupted save")
    resume = args.resume
    if ask and not dist.enabled and not args.resume and not args.force and store.latest.is_file():
        resume = ask_to_continue(store)
    notes: list[str] = []
    found: dict = {}
    if resume:
        def choose() -> tuple[str, list[str]]:
            path, found["state"], notes = store.find_resumable()
            return str(path), notes
        path, notes = dist.on_main(choose)
        state = found["state"] if main_process else load_checkpoint(path)
        cfg, changes = resume_config(state, given, model_dir)
        for note in notes:
            say(f"warning: {note}", file=sys.stderr)
        if changes:
            say("warning: options changed on resume, applied: " + "; ".join(changes),
                file=sys.stderr)
        say(f"Resuming {path} at epoch {state['epoch']}"
            + (f", {state['samples_in_epoch']} clips into epoch {state['epoch'] + 1}"
               if state.get("samples_in_epoch") else ""))
    else:
        state = None
        cfg = build_config(given)
    if not dist.enabled:  # the run's own device (a resumed run's from its checkpoint)
        dist.device = pick_device(cfg.device)
    store.save_every, store.keep_last = cfg.save_every, cfg.keep_last

    def prepare_folders() -> None:
        ensure_dataset(cfg.data_dir, explicitly_given="data_dir" in given or
                       cfg.data_dir != DEFAULT_DATA_DIR, seed=0, image_size=cfg.image_size,
                       sequence_length=cfg.sequence_length, channels=cfg.channels)
        # A data set that does not fit the options is an error before anything is moved.
        ClipDataset(cfg.data_dir, "train", cfg.sequence_length, cfg.image_size, cfg.channels)
        if state is None and store.has_run():
            say(f"Moved the previous run's files to {store.archive_run()}/ (nothing deleted).")

    dist.on_main(prepare_folders)
    if state is None:
        cfg.num_classes = len(load_manifest(cfg.data_dir)["classes"])
    return fit(cfg, store, state, allow_data_change=args.allow_data_change, warnings=notes,
               dist=dist)


def main(argv: list[str] | None = None, ask: bool = False) -> int:
    return run(build_parser().parse_args(argv), ask=ask)


if __name__ == "__main__":
    run_cli(main)
