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
    # True when every process of a torchrun run meets the same error (a mistake in the
    # options, or one process 0 found and handed on): process 0 alone says it. Errors one
    # process meets (its GPU, its node's files) are said by that process.
    same_in_every_process = False
    # True when every process of a node meets it (the node's files, its GPUs): the first
    # process of each node (LOCAL_RANK 0) says it, so that 8 GPUs do not say it 8 times.
    same_on_a_node = False


class SaidInterrupt(KeyboardInterrupt):
    """A Ctrl+C whose outcome the command has said already ("Interrupted after 9 of 60
    videos; ..."): run_cli exits 130 without its own "interrupted"."""


class NodeError(UserError):
    """What every process of a node meets alike: its data files, its devices."""
    same_on_a_node = True


class OptionError(UserError):
    """A mistake in the options given: every process of a run finds it."""
    same_in_every_process = True


def dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints every thread's stack to stderr and the command goes on:
    where a run that seems stuck is (tests/chaos.py also reads where its kills land).

    A thread of its own waits for the signal (blocked in every thread started after this
    one, so no system call elsewhere is interrupted) and prints holding the interpreter
    lock: no thread's frames change meanwhile, and a main thread stuck in a C call is shown
    at once. faulthandler.register, which prints from the signal itself, reads the other
    threads' frames unlocked: it crashed processes under torchrun."""
    if not hasattr(signal, "pthread_sigmask") or \
            threading.current_thread() is not threading.main_thread():
        return  # not on Windows; signals are only set up from the main thread
    try:
        # For a thread started before this one, which can still take the signal.
        signal.signal(signal.SIGUSR1, lambda signum, frame: _print_stacks())
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    except (ValueError, OSError):
        return
    _wait_for_requests()
    if hasattr(os, "register_at_fork"):  # a forked child (a loader worker) waits for its own
        os.register_at_fork(after_in_child=_wait_for_requests)


def _wait_for_requests() -> None:
    threading.Thread(target=_print_stacks_on_request, name="stack dumps on SIGUSR1",
                     daemon=True).start()


def _print_stacks_on_request() -> None:
    while True:
        signal.sigwait({signal.SIGUSR1})
        _print_stacks()


def _print_stacks() -> None:
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


def says_errors(err: UserError | None = None) -> bool:
    """Whether this process says `err`: one that every process of the run meets (the
    default) only process 0 does under torchrun, one every process of a node meets the
    first of each node does, and any other the process that met it (the others exit with
    the same code)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or os.environ.get("RANK", "0") == "0":
        return True
    if err is None or err.same_in_every_process:
        return False
    return not err.same_on_a_node or os.environ.get("LOCAL_RANK", "0") == "0"


def run_cli(main: Callable[[list[str] | None], int]) -> None:
    """Run an entry point, turning UserError (and the file system's errors) into one line
    on stderr and its exit code."""
    try:
        code = main(None)
        sys.stdout.flush()  # here, not at exit: a reader gone is then the 141 below
    except UserError as err:
        if says_errors(err):
            print(f"error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt as stop:
        if not isinstance(stop, SaidInterrupt):
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
