"""User-facing errors: one clear line, a non-zero exit, never a traceback."""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from typing import Callable


class UserError(Exception):
    """Something the user can fix; the message says what is wrong and what to do.
    `exit_code` is what the command exits with (2 unless a subclass says otherwise)."""
    exit_code = 2


def dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints every thread's stack to stderr and the command goes on:
    where a run that seems stuck is (tests/chaos.py also reads where its kills land)."""
    if not hasattr(signal, "SIGUSR1") or threading.current_thread() is not threading.main_thread():
        return  # not on Windows; a handler can only be set from the main thread
    try:
        signal.signal(signal.SIGUSR1, _print_stacks)
        signal.siginterrupt(signal.SIGUSR1, False)  # a system call it lands in carries on
    except (ValueError, OSError):
        pass


def _print_stacks(signum: int, frame: object) -> None:
    """Every thread's stack to stderr. Python runs this in the main thread between two
    bytecodes, holding the interpreter lock, so no thread's frames change meanwhile; a main
    thread inside a long C call (a collective waiting for another process) prints when it
    returns. faulthandler.register, which prints from the signal itself, reads the other
    threads' frames unlocked: it crashed processes under torchrun."""
    try:
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
    except (ValueError, OSError, RuntimeError, AttributeError):
        pass  # no stderr to print to: nothing else is lost


def _interrupted_in_one_line(kind, value, traceback, _print_traceback=sys.excepthook) -> None:
    """sys.excepthook: Ctrl+C before `run_cli` takes over reads as one line, not a traceback.
    The process still ends as one stopped by SIGINT (Python re-raises it after the hook)."""
    if issubclass(kind, KeyboardInterrupt):
        print("\ninterrupted", file=sys.stderr)
        return
    _print_traceback(kind, value, traceback)


def install_start_up_handlers() -> None:
    """Run when the package is imported, i.e. before a script imports torch (seconds): a
    Ctrl+C or a stack-dump request (SIGUSR1) during those seconds then behaves as later."""
    sys.excepthook = _interrupted_in_one_line
    dump_stacks_on_sigusr1()


def says_errors() -> bool:
    """Whether this process prints a user's mistake: under torchrun only process 0 does,
    as every process finds the same mistake (the others exit with the same code)."""
    return os.environ.get("RANK", "0") == "0"


def run_cli(main: Callable[[list[str] | None], int]) -> None:
    """Run an entry point, turning UserError (and the file system's errors) into one line
    on stderr and its exit code."""
    try:
        code = main(None)
    except UserError as err:
        if says_errors():
            print(f"error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `... | head`: the reader is gone; nothing more to print
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # as a command ended by SIGPIPE
    except OSError as err:  # the file system said no: a path, a permission, a full disk
        where = f"{err.filename}: " if err.filename is not None else ""
        print(f"error: {where}{err.strerror or err}", file=sys.stderr)
        code = 1
    sys.exit(code)
