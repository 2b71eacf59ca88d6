"""User-facing errors: one clear line, a non-zero exit, never a traceback."""
from __future__ import annotations

import faulthandler
import signal
import sys
from typing import Callable


class UserError(Exception):
    """Something the user can fix; the message says what is wrong and what to do.
    `exit_code` is what the command exits with (2 unless a subclass says otherwise)."""
    exit_code = 2


def dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints every thread's stack to stderr and the command goes on:
    where a run that seems stuck is (tests/chaos.py also reads where its kills land)."""
    if not hasattr(signal, "SIGUSR1"):
        return  # not on Windows
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, ValueError, OSError, RuntimeError):
        pass  # stderr without a file descriptor (an embedding host): no dumps, nothing else lost


def run_cli(main: Callable[[list[str] | None], int]) -> None:
    """Run an entry point, turning UserError into one line on stderr and its exit code."""
    dump_stacks_on_sigusr1()
    try:
        code = main(None)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
