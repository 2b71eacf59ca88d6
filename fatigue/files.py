"""Atomic file writes: the one helper every module that writes a file the suite relies on
uses (checkpoints, the clip store, prepare's cache, the training log and curves).

A file is written to a temporary name beside its final one, flushed, fsynced, then renamed
over the old file, and the folder is fsynced: a crash at any moment leaves the old file or
the new one, never a torn one. Temporary names start with '.' and end with TMP_SUFFIX, so
a folder's leftovers from a killed process are easy to find.

Also the checks of the output paths a command is given (output_file, output_folder)."""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, TextIO

from fatigue.errors import UserError

TMP_SUFFIX = ".tmp"
# Files the suite keeps beside its checkpoints, named here (their owners, clip_store,
# run_log, claim and crossval, take their names from here) so that an output given on a
# command line never replaces one (output_file).
CLIPS_FILE, MANIFEST_FILE = "clips.npy", "manifest.json"
LOG_FILE, CURVES_FILE = "training_log.jsonl", "training_curves.png"
CLAIM_FILE, STUDY_FILE = ".claim", "study.json"
KEPT_FILES = {CLIPS_FILE: "a data set's clips", MANIFEST_FILE: "a data set's manifest",
              LOG_FILE: "a training run's log", CURVES_FILE: "a training run's curves",
              CLAIM_FILE: "a folder's claim (what keeps two commands out of one folder)",
              STUDY_FILE: "a cross-validation study's record"}


def temp_path(path: str | Path) -> Path:
    """The temporary name a write of `path` goes to first (unique to this process)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def _running(pid: int) -> bool:
    """Whether process `pid` runs on this machine (True where that cannot be told)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def remove_temp_files(folder: str | Path, of: str | None = None, claim_held: bool = False,
                      min_age_s: float = 3600.0) -> list[Path]:
    """Remove the temporary files that killed writes (kill -9, power loss) left in `folder`:
    those of the file named `of`, or of any file. Returns them.

    With `claim_held` the caller holds the folder's claim (fatigue.claim), so no live process
    writes there and every one goes. Otherwise only orphans go: named by a process id that no
    longer runs here, and untouched for `min_age_s`. A process id only tells about this
    machine (and container); the age keeps a live writer elsewhere that shares the folder,
    whose file is written at least hourly (a detect CSV's buffer, a checkpoint's fsync), out
    of reach."""
    prefix = f".{of}." if of is not None else "."
    removed = []
    for tmp in Path(folder).glob(f"{glob.escape(prefix)}*{TMP_SUFFIX}"):
        pid = tmp.name[len(prefix):-len(TMP_SUFFIX)].rsplit(".", 1)[-1]
        try:
            old = time.time() - tmp.stat().st_mtime > min_age_s
        except OSError:
            continue  # gone meanwhile
        orphan = pid.isdigit() and old and not _running(int(pid))
        if tmp.is_file() and (claim_held or orphan):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside `folder` durable (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on every platform; the rename itself is still atomic
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str | Path, final: str | Path) -> None:
    """Rename a fully written, fsynced temporary file over `final`, durably."""
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def link_or_copy(source: str | Path, tmp: str | Path) -> None:
    """Put `source` at the temporary name `tmp`, ready for `commit`: a hard link (no time,
    no room) where the file system allows one, else a fsynced copy. Safe only for files
    that are never changed in place, which holds for every file written through this
    module: each write is a new file renamed over the old. A file already at `tmp` (a
    leftover) is removed first, never written into: it may be linked to another."""
    Path(tmp).unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        copy_to_temp(source, tmp)


def copy_to_temp(source: str | Path, tmp: str | Path) -> None:
    """Copy `source` to the temporary name `tmp`, fsynced, ready for `commit`: a file of its
    own, which damage to `source` or a write into it (`cp other.pth source`) leaves as it
    was. A file already at `tmp` (a leftover) is removed first, never written into."""
    Path(tmp).unlink(missing_ok=True)
    shutil.copyfile(source, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())


def write_temp(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write what will become `path` through `write(file_object)` to its temporary name,
    flushed and fsynced, and return that name, ready for `commit`. On any error the
    temporary file is removed and the error raised. An earlier write's leftover, from a
    process killed meanwhile, is removed first."""
    remove_temp_files(Path(path).parent, Path(path).name)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` through `write(file_object)`, atomically. On any error the temporary
    file is removed and the error raised; the old `path`, if any, is untouched."""
    tmp = write_temp(path, write)
    try:
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def move_to_new_folder(paths: list[Path], parent: Path, prefix: str) -> Path:
    """Move `paths`, in their order, into a new folder parent/<prefix>_<time>/ (with a
    ~N suffix when that name is taken), which is returned. Nothing is deleted."""
    target = parent / time.strftime(f"{prefix}_%Y%m%d_%H%M%S")
    n = 1
    while target.exists():
        target = target.with_name(f"{target.name.split('~')[0]}~{n}")
        n += 1
    target.mkdir(parents=True)
    for p in paths:
        os.replace(p, target / p.name)
    return target


# ----------------------------------------------------------------------------- options
def _blocking_file(path: Path) -> Path | None:
    """The first existing non-folder among the folders `path` would be written in."""
    return next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)


def output_target(path: str | Path) -> tuple[Path, bool]:
    """Where an output file named `path` is written, and whether atomically (a new file
    renamed over it). A device, a named pipe, or this process's own standard output or
    error (/dev/null, a FIFO, /dev/stdout even when redirected to a file; whatever links
    lead to them) is written into directly, as named (open_directly): a rename would
    replace it with a plain file, or a redirected output's file with the CSV alone. A
    symbolic link to a file is written through, atomically, at its target, which the link
    keeps naming."""
    path = Path(path)
    try:
        found = os.stat(path)  # through links
    except (FileNotFoundError, NotADirectoryError):  # made as a plain file (or refused by
        found = None                                 # output_file)
    if found is not None and (not stat.S_ISREG(found.st_mode)
                              or _own_descriptor(path, found) is not None):
        return path, False
    return (path.resolve() if path.is_symlink() else path), True


def _own_descriptor(path: Path, found: os.stat_result) -> int | None:
    """The descriptor of this process that `path` writes to: N for /dev/fd/N or
    /proc/self/fd/N (a shell's 3>>log), 1 or 2 for a file this process's standard output
    or error is (/dev/stdout, or a link to what it was redirected to); else None."""
    named = re.fullmatch(r"/(?:dev/fd|proc/self/fd)/(\d+)", path.as_posix())
    for fd in ([int(named[1])] if named else []) + [1, 2]:
        try:
            if os.path.samestat(found, os.fstat(fd)):
                return fd
        except OSError:  # closed
            pass
    return None


def open_directly(path: Path, newline: str | None = None) -> TextIO:
    """`path` (a device, a pipe, a descriptor of this process) opened to write into. One of
    this process's own descriptors is written through a copy, whose position it shares: a
    second open of a redirected file would write over what was printed, and the next print
    over what it wrote. Anything else is appended to."""
    fd = _own_descriptor(path, os.stat(path))
    if fd is not None:
        for stream, number in ((sys.stdout, 1), (sys.stderr, 2)):
            if fd == number:
                stream.flush()
        return os.fdopen(os.dup(fd), "w", newline=newline)
    return open(path, "a", newline=newline)


def write_output_text(path: str | Path, text: str) -> None:
    """Write an output file a command was given (see output_file, output_target), making
    the missing folders on its way. An error names the file asked for, not its temporary
    name."""
    target, atomic = output_target(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if atomic:
            atomic_write_text(target, text)
        else:
            with open_directly(target) as fh:
                fh.write(text)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None


def _unwritable(path: Path) -> str | None:
    """Why nothing can be written at `path` (a file or folder, made if missing), or None:
    tried with a file made and removed in the nearest folder that exists, as permissions
    alone do not tell (root, read-only mounts, /proc)."""
    folder = next((p for p in (path, *path.parents) if p.is_dir()), Path("."))
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        return f"nothing can be written in {folder}/ ({err.strerror or err})"
    return None


def distinct_outputs(outputs: dict[str, str | None]) -> None:
    """Refuse two output options naming one file: the second written would replace the
    first."""
    given = [(flag, Path(value)) for flag, value in outputs.items() if value]
    for i, (flag, path) in enumerate(given):
        for other_flag, other in given[i + 1:]:
            if path.resolve() == other.resolve():
                raise UserError(f"{flag} and {other_flag} name the same file, {path}; give "
                                f"each its own")


def torch_zip_kind(path: str | Path) -> str | None:
    """What a zip archive torch wrote holds, read from its entry names without loading it:
    'torchscript' (an export: it holds code), 'checkpoint' (torch.save: a pickle), 'zip'
    (a zip archive torch did not write), or None (no zip archive that can be read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if any("/code/" in n for n in names):
        return "torchscript"
    return "checkpoint" if any(n.endswith("/data.pkl") for n in names) else "zip"


def is_checkpoint_file(path: str | Path) -> bool:
    """Whether `path` is a file written by torch.save (a training checkpoint)."""
    return torch_zip_kind(path) == "checkpoint"


def output_file(value: str) -> str:
    """argparse type of an option naming a file the command writes: refused at once (one
    line, exit 2) when it names a folder, lies under a file, or is a checkpoint or another
    file the suite keeps (KEPT_FILES), before any work is done. Missing folders on the way
    are made when it is written (write_output_text)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty; give the path of a file")
    if value == "-":
        raise argparse.ArgumentTypeError("'-' is taken as a file name here, not as the "
                                         "standard output: give a file (or /dev/stdout)")
    try:
        path, atomic = output_target(value)  # a link's target is what is written, and checked
    except (OSError, RuntimeError) as err:  # a loop of links, a link it may not follow
        raise argparse.ArgumentTypeError(f"{value} cannot be followed to a file ({err})") \
            from None
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a folder; give the path of a file "
                                         f"(in it or elsewhere)")
    if value.endswith(("/", os.sep)):  # a folder meant, not there yet: not a file of its name
        raise argparse.ArgumentTypeError(f"{value} ends with a slash, so it names a folder; "
                                         f"give the path of a file (in it or elsewhere)")
    blocking = _blocking_file(path)
    if blocking is not None:
        raise argparse.ArgumentTypeError(f"{blocking} is a file, not a folder, so {value} "
                                         f"cannot be written")
    leads = "" if path == Path(value) else f" (it leads to {path})"
    if path.is_file() and is_checkpoint_file(path):
        raise argparse.ArgumentTypeError(f"{value} is a checkpoint{leads}, which an output "
                                         f"never overwrites; give another file name")
    if path.is_file() and is_kept_file(path):
        raise argparse.ArgumentTypeError(f"{value} is {KEPT_FILES[path.name]}{leads}, which an "
                                         f"output never overwrites; give another file name")
    # Written into directly (a device, a pipe): its own permission, not its folder's.
    why = _unwritable(path.parent) if atomic else (
        None if os.access(path, os.W_OK) else "permission denied")
    if why:
        raise argparse.ArgumentTypeError(f"{value} cannot be written: {why}")
    return value


def other_files(folder: Path, ours: set[str] = frozenset()) -> list[str]:
    """The names in `folder` (if it exists) other than `ours`, its claim and temporary
    files, sorted: what a command writing into it must not replace without --force."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in ours
                  and p.name != CLAIM_FILE and not p.name.endswith(TMP_SUFFIX))


def is_kept_file(path: Path) -> bool:
    """Whether an existing file is one the suite keeps (KEPT_FILES), judged by its name and
    its folder, so that an output of the same name elsewhere (a second `--json study.json`)
    is not mistaken for one: a data set's file beside the other, a run's log or curves
    beside a log or a checkpoint, a study record beside its folds, any claim."""
    here = {p.name for p in path.parent.iterdir()}
    run = LOG_FILE in here or any(name.endswith(".pth") for name in here)
    return any((path.name == CLAIM_FILE,
                path.name in (CLIPS_FILE, MANIFEST_FILE) and {CLIPS_FILE, MANIFEST_FILE} <= here,
                path.name in (LOG_FILE, CURVES_FILE) and run,
                path.name == STUDY_FILE and any(name.startswith("fold_") for name in here)))


def report_folder(value: str) -> str:
    """argparse type of a folder a report is written into: output_folder's checks, and not
    a folder of checkpoints (a report's training_curves.png would replace the run's)."""
    value = output_folder(value)
    if Path(value).is_dir() and any(is_checkpoint_file(p) for p in Path(value).glob("*.pth")):
        raise argparse.ArgumentTypeError(f"{value} holds checkpoints (a training run's "
                                         f"folder), whose files a report would replace; give "
                                         f"another folder, e.g. {Path(value) / 'report'}")
    if any((Path(value) / name).exists() for name in ("manifest.json", "clips.npy")):
        raise argparse.ArgumentTypeError(f"{value} holds a data set (manifest.json, clips.npy); "
                                         f"give a folder of its own for the report, e.g. "
                                         f"{Path(value) / 'report'}")
    return value


def not_an_input(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """Refuse, before any work, an output option naming the same file as an input option
    (a video written over the video being read), or a file in a folder an input option
    reads (a CSV written over a frame image of the folder)."""
    for out_flag, out in outputs.items():
        for in_flag, source in inputs.items():
            if out and source and Path(out).exists() and Path(source).exists() \
                    and os.path.samefile(out, source):
                raise UserError(f"{out_flag} {out} is the file {in_flag} reads; give "
                                f"another file name")
            if out and source and Path(source).is_dir() \
                    and Path(out).resolve().parent == Path(source).resolve():
                raise UserError(f"{out_flag} {out} is in the folder {in_flag} reads; give a "
                                f"file elsewhere")


def file_name(value: str) -> str:
    """argparse type of an option naming a file the command reads: refused when empty (a
    tool given '' took it for no value at all: `--info ''` trained instead)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty; give the path of a file")
    return value


def folder_name(value: str) -> str:
    """argparse type of an option naming a folder: refused when empty ('' is the current
    folder to Path, and no value at all to the caller, which then takes its default)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty; give the path of a folder")
    return value


def output_folder(value: str) -> str:
    """argparse type of an option naming a folder the command writes into (made if missing):
    refused at once when it, or a folder on its way, is a file."""
    path = Path(folder_name(value))
    blocking = path if path.exists() and not path.is_dir() else _blocking_file(path)
    if blocking is not None:
        raise argparse.ArgumentTypeError(f"{blocking} is a file, not a folder; give a folder "
                                         f"(it is made if missing)")
    why = _unwritable(path)
    if why:
        raise argparse.ArgumentTypeError(f"{value} cannot be written: {why}")
    return value
