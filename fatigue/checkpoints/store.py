"""Checkpoint files: the one module that writes, reads, copies, archives and deletes them.

Layout of a model folder (default `models/`):
    latest_model.pth          after every epoch (and on interruption, mid-epoch)
    best_model.pth            whenever validation accuracy beats the best so far (a tie: at a
                              lower validation loss)
    checkpoint_epoch_N.pth    every `save_every` epochs (N = completed epochs)
    archive/<time>/           earlier runs, moved aside when a new run starts

Safety rules, each one a failure seen in other frameworks:
- Every file is written to a temporary name in the same folder, flushed, fsynced and
  renamed over the old one: a crash leaves the old file or the new one, never a torn one.
  latest_model.pth goes last, after the best model and epoch backup of the same save, so
  a resume from it never skips one of them.
- Every file carries a checksum of its contents, verified on load, so a file copied
  halfway or flipped on disk is found out before it is trusted.
- Files load only with `torch.load(weights_only=True)`: a file that would run code when
  unpickled is refused, never executed, and there is no unsafe fallback.
- Retention deletes old epoch backups only after the new save is on disk, and nothing
  else in the code deletes checkpoint files.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from fatigue.checkpoints import schema
from fatigue.checkpoints.run_log import CURVES_FILE, LOG_FILE
from fatigue.checkpoints.tensorboard_log import FOLDER as TENSORBOARD_FOLDER
from fatigue.errors import UserError
from fatigue.files import (commit, copy_to_temp, move_to_new_folder, remove_temp_files,
                           temp_path, torch_zip_kind, write_temp)
from fatigue.text import arg

LATEST = "latest_model.pth"
BEST = "best_model.pth"
ARCHIVE = "archive"
# archive/run_<time>/ holds an earlier run (train.py), archive/study_<time>/ an earlier
# cross-validation study (crossval.py).
RUN_ARCHIVE_PREFIX = "run"
STUDY_ARCHIVE_PREFIX = "study"
# The run's files and folders besides checkpoints: archived with them.
RUN_FILES = (LOG_FILE, CURVES_FILE, TENSORBOARD_FOLDER)


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message says why and what to do."""


class DamagedCheckpoint(CheckpointError):
    pass


class UnsafeCheckpoint(CheckpointError):
    pass


class CheckpointWriteError(CheckpointError):
    pass


def epoch_name(epoch: int) -> str:
    return f"checkpoint_epoch_{epoch}.pth"


# ----------------------------------------------------------------------------- integrity
def _feed(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"V{obj!r}".encode())


def content_checksum(state: dict) -> str:
    """sha256 over every tensor's bytes and every plain value, in a fixed order."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "checksum"})
    return "sha256:" + h.hexdigest()


# ----------------------------------------------------------------------------- read / write
def write_checkpoint(state: dict, path: str | Path) -> None:
    """Atomically write `state` (plus its checksum) to `path`."""
    tmp = _write_temp(state, path)
    try:
        commit(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, err) from None


def _write_temp(state: dict, path: str | Path) -> Path:
    """`state` with its checksum in `path`'s temporary file, fsynced, not yet renamed."""
    # The ordinary layout (NHWC weights copied): the file is the same whatever
    # --channels-last the run used.
    state = _map_tensors(dict(state, checksum=content_checksum(state)), torch.Tensor.contiguous)
    try:
        return write_temp(path, lambda fh: torch.save(state, fh))
    except OSError as err:
        raise _write_error(path, err) from None
    except RuntimeError as err:
        # torch's zip writer, when the file system takes less than it was given: "[enforce
        # fail at inline_container.cc:672] . unexpected pos 64 vs 0" (seen on a full 100 KB
        # tmpfs, where a larger one gave ENOSPC).
        if "inline_container" not in str(err) and "PytorchStreamWriter" not in str(err):
            raise
        raise _write_error(path, OSError("the file system took only part of it (is the disk "
                                         "full?)")) from None


def _write_error(path: str | Path, err: OSError) -> CheckpointWriteError:
    """The one line of a failed checkpoint write, with what to do next: --resume when the
    folder holds a run to continue (as --resume itself judges it), else the same command."""
    if CheckpointStore(Path(path).parent).can_resume():
        then = "The checkpoints already on disk are intact; free space or fix the folder, then " \
               "continue with --resume"
    else:
        then = "Nothing of this run was saved yet; free space or fix the folder, then run the " \
               "same command again"
    return CheckpointWriteError(f"could not write {path}: {err.strerror or err}. {then}")


def load_checkpoint(path: str | Path, verify: bool = True) -> dict:
    """Load a checkpoint safely (weights only) and check that it is whole."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a checkpoint file in it, such as "
                              f"{path / BEST}")
    if path.exists() and not path.is_file():
        raise CheckpointError(f"{path} is not a regular file; give a checkpoint file such as "
                              f"models/{BEST}")
    if not path.is_file():
        folder = "" if path.parent == Path("models") else f" --model-dir {arg(path.parent)}"
        raise CheckpointError(f"no checkpoint at {path}; list the available ones with "
                              f"'python checkpoint_training.py --list{folder}'")
    why_not = not_a_checkpoint(path)
    if why_not:
        raise DamagedCheckpoint(f"{path} {why_not}; give a training checkpoint such "
                                f"as models/{BEST}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        culprit = re.search(r"GLOBAL ([\w.]+)", str(err))
        if culprit is None:  # a garbled pickle stream, not a forbidden object
            raise DamagedCheckpoint(f"{path} is damaged and cannot be read") from None
        raise UnsafeCheckpoint(
            f"refusing to load {path}: it asks to import {culprit.group(1)}, which could run "
            f"code; it was not written by this suite. Only load checkpoints you trust, and "
            f"move this file away if you did not make it") from None
    except Exception as err:  # torch raises RuntimeError/EOFError/... on torn zips
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DamagedCheckpoint(f"{path} is damaged and cannot be read (it may be cut short: "
                                f"{reason.split('. ')[0].rstrip('.')})") from None
    trouble = schema.problem(state)
    if trouble:
        raise CheckpointError(f"{path} {trouble}")
    if verify and state.get("checksum") != content_checksum(state):
        raise DamagedCheckpoint(f"{path} is damaged: its contents do not match its checksum")
    return schema.upgrade(state)


# torch.save's format before PyTorch 1.6: a pickle whose first object is this number.
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def not_a_checkpoint(path: Path) -> str | None:
    """Why the file cannot be a checkpoint, read from its first bytes (None: it may be one).
    torch.save writes a zip archive (a pickle before PyTorch 1.6); a TorchScript export is
    a zip too, but holds code."""
    with open(path, "rb") as fh:
        head = fh.read(32)
    start = head[:2]
    if not start:
        return "is empty"
    if start != b"PK" and start[:1] != b"\x80":
        return "is not a PyTorch checkpoint (not written by torch.save)"
    if start[:1] == b"\x80" and _LEGACY_MAGIC not in head:
        return "is a Python pickle, not a PyTorch checkpoint (not written by torch.save)"
    kind = torch_zip_kind(path) if start == b"PK" else None
    if kind == "torchscript":
        return "is a TorchScript export (export.py), not a training checkpoint"
    if kind == "zip":
        return "is a zip archive, not a PyTorch checkpoint (not written by torch.save)"
    return None


# ----------------------------------------------------------------------------- the folder
class CheckpointStore:
    """Owns the model folder: which file each save goes to, retention, archiving, and
    finding the checkpoint to resume from. The training loop only hands it state."""

    def __init__(self, model_dir: str | Path, save_every: int = 10, keep_last: int = 0,
                 background: bool = False):
        self.dir = Path(model_dir)
        self.save_every, self.keep_last = save_every, keep_last
        self.background = background
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        # Actions waiting for the background write to be on disk (when_saved), and whether
        # the writer still takes them: both changed under the lock only.
        self._lock = threading.Lock()
        self._after_write: list[Callable[[], None]] | None = None

    @property
    def latest(self) -> Path:
        return self.dir / LATEST

    @property
    def best(self) -> Path:
        return self.dir / BEST

    def clean_temp_files(self) -> list[Path]:
        """Remove the temporary files a killed save leaves behind (the caller holds the
        folder's claim)."""
        return remove_temp_files(self.dir, claim_held=True)

    def checkpoints(self) -> list[Path]:
        """The run's checkpoint files: latest, best, then backups by epoch."""
        if not self.dir.is_dir():
            return []
        backups = self._backups()
        named = [p for p in (self.latest, self.best) if p.is_file()]
        others = sorted(p for p in self.dir.glob("*.pth") if p not in named and p not in backups)
        return named + backups + others

    def has_run(self) -> bool:
        return bool(self.checkpoints()) or any((self.dir / f).exists() for f in RUN_FILES)

    def can_resume(self) -> bool:
        """Whether the folder holds a run to continue: its latest checkpoint, one set aside
        as damaged (a resume that moved it was stopped before its first save), or a run
        stopped in its first save (first_save_cut_short)."""
        return (self.latest.is_file() or bool(self._set_aside())
                or self.first_save_cut_short() is not None)

    def _set_aside(self) -> list[Path]:
        """latest_model.pth files found damaged and renamed by find_resumable, oldest first."""
        return sorted(self.dir.glob(f"{LATEST}.damaged-*")) if self.dir.is_dir() else []

    def first_save_cut_short(self) -> tuple[Path, dict] | None:
        """(file, state) of a new run stopped in its first save, after its best model (and
        epoch backup) were in place and before latest_model.pth was: no latest, no log (it
        is written after latest), and only end-of-epoch-1 files, intact. None otherwise,
        e.g. for a run whose archiving was cut short, which has a log left."""
        if self.latest.is_file() or (self.dir / LOG_FILE).exists():
            return None
        found = []
        for path in [p for p in [self.best, *self._backups()] if p.is_file()]:
            try:
                state = load_checkpoint(path)
            except CheckpointError:
                return None
            if (state["epoch"], state["samples_in_epoch"]) != (1, 0):
                return None
            found.append((path, state))
        return found[0] if found else None

    def _backups(self) -> list[Path]:
        """The epoch backups, oldest first: checkpoint_epoch_<N>.pth only, so that a user's
        copy such as checkpoint_epoch_3_before_lr_change.pth is never taken (or pruned)."""
        if not self.dir.is_dir():
            return []
        return sorted((p for p in self.dir.glob("checkpoint_epoch_*.pth") if _epoch_of(p) >= 0),
                      key=_epoch_of)

    def save(self, state: dict, is_best: bool = False, epoch_end: bool = True) -> list[str]:
        """Write latest_model.pth, and best and epoch backups as copies of it when due.
        Returns the file names written.

        With `background`, the loop is blocked only while the state is copied; the disk
        write (checksum, fsync, rename, copies, retention) runs in a thread. The next save
        first waits for the previous one, so files are never written concurrently, and a
        failed write is raised then (or by `wait`)."""
        self.wait()
        names = self.names_due(state["epoch"], is_best, epoch_end)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.background:
            self._write(state, names)
            return names
        self._writer = threading.Thread(target=self._write_in_background,
                                        args=(_snapshot(state), names), name="checkpoint-writer")
        self._after_write = []
        try:
            self._writer.start()
        except BaseException:
            self._writer, self._after_write = None, None
            raise
        return names

    def when_saved(self, action: Callable[[], None]) -> None:
        """Run `action` once the last save is on disk: now when it is, else in the writer
        right after it. Records of a save (the log line) go through here, so none of them
        gets ahead of the checkpoint it describes, however the process ends. Dropped when
        the save failed (its error is raised by the next save or `wait`)."""
        with self._lock:
            if self._after_write is not None:
                self._after_write.append(action)
                return
        if self._error is None:
            action()

    def names_due(self, epoch: int, is_best: bool, epoch_end: bool = True) -> list[str]:
        """The files a save at `epoch` writes: latest, and the epoch backup and best model
        when due."""
        names = [LATEST]
        if epoch_end and self.save_every and epoch % self.save_every == 0:
            names.append(epoch_name(epoch))
        if is_best:
            names.append(BEST)
        return names

    def join(self) -> None:
        """Block until the last background save has ended (see `failed`)."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    def wait(self) -> None:
        """Block until the last background save is on disk; raise its error, if any."""
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @property
    def failed(self) -> bool:
        """Whether a background write has failed (its error not yet raised by `wait`). The
        loop asks every step, so that a run stops at once rather than training on without
        checkpoints."""
        return self._error is not None

    def _write_in_background(self, state: dict, names: list[str]) -> None:
        try:
            self._write(state, names)
            while True:  # then what waited for it; once none is left, callers run their own
                with self._lock:
                    actions = self._after_write
                    self._after_write = [] if actions else None
                if not actions:
                    return
                for action in actions:
                    action()
        except BaseException as err:  # handed to the training loop by wait()
            self._error = err
            with self._lock:
                self._after_write = None

    def _write(self, state: dict, names: list[str]) -> None:
        # latest_model.pth is renamed into place last: once it holds an epoch, the best and
        # epoch files due at that save are on disk too, however the process ends (a resume
        # from it would never write them).
        written = _write_temp(state, self.latest)
        try:
            for name in names[1:]:
                self._copy_to(written, self.dir / name)
            commit(written, self.latest)
        except OSError as err:
            raise _write_error(self.latest, err) from None
        finally:
            written.unlink(missing_ok=True)  # gone already, unless something failed
        self.prune()

    def _copy_to(self, written: Path, target: Path) -> None:
        tmp = temp_path(target)
        try:
            # A copy, not a hard link: one damaged file (a disk fault, a `cp` into
            # latest_model.pth) must not damage best and the backups with it.
            copy_to_temp(written, tmp)
            commit(tmp, target)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise _write_error(target, err) from None

    def prune(self, keep_last: int | None = None) -> list[Path]:
        """Delete all but the newest `keep_last` epoch backups (0 keeps all). latest,
        best and archived runs are never touched. The only deletion in the suite."""
        keep = self.keep_last if keep_last is None else keep_last
        if not keep:
            return []
        doomed = self._backups()[:-keep]
        for p in doomed:
            p.unlink(missing_ok=True)
        return doomed

    def archive_run(self) -> Path | None:
        """Move the current run's files into archive/<time>/ so a new run starts clean."""
        files = self.checkpoints() + [self.dir / f for f in RUN_FILES if (self.dir / f).exists()]
        files += sorted(self.dir.glob("*.damaged-*"))
        if not files:
            return None
        return move_to_new_folder(files, self.dir / ARCHIVE, RUN_ARCHIVE_PREFIX)

    def resumable(self) -> tuple[Path, dict, str | None]:
        """(file, state, damage): what a resume would go on from, changing nothing.

        latest_model.pth when intact (damage None); when it is damaged, the newest intact
        epoch backup or best model, and `damage` says what is wrong with latest. A run
        stopped in its first save goes on from its best model. When nothing is intact, the
        error says so."""
        cut_short = self.first_save_cut_short()
        if cut_short is not None:
            return (*cut_short, None)
        if self.latest.is_file():
            try:
                return self.latest, load_checkpoint(self.latest), None
            except DamagedCheckpoint as err:
                damage = str(err)
        elif self._set_aside():
            damage = (f"{LATEST} was found damaged and set aside "
                      f"({self._set_aside()[-1].name}) before a new one was written")
        elif self.latest.exists():
            raise CheckpointError(f"{self.latest} is not a file (a folder?): it is no checkpoint "
                                  f"to resume; move it aside, or point --model-dir at the run's "
                                  f"folder")
        else:
            raise CheckpointError(f"nothing to resume: no {LATEST} in {self.dir}/. Start a new "
                                  f"run without --resume, or point --model-dir at the run's folder")
        candidates = []
        # Only this run's own backups: other .pth files in the folder (copies, exports,
        # another run's checkpoints) are never taken for it.
        for path in [self.best, *self._backups()]:
            try:
                state = load_checkpoint(path)
            except CheckpointError:
                continue
            candidates.append((state["epoch"], state.get("global_step", 0), path, state))
        if not candidates:
            raise CheckpointError(f"{damage}; no intact checkpoint is left in {self.dir}/ to "
                                  f"resume from. Nothing was changed. Start a new run with --force")
        _, _, path, state = max(candidates, key=lambda c: (c[0], c[1]))
        return path, state, damage

    def find_resumable(self) -> tuple[Path, dict, list[str]]:
        """The checkpoint to resume from (see resumable) and notes for the user; a damaged
        latest_model.pth is renamed aside (never deleted), so the run goes on without it."""
        path, state, damage = self.resumable()
        if damage is None:
            return path, state, [] if path == self.latest else [
                f"the run was stopped in its first save, before {LATEST} was written; "
                f"resuming from {path.name} (the end of epoch 1)"]
        notes = [damage]
        if self.latest.is_file():
            aside = self.latest.with_name(f"{LATEST}.damaged-{time.strftime('%Y%m%d_%H%M%S')}")
            os.replace(self.latest, aside)
            notes.append(f"moved it aside to {aside.name}")
        # The intact file takes latest's place at once: a run with nothing left to train
        # (which saves nothing) is then whole again, and so is one stopped before its save.
        tmp = temp_path(self.latest)
        copy_to_temp(path, tmp)
        commit(tmp, self.latest)
        return path, state, notes + [f"resuming from {path.name} (epoch {state['epoch']}) "
                                     f"instead"]


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


def _snapshot(obj: Any) -> Any:
    """A private CPU copy of every tensor, so training can go on changing its own."""
    return _map_tensors(obj, lambda t: t.detach().to(
        "cpu", copy=True, memory_format=torch.contiguous_format))


def _epoch_of(path: Path) -> int:
    """N of checkpoint_epoch_N.pth, or -1 for any other name."""
    found = re.fullmatch(r"checkpoint_epoch_(\d+)\.pth", path.name)
    return int(found[1]) if found else -1


def resolve(name: str, model_dir: str | Path) -> Path:
    """A checkpoint given as a path, or as a file name inside the model folder: a bare
    name is the model folder's file when it has one (a file of that name in the current
    folder is another run's), else the current folder's."""
    path, inside = Path(name), Path(model_dir) / name
    bare = not any(sep in name for sep in ("/", os.sep))  # ./best_model.pth is not bare
    if not bare or (path.exists() and not inside.exists()):
        return path
    return inside


def file_size_mb(path: Path) -> float:
    return path.stat().st_size / 2**20
