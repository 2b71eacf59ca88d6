"""The training loop.

Read `Trainer.train` first: the whole run on one screen. An epoch is `train_epoch`,
`validate`, `end_epoch`; a step is `train_step`. The run's position lives in `self.state`
(fatigue.training.state.TrainState), what a checkpoint holds is decided by
fatigue.checkpoints.schema, and which files it goes to by the CheckpointStore: the loop only
says "save now". A stop (Ctrl+C, SIGTERM) is one exception, `StopTraining`, raised at a step
or epoch boundary and caught in one place, which saves once.

Every random choice is derived from (seed, epoch, clip) and the checkpoint holds the
position inside the epoch and every RNG state, so a run that is stopped and resumed ends
with the same weights, bit for bit on CPU, as one that never stopped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
import time
from datetime import datetime
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from config import Config, camera_jitter, flag_of, unused_model_fields
from fatigue.data.clips import ClipDataset
from fatigue import progress, seeds, startup
from fatigue.checkpoints import run_log, schema
from fatigue.checkpoints.store import CheckpointStore
from fatigue.checkpoints.tensorboard_log import TensorBoardLog
from fatigue.data.clip_store import data_fingerprint, load_manifest
from fatigue.data.loaders import EpochSampler, make_loader, make_train_loader
from fatigue.data.video import crop_settings
from fatigue.errors import NodeError, UserError
from fatigue.inference.evaluation import evaluate_checkpoint, predict
from fatigue.inference.alarm import AlarmSettings
from fatigue.inference.metrics import alarm_off_threshold, alarm_threshold, positive_index
from fatigue.text import arg, clips_into_epoch
from fatigue.training import determinism
from fatigue.training.distributed import Distributed, exchange
from fatigue.training.optimizer import make_optimizer
from fatigue.training.schedule import make_schedule
from fatigue.training.state import TrainState
from fatigue.training.stop import StopRequest, StopTraining, signals_raise
from model import autocast_dtype, build_model, count_parameters

CURVES_EVERY_S = 30.0  # drawing the curves takes a tenth of a second: not every short epoch
PROGRESS_EVERY_S = 1.0  # reading the running sums waits for the GPU: rarely


class Trainer:
    """One run: its data, model, optimizer and position, built (and restored from
    `checkpoint`) on construction; `train()` runs it. Under torchrun every process has
    one; process 0 alone writes files and prints."""

    def __init__(self, cfg: Config, store: CheckpointStore, dist: Distributed,
                 checkpoint: dict | None = None, allow_data_change: bool = False,
                 warnings: list[str] | tuple = (),
                 pretrained: tuple[dict, str] | None = None,
                 continue_with: str | None = None) -> None:
        self.cfg, self.store, self.dist, self.device = cfg, store, dist, dist.device
        self.say = dist.say
        # The command that continues this run, printed after a stop; "" when the caller
        # (a cross-validation fold) prints its own.
        self.continue_with = (resume_command(cfg, dist.enabled) if continue_with is None
                              else continue_with)
        self.amp_dtype = autocast_dtype(cfg.amp, self.device)
        self.accum_steps = cfg.accum_steps  # raised by --auto-batch after an out-of-memory
        self.deterministic = determinism.is_deterministic(cfg, self.device)
        determinism.apply(self.deterministic, self.device)
        self.identity = self._identity(checkpoint, allow_data_change, warnings,
                                       pretrained[1] if pretrained else None)

        data_args = dict(sequence_length=cfg.sequence_length, image_size=cfg.image_size,
                         channels=cfg.channels)
        self.train_set = ClipDataset(cfg.data_dir, "train", augment=cfg.augment, seed=cfg.seed,
                                     raw=True, camera_jitter=self.camera_jitter, **data_args)
        self.val_set = ClipDataset(cfg.data_dir, "val", raw=True, **data_args)
        if not len(self.train_set) or not len(self.val_set):
            raise UserError(f"the data set in {cfg.data_dir}/ needs clips in both the train and "
                            f"the val split (it has {len(self.train_set)} and {len(self.val_set)})")
        present = set(self.train_set.labels)
        missing = [name for k, name in enumerate(self.train_set.manifest["classes"])
                   if k not in present]
        if missing and checkpoint is None:  # said once, when the run starts
            self.say(f"warning: the training split of {cfg.data_dir}/ has no "
                     f"{' or '.join(missing)} clips: the model cannot learn to tell them "
                     f"apart; add videos of that class from more subjects", file=sys.stderr)
        startup.mark("data sets opened")
        self.sampler = EpochSampler(len(self.train_set), cfg.seed, dist.rank, dist.world_size)
        self.train_loader = make_train_loader(self.train_set, self.sampler, cfg, self.device)
        self.val_shard = list(range(dist.rank, len(self.val_set), dist.world_size))
        self.val_loader = None

        torch.manual_seed(seeds.model_init_seed(cfg.seed))
        model = built_model(cfg, self.device, pretrained[0] if pretrained else None)
        # The wrappers share their parameters with `model`, whose state_dict (without their
        # 'module.' and '_orig_mod.' prefixes) is what checkpoints hold.
        # A frozen backbone leaves its parameters without gradients for a while.
        with exchange():  # it sends process 0's weights to the others
            step_model = DistributedDataParallel(
                model, find_unused_parameters=cfg.freeze_backbone_epochs > 0) \
                if dist.enabled else model
        self.step_model = torch.compile(step_model) if cfg.compile else step_model
        optimizer = make_optimizer(model.parameters(), cfg)
        scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.parts = schema.Trainables(model, optimizer, make_schedule(optimizer, cfg), scaler)
        self.state = TrainState(self.device)
        if checkpoint is not None:
            truncate = (lambda epoch: run_log.match_checkpoint(cfg.model_dir, epoch,
                                                               self.lost_log_line)) \
                if dist.is_main else None
            for note in schema.restore(checkpoint, self.parts, self.state, cfg, dist.rank,
                                       dist.world_size,
                                       fingerprint=self.identity.data_fingerprint,
                                       truncate_log=truncate):
                self.say(note)
        self.curves_drawn = (len(self.state.history["train_losses"]), 0.0)  # epochs, time
        self.tensorboard: TensorBoardLog | None = None  # opened by train(), process 0 only
        startup.mark("model built and restored")

    # ------------------------------------------------------------------------- the run
    def train(self) -> int:
        """Train to the last epoch, or until a stop; returns the exit code."""
        cfg, state = self.cfg, self.state
        if state.epoch >= cfg.num_epochs:
            if self.dist.is_main and run_log.curves_outdated(cfg.model_dir, self.store.latest):
                run_log.plot_curves(cfg.model_dir, state.history)
            done = ((f"All {cfg.num_epochs} epochs of this run are done" if cfg.num_epochs > 1
                     else "The one epoch of this run is done")
                    if state.epoch == cfg.num_epochs else f"This run has trained {state.epoch} "
                    f"epochs, more than --epochs {cfg.num_epochs}")
            begun = clips_into_epoch(state.samples_in_epoch, state.epoch + 1, self.dist.world_size)
            begun = (f" It had also gone {begun}, kept in {self.store.latest.name}."
                     if state.mid_epoch else "")  # stopped inside the next: for a longer run
            longer = (f" To train longer: {self.continue_with} --epochs {state.epoch + 50}"
                      if self.continue_with else "")
            self.say(f"{done} (best val acc {100 * state.best_val_acc:.2f}% at epoch "
                     f"{state.best_epoch}).{begun}{longer}")
            return 0
        self.announce()
        with StopRequest(verbose=self.dist.is_main) as self.stop_request:
            with contextlib.ExitStack() as on_exit:
                if self.dist.is_main:
                    self.tensorboard = TensorBoardLog.open(cfg.model_dir, state.global_step,
                                                           cfg.to_dict(), self.say)
                if self.tensorboard:
                    on_exit.callback(self.tensorboard.close)
                on_exit.callback(self.draw_curves, force=True)  # however the loop is left
                try:
                    while state.epoch < cfg.num_epochs:
                        began = time.time()
                        train_metrics = self.train_epoch()
                        val_metrics = self.validate()
                        self.end_epoch(train_metrics, val_metrics, began)
                    self.stop_if_write_failed()  # the last save, before the curves wait on it
                except StopTraining as stop:
                    return self.stop(stop)
            signum = self.requested_stop()  # one arrived during the last draw: all see it
        return self.finish(signum)

    # ------------------------------------------------------------------------- an epoch
    def train_epoch(self) -> dict:
        """Train from the run's position to the end of the epoch; returns its metrics."""
        cfg, state, dist = self.cfg, self.state, self.dist
        began = time.time()
        self.sampler.set_epoch(state.epoch, state.samples_in_epoch)
        if not state.mid_epoch:  # resumed inside an epoch: the RNG was restored as it was
            torch.manual_seed(seeds.step_seed(cfg.seed, state.epoch, dist.rank))
            state.restart_epoch()
        lr = self.parts.optimizer.param_groups[0]["lr"]
        self.parts.model.train_mode(freeze_backbone=state.epoch < cfg.freeze_backbone_epochs)
        # A bar on a terminal; in a log, a plain line every 10 s (fatigue.progress).
        done = math.ceil(state.samples_in_epoch / cfg.batch_size)  # steps, when resumed
        clips_before = state.samples_in_epoch  # this process's, trained before a resume
        bar = progress.bar(self.train_loader, desc=f"epoch {state.epoch + 1}/{cfg.num_epochs}",
                           unit="step", initial=done, total=done + len(self.train_loader),
                           count=lambda batch: len(batch[1]), count_unit="clips",
                           disable=not dist.is_main, leave=False, dynamic_ncols=True,
                           mininterval=0.5)
        shown = time.time()
        for clips, labels in bar:
            sums = self.train_step(clips, labels)
            state.add_step(sums, len(labels))
            if self.tensorboard and state.global_step % cfg.log_every_steps == 0:
                self.tensorboard.step(state.global_step, sums[0] / sums[2])
            if time.time() - shown > PROGRESS_EVERY_S:
                shown = time.time()
                loss_sum, correct, seen = state.sums.tolist()
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%",
                                refresh=False)
            self.raise_if_stopped()  # or a checkpoint write failed, within a step of it
            if cfg.save_every_steps and state.global_step % cfg.save_every_steps == 0:
                self.save(epoch_end=False)
        bar.close()
        loss_sum, correct, seen = dist.sum(state.sums.clone()).tolist()
        # `seconds` times this process's part of a resumed epoch: `timed_clips`, for speeds.
        timed = (state.samples_in_epoch - clips_before) * dist.world_size
        return {"loss": loss_sum / seen, "accuracy": correct / seen, "clips": int(seen),
                "timed_clips": timed, "lr": lr, "seconds": time.time() - began}

    def validate(self) -> dict:
        """Loss and accuracy of the model on the whole validation split."""
        # Batches as large as the training micro-batches: they fit in memory.
        batch = math.ceil(self.cfg.batch_size / self.accum_steps)
        if self.val_loader is None or self.val_loader.batch_size != batch:
            self.val_loader = make_loader(self.val_set, batch, self.cfg, self.device,
                                          sampler=self.val_shard)
        # The plain model: DistributedDataParallel's forward would exchange buffers, and the
        # processes' shards may differ by a batch.
        model = self.parts.model
        self.dist.share_buffers(model)
        logits, labels = predict(model, self.val_loader, self.device, self.amp_dtype,
                                 self.cfg.image_size)
        sums = torch.tensor([F.cross_entropy(logits, labels, reduction="sum").item(),
                             (logits.argmax(1) == labels).sum().item(), len(labels)],
                            dtype=torch.float64, device=self.device)
        loss_sum, correct, seen = self.dist.sum(sums).tolist()  # each process holds a shard
        # The alarm's thresholds, chosen on the whole validation split's P(positive class).
        shards = self.dist.gather((torch.softmax(logits.float(), 1)[:, self.positive].numpy(),
                                   (labels == self.positive).numpy()))
        positive = np.concatenate([p for _, p in shards])
        scores = np.concatenate([s for s, _ in shards])
        on = alarm_threshold(positive, scores)
        off = alarm_off_threshold(positive, scores, on, AlarmSettings().off_for(on))
        return {"loss": loss_sum / seen, "accuracy": correct / seen, "threshold": on,
                "off_threshold": off}

    def end_epoch(self, train: dict, val: dict, began: float) -> None:
        """Step the schedule, record the epoch, save, log and print it."""
        # Before the epoch enters the history, the log or the curves.
        self.refuse_diverged(val["loss"])
        self.parts.scheduler.step()
        is_best = self.state.end_epoch(train["loss"], train["accuracy"], val["loss"],
                                       val["accuracy"], train["lr"], time.time() - began,
                                       val["threshold"], val["off_threshold"])
        if self.tensorboard:  # before the checkpoint that covers it (see tensorboard_log)
            self.tensorboard.epoch(self.state.global_step, self.state.epoch, train, val)
        save_began = time.time()
        written = self.save(is_best=is_best)
        save_seconds = time.time() - save_began
        signum = self.requested_stop()  # arrived during validation or the save
        if self.dist.is_main:
            self.report_epoch(train, val, written, time.time() - began, save_seconds)
        if signum and self.state.epoch < self.cfg.num_epochs:
            raise StopTraining(signum)  # after the last epoch, finish() says the run is done

    # ------------------------------------------------------------------------- a step
    def train_step(self, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimizer step over a batch (as micro-batches, with mixed precision when on);
        returns its [loss sum, correct, clips]. On CUDA out-of-memory the batch is retried
        with smaller micro-batches (--auto-batch), or the run saves and stops."""
        optimizer = self.parts.optimizer
        while True:
            optimizer.zero_grad(set_to_none=True)
            try:
                sums = accumulate_gradients(self.step_model, clips, labels, self.accum_steps,
                                            self.amp_dtype, self.parts.scaler)
                break
            except torch.cuda.OutOfMemoryError:
                pass  # handled below, once the exception has let go of its tensors
            self.out_of_memory(len(labels))
        optimizer_step(self.parts.model, optimizer, self.parts.scaler, self.cfg.grad_clip)
        return sums

    def out_of_memory(self, batch: int) -> None:
        self.parts.optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        micro = math.ceil(batch / self.accum_steps)
        more = min(self.cfg.batch_size, 2 * self.accum_steps)
        # Smaller micro-batches add the gradients up in another order: not in exact mode on a
        # GPU (the only device that runs out of memory this way).
        if not self.cfg.auto_batch or micro == 1 or \
                determinism.exact_on_gpu(self.deterministic, self.device):
            if not self.dist.enabled:  # other processes cannot join a save now
                self.save(epoch_end=False)
                self.store.wait()
            raise UserError(
                f"CUDA ran out of memory on micro-batches of {micro} clips. Lower --batch-size, "
                f"--image-size or --sequence-length, split batches with --accum-steps {more}, "
                f"or add --auto-batch (not with --deterministic); progress is saved, continue with "
                f"{self.continue_with or 'the same command'}")
        self.accum_steps = more
        self.say(f"CUDA out of memory: micro-batch halved to {math.ceil(batch / more)} clips "
                 f"(--accum-steps {more}); the effective batch stays {self.cfg.batch_size}",
                 file=sys.stderr, flush=True)

    # ------------------------------------------------------------------------- stops, saves
    def requested_stop(self) -> int:
        """The signal number when any process was asked to stop, else 0 (collective: all
        processes call it at the same point, so they all stop at the same step).

        A checkpoint write that failed in the background stops them all there too: process
        0, the writer, raises its error (said once); the others leave without a word rather
        than meet its closed connection at the next exchange. They exit 0: torchrun then
        names process 0, whose error is the one to read, as the root cause (an exit 1 would
        be seen first, and process 0 killed before it said why)."""
        signum, write_failed = self.dist.max_ints(self.stop_request.signum or 0,
                                                  int(self.store.failed))
        if write_failed:
            self.store.wait()  # raises the error on process 0
            raise SystemExit(0)
        return signum

    def stop_if_write_failed(self) -> None:
        """Wait for the last background write; when it failed, every process stops here
        (requested_stop) rather than process 0 alone where it next waits for the writer."""
        self.store.join()
        self.requested_stop()

    def refuse_diverged(self, val_loss: float = 0.0) -> None:
        """Stop a run that diverged (the loss became nan or inf: a learning rate too high),
        before it replaces a checkpoint; its epochs would all read 'nan' and end as a 'best'
        model of 50%. Diverged: weights or buffers that are no longer numbers, or a training
        loss (so far in the epoch) or validation loss that is not (with --amp fp16 the
        gradient scaler skips the steps of nan gradients, so the weights stay finite while
        the model's outputs overflow). Each process looks at its own (BatchNorm statistics
        differ between validations), and all stop together if one diverged."""
        tensors = [*self.parts.model.parameters(), *self.parts.model.buffers()]
        finite = math.isfinite(val_loss) and bool(self.state.sums[0].isfinite()) and \
            bool(torch.stack([t.isfinite().all() for t in tensors if t.is_floating_point()]).all())
        if not self.dist.max_ints(int(not finite))[0]:
            return
        self.stop_if_write_failed()  # the last save may still be writing latest in the background
        cfg, latest = self.cfg, self.store.latest
        saved = latest.is_file()
        kept = (f"{latest} keeps the position saved before it" if saved else
                "nothing of this run was saved")
        fp16 = self.amp_dtype == torch.float16
        lower = "a lower --lr" + (" (or --amp bf16 or off)" if fp16 else "")
        beyond = " or values beyond --amp fp16's range" if fp16 else ""
        again = (f"; continue from there with {lower}: {self.continue_with} --lr "
                 f"{cfg.learning_rate / 10:g}" if saved and self.continue_with
                 else f"; {lower} is needed")
        raise Diverged(f"training diverged in epoch {self.state.epoch + 1}: the loss became "
                       f"nan or inf, and the model no longer gives numbers (a learning rate "
                       f"too high for this model and data{beyond}: --lr {cfg.learning_rate:g}, "
                       f"the default {Config.learning_rate:g}). It is not saved: "
                       f"{kept}{again}")

    def raise_if_stopped(self) -> None:
        signum = self.requested_stop()
        if signum:
            raise StopTraining(signum)

    def save(self, is_best: bool = False, epoch_end: bool = True,
             interrupted: str | None = None) -> list[str]:
        """Checkpoint this moment. Every process takes part (RNG states and running sums are
        gathered); process 0 writes. Returns the file names written."""
        if not epoch_end:  # end_epoch looked already
            self.refuse_diverged()
        self.stop_if_write_failed()  # the last one's failure, before process 0 meets it alone
        rank_rngs = self.dist.gather(seeds.rng_state())
        rank_sums = self.dist.gather(self.state.sums.cpu())
        if not self.dist.is_main:
            return []
        if self.tensorboard:  # every point up to this step, before the checkpoint
            self.tensorboard.flush()
        # An --auto-batch change is part of the run: a resume keeps the smaller micro-batch.
        identity = dataclasses.replace(self.identity, config=dataclasses.replace(
            self.cfg, accum_steps=self.accum_steps))
        checkpoint = schema.snapshot(self.parts, self.state, identity, rank_sums, rank_rngs,
                                     interrupted)
        return self.store.save(checkpoint, is_best=is_best, epoch_end=epoch_end)

    def stop(self, stop: StopTraining) -> int:
        """The one place a stop is handled: save the position, say how to continue."""
        state = self.state
        self.save(epoch_end=False, interrupted=str(stop))
        self.stop_if_write_failed()
        where = (f"epoch {state.epoch + 1}, {state.samples_in_epoch}/"
                 f"{len(self.sampler.shard())} clips"
                 + (" of each process" if self.dist.enabled else "")
                 if state.mid_epoch else f"the end of epoch {state.epoch}")
        self.say(f"Stopped by {stop} at {where}; saved {self.store.latest}."
                 + (f"\nContinue with: {self.continue_with}" if self.continue_with else ""),
                 file=sys.stderr, flush=True)
        self.dist.barrier()
        return stop.exit_code

    def finish(self, signum: int = 0) -> int:
        """After the last epoch: score the best checkpoint on the unseen test subjects,
        unless a stop (`signum`) arrived after the last epoch's save."""
        code = StopTraining(signum).exit_code if signum else 0
        if not self.dist.is_main:
            return code
        self.store.wait()
        state, best = self.state, self.store.best
        if best.is_file():
            print(f"Done: best val acc {100 * state.best_val_acc:.2f}% at epoch "
                  f"{state.best_epoch}, saved as {best}.")
        else:  # a folder copied without it: the best epoch's weights are not here
            best = self.store.latest
            print(f"Done: best val acc {100 * state.best_val_acc:.2f}% at epoch "
                  f"{state.best_epoch}, but {self.store.best.name} is not in "
                  f"{self.cfg.model_dir}/; the test scores {best.name} instead.")
        try:  # the run is complete: a stop now only skips its test evaluation
            with signals_raise(StopTraining):
                # The run's own model takes the best weights: nothing is built or moved again.
                # The run's data (a --data-dir given at a resume), not the one the best
                # checkpoint names: the folder it ran from may differ, or the data changed.
                test = None if signum else evaluate_checkpoint(
                    best, data_dir=self.cfg.data_dir, device=self.device.type,
                    model=self.parts.model,
                    batch_size=math.ceil(self.cfg.batch_size / self.accum_steps))
        except StopTraining as stop:
            signum, test = stop.signum, None
        details = f"python evaluate.py --model {arg(best)}" + (
            "" if self.cfg.data_dir == Config.data_dir else f" --data-dir {arg(self.cfg.data_dir)}")
        if test is None:
            self.say(f"Stopped by {StopTraining(signum)} after the last epoch: the run is complete; "
                     f"its test evaluation was skipped ({details})", file=sys.stderr, flush=True)
            return StopTraining(signum).exit_code
        if test["data_warning"]:  # made again while the run trained: its test split is not
            print(f"warning: no test accuracy: {test['data_warning']}", file=sys.stderr)
        elif test["clips"]:
            print(f"Test accuracy of {best.name} on {test['clips']} clips of unseen subjects: "
                  f"{100 * test['accuracy']:.2f}% (details: {details})")
        return 0

    # ------------------------------------------------------------------------- reporting
    def announce(self) -> None:
        cfg, dist = self.cfg, self.dist
        amp = f" with {str(self.amp_dtype).split('.')[-1]}" if self.amp_dtype else ""
        self.say(f"Training {cfg.backbone} CNN-{cfg.temporal.upper()} "
                 f"({count_parameters(self.parts.model):,} parameters) on {self.device}{amp}: "
                 f"{len(self.train_set)} train / {len(self.val_set)} val clips of "
                 f"{cfg.sequence_length} frames from {cfg.data_dir}/, checkpoints in "
                 f"{cfg.model_dir}/"
                 + (f"; {dist.world_size} processes, {dist.world_size * cfg.batch_size} clips "
                    f"per step" if dist.enabled else ""), flush=True)

    def report_epoch(self, train: dict, val: dict, written: list[str], seconds: float,
                     save_seconds: float) -> None:
        """The epoch's line in training_log.jsonl and on the terminal, then the curves, each
        once its checkpoint is on disk."""
        epoch = self.state.epoch
        record = run_log.epoch_record(epoch, train, val, written, seconds, save_seconds,
                                      datetime.now().astimezone().isoformat(timespec="seconds"))
        self.once_saved(run_log.LOG_FILE, lambda: run_log.append_epoch(self.cfg.model_dir, record))
        line = (f"epoch {epoch:3d}/{self.cfg.num_epochs}  train loss {train['loss']:.4f} "
                f"acc {100 * train['accuracy']:5.1f}%  val loss {val['loss']:.4f} acc "
                f"{100 * val['accuracy']:5.1f}%  lr {train['lr']:.2e}  {seconds:5.1f}s  saved "
                f"{', '.join(written)}")
        # Said once the files are on disk (the write goes on beside the next epoch): a write
        # that fails says so in its own error instead, never after a line calling it saved.
        # Queued before the curves, so that drawing them does not hold the line back.
        self.store.when_saved(lambda: progress.write_line(line))
        self.draw_curves()

    def lost_log_line(self, epoch: int) -> dict:
        """The log line of a completed `epoch`, lost when the process ended between writing
        its checkpoint and logging it: rebuilt from the restored histories."""
        written = self.store.names_due(epoch, self.state.was_best(epoch))
        return run_log.rebuilt_record(epoch, self.state.history, written,
                                      len(self.sampler.shard()) * self.dist.world_size)

    def draw_curves(self, force: bool = False) -> None:
        """training_curves.png, when it lacks epochs: at most every CURVES_EVERY_S seconds,
        once the epoch's checkpoint is on disk; with `force` (on leaving the loop: the run's
        end, a stop, an error) at once, after the last save."""
        if force and self.dist.is_main:
            self.store.wait()  # the last save, and what waits for it, before the signals go
        epochs, drawn_at = len(self.state.history["train_losses"]), self.curves_drawn[1]
        if self.dist.is_main and epochs > self.curves_drawn[0] and (
                force or time.time() - drawn_at > CURVES_EVERY_S):
            history = self.state.history_copy()
            draw = self.warn_on_failure(run_log.CURVES_FILE,
                                        lambda: run_log.plot_curves(self.cfg.model_dir, history))
            if force:
                draw()  # never in place of the error that left the loop, if one did
            else:
                self.store.when_saved(draw)
            self.curves_drawn = (epochs, time.time())

    def once_saved(self, what: str, action: Callable[[], None]) -> None:
        """Run `action`, a record of the save just handed to the store, once that save is on
        disk (in the store's writer, while training goes on): the log and curves never get
        ahead of the checkpoints, and a run killed in its first save leaves no record of
        it. A failure is a warning: the checkpoint stands, and a resume rebuilds a lost log
        line and redraws outdated curves."""
        self.store.when_saved(self.warn_on_failure(what, action))

    def warn_on_failure(self, what: str, action: Callable[[], None]) -> Callable[[], None]:
        """`action`, writing the record `what`, with a file system error made a warning."""
        def guarded() -> None:
            try:
                action()
            except OSError as err:
                self.say(f"warning: could not write {what} in {self.cfg.model_dir}/ ({err}); "
                         f"the checkpoints are not affected", file=sys.stderr, flush=True)
        return guarded

    def _identity(self, checkpoint: dict | None, allow_data_change: bool,
                  warnings: list[str] | tuple, pretrained_from: str | None) -> schema.RunIdentity:
        """The run's options and data; refuses a resume on other data unless allowed."""
        cfg = self.cfg
        manifest = load_manifest(cfg.data_dir)
        fingerprint = data_fingerprint(manifest)
        # Each once: a resume warns again of what the run was started with.
        warnings = list(dict.fromkeys([*warnings, *(checkpoint["warnings"] if checkpoint
                                                     else [])]))
        mode = determinism.mode_change(checkpoint["deterministic"], self.deterministic,
                                       self.device) if checkpoint else None
        if mode:
            self.say(f"warning: {mode}", file=sys.stderr)
            warnings.append(f"resumed at epoch {checkpoint['epoch']}: {mode}")
        change = schema.data_change(checkpoint, fingerprint) if checkpoint else None
        if change:
            if not allow_data_change:
                raise NodeError(f"the data set in {cfg.data_dir}/ is not the one this run was "
                                f"trained on (fingerprint {fingerprint}, checkpoint "
                                f"{checkpoint['data_fingerprint']}); resume on the original data, "
                                f"or add --allow-data-change to continue on this one anyway")
            self.say(f"warning: {change}", file=sys.stderr)
            warnings.append(change)
        self.positive = positive_index(manifest["classes"])
        made = crop_settings(manifest)  # None: not cut from video (the drawn faces)
        self.camera_jitter = camera_jitter(cfg.augment_camera, made is not None)
        return schema.RunIdentity(
            config=cfg, data_fingerprint=fingerprint, data_splits=manifest["splits"],
            warnings=warnings, preprocessing=made, data_source=manifest.get("source"),
            data_classes=list(manifest["classes"]), deterministic=self.deterministic,
            pretrained_from=checkpoint["pretrained_from"] if checkpoint else pretrained_from)


# ----------------------------------------------------------------------------- step pieces
def accumulate_gradients(model: torch.nn.Module, clips: torch.Tensor, labels: torch.Tensor,
                         accum_steps: int, amp_dtype: torch.dtype | None,
                         scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    """Backpropagate one batch as `accum_steps` micro-batches whose gradients add up to the
    whole batch's. Returns [loss sum, correct, clips] of the batch (float64)."""
    sums = torch.zeros(3, dtype=torch.float64, device=clips.device)
    pieces = list(zip(clips.chunk(accum_steps), labels.chunk(accum_steps)))
    for i, (micro_clips, micro_labels) in enumerate(pieces):
        # Under DistributedDataParallel, gradients are exchanged once, after the last piece.
        last = i == len(pieces) - 1
        deferred = contextlib.nullcontext() if last or not hasattr(model, "no_sync") \
            else model.no_sync()
        with deferred:
            with torch.autocast(clips.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(micro_clips)
            loss = F.cross_entropy(logits.float(), micro_labels)
            weight = len(micro_labels) / len(labels)
            (scaler.scale(loss * weight) if scaler else loss * weight).backward()
        sums[0] += loss.detach().double() * len(micro_labels)
        sums[1] += (logits.argmax(1) == micro_labels).sum()
        sums[2] += len(micro_labels)
    return sums


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None, grad_clip: float) -> None:
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


class Diverged(UserError):
    """The model no longer gives numbers (Trainer.refuse_diverged): training cannot go on."""
    same_in_every_process = True  # the processes share the verdict: process 0 says it


def built_model(cfg: Config, device: torch.device,
                pretrained: dict | None = None) -> torch.nn.Module:
    """build_model on `device`, from ImageNet weights when `pretrained` (a new run's; a
    resume has its own). Sizes too large for memory (a few zeros too many in --lstm-hidden)
    are one line instead of the allocator's traceback."""
    try:
        model = build_model(cfg)
    except RuntimeError as err:
        if "can't allocate memory" not in str(err):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(err))
        size = f" (one of its layers alone needs {int(asked[1]) / 2**30:,.0f} GiB)" if asked else ""
        raise UserError(f"a model of these sizes does not fit in this machine's memory{size}; "
                        f"lower {model_sizes(cfg)}") from None
    if pretrained is not None:
        model.load_pretrained(pretrained, cfg.channels)
    try:
        model.place(device, cfg)
    except torch.OutOfMemoryError:
        raise UserError(f"a model of these sizes does not fit in the memory of {device}; "
                        f"lower {model_sizes(cfg)}") from None
    return model


def model_sizes(cfg: Config) -> str:
    """'--feature-dim (64), --lstm-hidden (128) or --lstm-layers (1)': the size options
    this model uses, with their values."""
    names = [n for n in ("cnn_width", "feature_dim", "lstm_hidden", "lstm_layers")
             if n not in unused_model_fields(cfg)]
    sizes = [f"{flag_of(n)} ({getattr(cfg, n)})" for n in names]
    return " or ".join(filter(None, (", ".join(sizes[:-1]), sizes[-1])))


def resume_command(cfg: Config, distributed: bool = False) -> str:
    """The command that continues this run."""
    extra = "" if cfg.model_dir == Config.model_dir else f" --model-dir {arg(cfg.model_dir)}"
    launcher = "torchrun [the same torchrun options] " if distributed else "python "
    return f"{launcher}train.py --resume{extra}"
