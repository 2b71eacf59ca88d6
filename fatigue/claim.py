"""One command at a time per folder: an exclusive claim on a model folder or a data folder.

A training run (start-up, archiving an old run, training, the final evaluation),
`checkpoint_training.py --clean`, and the data commands that write a data folder
(`dataset.py --synthetic`, `dataset.py --prepare` / `prepare.py`, training that makes the
default data set) hold `<folder>/.claim` for their whole life:

    with FolderClaim("models", wait=args.wait, break_claim=args.break_claim):
        ...                                    # nobody else writes models/ meanwhile

A second one on the same folder is refused with one line naming the holder (pid, host,
since when, its command) and exit code EXIT_BUSY (75, EX_TEMPFAIL: try again later), or,
with `wait`, polls until the holder is gone. Read-only commands (--list, --info, evaluate,
detect, export, reading a data set to train on) never take a claim.

The claim is flock(2) on the file, so the operating system releases it however the holder
ends, kill -9 included; the file itself stays and its contents only describe the holder.
(A command that changed nothing in the folder, a mistake refused at start-up, puts the
file back as it was, or removes it and the folder it made: nothing on disk changes. A
holder checks after locking that the file it locked is still the one at that path, so a
removal never lets two in.) flock locks belong to the open file, which forked children share: DataLoader workers
hold the claim too, so it is free only once every process of the run has exited. Releasing
therefore only closes the file, never unlocks it (an unlock would drop the children's
share as well).

Network filesystems: NFS and Lustre may not share flock between hosts, and a crashed node
can leave a lock held. So a claim also counts when its record names another host and was
never released, even if the lock was granted; `break_claim` (--break-claim, after the user
has checked) takes over a claim recorded by another host or by a process that no longer
exists on this host, never one of a live local process.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Callable

from fatigue.errors import UserError
from fatigue.files import CLAIM_FILE  # named there: outputs never replace it

EXIT_BUSY = 75  # EX_TEMPFAIL (sysexits.h): the folder is busy, try again later
POLL_S = 0.2


class ClaimBusy(UserError):
    """The folder is claimed by another command; exits with EXIT_BUSY."""
    exit_code = EXIT_BUSY


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # negative, or not a number (nan)
        raise argparse.ArgumentTypeError(f"{text} is not 0 (do not wait) or more seconds")
    return value


def add_claim_args(parser: argparse.ArgumentParser, folder_option: str) -> None:
    """--wait and --break-claim for a command that claims `folder_option`'s folder. They are
    options of the command only, never Config fields: a checkpoint must not store them."""
    group = parser.add_argument_group(
        "one command per folder", f"the command holds {folder_option} for its whole life; "
        f"a second one there is refused (exit code {EXIT_BUSY}) unless it waits")
    group.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS",
                       help=f"when another command holds {folder_option}, wait up to SECONDS "
                            f"for it to end instead of refusing (default: 0)")
    group.add_argument("--break-claim", action="store_true",
                       help=f"take over the claim on {folder_option} left by another host or "
                            f"by a process that no longer exists here (a crashed node, "
                            f"NFS/Lustre); check first that nothing uses the folder. A live "
                            f"process on this host is never overridden")


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _seconds_since_epoch(stamp: object) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), from Linux's /proc; None
    where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        # The fields after the command name (which may hold spaces) start at the 3rd; the
        # 22nd is the start time, in clock ticks after boot.
        ticks = int(stat[stat.rindex(")") + 2:].split()[22 - 3])
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


@dataclass(frozen=True)
class Holder:
    """What a claim file records about the command that holds (or last held) it."""
    pid: int | None = None
    host: str | None = None
    since: str | None = None
    command: str | None = None
    released: str | None = None

    @classmethod
    def me(cls) -> "Holder":
        # As typed: main.py renames sys.argv[0] after its mode for argparse's messages.
        command = " ".join([Path(sys.executable).name, *map(shlex.quote, sys.orig_argv[1:])])
        return cls(os.getpid(), socket.gethostname(), _now(), command[:300])

    @classmethod
    def read(cls, fd: int) -> "Holder | None":
        """The record in the open claim file; None when it is empty (never written, or
        its writer is between locking and writing)."""
        text = os.pread(fd, 1 << 16, 0).decode(errors="replace").strip()
        if not text:
            return None
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            return cls(command=f"unreadable record {text[:60]!r}")
        return cls(**{f.name: record.get(f.name) for f in fields(cls)})

    @property
    def local(self) -> bool:
        return self.host == socket.gethostname()

    @property
    def unreleased_elsewhere(self) -> bool:
        """A record of another host never released: that run may be alive where flock is
        not shared between hosts, or its node crashed. Only the user can tell."""
        return not self.released and bool(self.host) and not self.local

    def alive(self) -> bool:
        """Whether the recorded process still exists; only knowable on its own host."""
        if not self.local or not isinstance(self.pid, int):
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True

    def started_after_claim(self) -> bool:
        """Whether the process now at the recorded pid started after the claim was taken,
        so is not its holder (a container restarted with the same host name, whose run is
        pid 1 again). Only for what is shown: a clock set forward would make a live holder
        look younger than its record, so the claim itself never relies on it."""
        started, since = process_started(self.pid), _seconds_since_epoch(self.since)
        # The record has whole seconds; the start time, ticks after a boot time in seconds.
        return started is not None and since is not None and started > since + 2

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since} ({self.command})"


def live_holder(folder: str | Path) -> Holder | None:
    """The command holding `folder`'s claim now, as far as this host can tell from its
    record: a live process here, or one on another host that never released it (which a
    training here would be refused for, as FolderClaim does); None when the folder is free
    or its holder here has ended. Only reads the record: taking even a shared lock to look
    could turn away a run starting at that moment."""
    try:
        fd = os.open(Path(folder) / CLAIM_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        holder = Holder.read(fd)
    finally:
        os.close(fd)
    if holder is None or holder.released:
        return None
    if holder.unreleased_elsewhere:
        return holder
    return holder if holder.alive() and not holder.started_after_claim() else None


class FolderClaim:
    """The exclusive claim on `folder` while the `with` block runs (see the module doc).

    wait: seconds to wait for a busy folder (polling) before refusing; 0 refuses at once.
    break_claim: take over a claim recorded by another host, or by a process that no
        longer exists on this host (never one of a live local process).
    option: the command-line option that names the folder, for the refusal's advice.
    say: print, or a print-like function that the waiting and take-over notes go through
        (to stderr)."""

    def __init__(self, folder: str | Path, wait: float = 0.0, break_claim: bool = False,
                 option: str = "--model-dir",
                 say: Callable[..., None] | None = None) -> None:
        self.folder, self.path = Path(folder), Path(folder) / CLAIM_FILE
        self.wait, self.break_claim, self.option = max(0.0, wait or 0.0), break_claim, option
        self.say = say or print
        self.fd: int | None = None
        self.record: Holder | None = None
        self._made_folders: list[Path] = []  # the folder and parents this claim created
        self._previous = b""  # the claim file's record before this command's
        self._listing: dict[str, tuple[int, int]] = {}  # the folder's other entries then

    def __enter__(self) -> "FolderClaim":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ----------------------------------------------------------------------------- acquire
    def acquire(self) -> None:
        """Hold the claim, waiting up to `wait` seconds; raises ClaimBusy when it stays
        taken."""
        self._made_folders = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create {self.folder}/: {err.strerror or err}; check the "
                            f"path and its permissions") from None
        deadline = time.monotonic() + self.wait
        ignore_record, waiting = False, False
        while True:
            holder, locked_by_other = self._try(ignore_record)
            if self.fd is not None:
                return
            if self.break_claim and self._breakable(holder, locked_by_other):
                self.note(f"--break-claim: taking over the claim on {self.folder}/ of "
                          f"{holder.describe()}")
                if locked_by_other:  # the old holder keeps its lock on a file no one uses
                    self.path.unlink(missing_ok=True)
                ignore_record = True
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClaimBusy(self._refusal(holder, locked_by_other))
            if not waiting:
                self.note(f"{self.folder}/ is in use by "
                          f"{holder.describe() if holder else 'another process'}; waiting up "
                          f"to {self.wait:g} s for it to end")
                waiting = True
            time.sleep(min(POLL_S, left))

    def note(self, text: str) -> None:
        self.say(text, file=sys.stderr, flush=True)

    def _try(self, ignore_record: bool) -> tuple[Holder | None, bool]:
        """One attempt. On success sets self.fd; otherwise returns the holder's record and
        whether the lock itself is held elsewhere (else only the record counts)."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                raise UserError(f"cannot open {self.path}: {err.strerror or err}; check the "
                                f"folder's permissions") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = Holder.read(fd)
                if holder is None:  # locked a moment ago, record not yet written
                    time.sleep(0.05)
                    holder = Holder.read(fd)
                os.close(fd)
                return holder, True
            except OSError as err:  # ENOLCK, EOPNOTSUPP: a filesystem without locks
                if not self.break_claim:
                    os.close(fd)
                    raise UserError(
                        f"cannot lock {self.path} ({err.strerror or err}): this filesystem "
                        f"does not support locks. Make sure no other command uses "
                        f"{self.folder}/, then add --break-claim to go on without the "
                        f"claim") from None
                self.note(f"warning: {self.folder}/ cannot be locked here "
                          f"({err.strerror or err}); going on without a claim (--break-claim)")
                break
            if self._is_current(fd):
                break
            os.close(fd)  # locked a file removed meanwhile: lock the one there now
        previous = Holder.read(fd)
        if previous is not None and previous.unreleased_elsewhere and not ignore_record:
            os.close(fd)
            return previous, False
        # What to put back if this command changes nothing (never a record broken here).
        self._previous = b"" if ignore_record else os.pread(fd, 1 << 16, 0)
        self._listing = self._list()
        self.record = Holder.me()
        try:
            self._write(fd, self.record)
        except OSError as err:
            os.close(fd)
            raise UserError(f"cannot write {self.path}: {err.strerror or err}; free space or "
                            f"fix the folder's permissions") from None
        self.fd = fd
        return None, False

    def _is_current(self, fd: int) -> bool:
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (here.st_ino, here.st_dev) == (held.st_ino, held.st_dev)

    @staticmethod
    def _breakable(holder: Holder | None, locked_by_other: bool) -> bool:
        """Whether --break-claim may take the claim over: its holder is known and not alive
        here. A holder on another host whose lock is held is alive there: the lock reached
        this host, so the file system shares locks (a crashed node's are freed by the file
        server within minutes)."""
        if holder is None or holder.host is None:
            return False
        return not holder.alive() and (holder.local or not locked_by_other)

    def _refusal(self, holder: Holder | None, locked_by_other: bool) -> str:
        """The one line a refused command prints: who holds the folder, what to do."""
        todo = (f"still in use after waiting {self.wait:g} s; wait longer (--wait SECONDS) "
                f"or use another {self.option}" if self.wait else
                f"wait for it to end, add --wait SECONDS to wait for it, or use another "
                f"{self.option}")
        if holder is None or holder.host is None:
            return (f"{self.folder}/ is in use by another process that has not said who it is "
                    f"({self.path}); {todo}")
        if not holder.local and locked_by_other:
            return (f"{self.folder}/ is in use by a run on another host: {holder.describe()} "
                    f"holds its lock, so it is running (NFSv4 and Lustre free a crashed node's "
                    f"lock within minutes; --break-claim never takes a held lock); "
                    f"{todo}")
        if not holder.local:
            return (f"{self.folder}/ is claimed by {holder.describe()}, on another host that "
                    f"this one cannot check; {todo}. If that run has ended (a crashed node, or "
                    f"NFS/Lustre not sharing locks), add --break-claim")
        if holder.alive() and not holder.released:
            return f"{self.folder}/ is in use by another run: {holder.describe()}; {todo}"
        return (f"{self.folder}/ is still claimed by processes started by {holder.describe()}, "
                f"which has {'released it' if holder.released else 'ended'} (DataLoader "
                f"workers exit within seconds); retry, add --wait SECONDS, or add "
                f"--break-claim to take it over")

    # ----------------------------------------------------------------------------- release
    def release(self) -> None:
        """Mark the record released and close the file. No unlock: forked children that
        share the lock keep it until they exit (see the module doc)."""
        if self.fd is None:
            return
        try:
            if self._list() != self._listing:
                self._write(self.fd, Holder(**{**asdict(self.record), "released": _now()}))
            elif self._previous:  # the command changed nothing here: leave no trace
                self._put(self.fd, self._previous)
            else:  # removed while still locked: see _is_current
                self.path.unlink()
                for folder in self._made_folders:  # deepest first: a refused command
                    folder.rmdir()                 # leaves no empty folders behind
        except OSError:
            pass  # the lock goes with the close all the same
        os.close(self.fd)
        self.fd = None

    def _list(self) -> dict[str, tuple[int, int]]:
        """The folder's other entries with their size and modification time."""
        listing = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                try:
                    stat = entry.stat()
                except OSError:  # gone meanwhile: not there
                    continue
                if entry.name != CLAIM_FILE:
                    listing[entry.name] = (stat.st_size, stat.st_mtime_ns)
        return listing

    @classmethod
    def _write(cls, fd: int, holder: Holder) -> None:
        cls._put(fd, (json.dumps(asdict(holder)) + "\n").encode())

    @staticmethod
    def _put(fd: int, data: bytes) -> None:
        # Written over the old record, then cut to length: a reader never sees it empty.
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)  # visible to the other hosts of a network filesystem
