"""Stopping on Ctrl+C or SIGTERM: the signal only sets a flag; the loop finishes the step
it is in, raises `StopTraining`, and the one place that catches it saves and exits.
(Saving inside the signal handler itself can hang or tear the file.) `signals_raise` is
for code with nothing to finish: a signal raises where it lands."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopTraining(BaseException):
    """Raised by the loop at a step or epoch boundary once a stop was requested, and by
    signals_raise wherever a signal lands. A BaseException, as KeyboardInterrupt is: an
    `except Exception` on its way (a damaged file's, a broken package's) must not take a
    stop for a failure of its own and go on (a Ctrl+C during a checkpoint's load was
    reported as a damaged file, and the file set aside)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 1)


class StopRequest:
    """While active, SIGINT and SIGTERM set `signum` instead of stopping the process."""

    def __init__(self, verbose: bool = True) -> None:
        self.signum: int | None = None
        self.verbose = verbose
        self._installed = contextlib.ExitStack()

    def __enter__(self) -> "StopRequest":
        self._installed.enter_context(handling(self._handle))
        return self

    def __exit__(self, *exc) -> None:
        self._installed.close()

    def _handle(self, signum: int, frame) -> None:
        if self.verbose:
            print(f"\n{signal.Signals(signum).name} received: finishing the current step, then "
                  f"saving the checkpoint..." if self.signum is None else
                  "\nalready stopping: the checkpoint is being saved, please wait",
                  file=sys.stderr, flush=True)
        if self.signum is None:  # the first decides: the line said and the exit code agree
            self.signum = signum


@contextlib.contextmanager
def handling(handle: Callable[[int, object], None],
             signals: tuple[int, ...] = tuple(EXIT_CODES)) -> Iterator[None]:
    """While inside, `handle` takes each of `signals`; the previous handlers come back on
    exit. Elsewhere than the main thread (which alone takes signals) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def signals_raise(make: Callable[[int], BaseException],
                  signals: tuple[int, ...] = tuple(EXIT_CODES)):
    """While inside, each of `signals` raises make(signum) wherever the main thread is; a
    second one while the first unwinds is ignored (see `handling`)."""
    stopping: list[int] = []

    def handle(signum: int, frame) -> None:
        if not stopping:
            stopping.append(signum)
            raise make(signum)
    return handling(handle, signals)

