"""Progress display: a tqdm bar on a terminal, plain lines in a log.

A bar redraws itself with carriage returns; without a terminal (nohup, a SLURM log, CI, a
pipe) each redraw lands in the file as a fragment. So `bar()` is the one place that
chooses: a tqdm bar when stderr, where tqdm draws, is a terminal (as before), else a
LineProgress with tqdm's few methods used here, which prints one plain line on stdout every
EVERY_S seconds (or every `every_n` updates), e.g.

    epoch 3/100  step 120/300  loss 0.412  acc 81.2%  64.1 clips/s
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, TextIO

from tqdm import tqdm

EVERY_S = 10.0
_WRITING = threading.Lock()  # whole lines, when two threads print (see write_line)


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (stderr by default, where tqdm draws) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def write_line(text: str) -> None:
    """Print `text` as one whole line on stdout, from any thread: clear of a progress bar
    on a terminal (tqdm.write), and never torn by another thread's line in a log."""
    if on_terminal():
        tqdm.write(text)
        return
    with _WRITING:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "",
        unit: str = "it", initial: float = 0, disable: bool = False,
        count: Callable[[Any], int] | None = None,
        count_unit: str | None = None, every_s: float = EVERY_S, every_n: int = 0,
        **tqdm_options: Any) -> Bar:
    """A progress display over `iterable` (or updated by hand with `total`).

    count, count_unit: for the plain lines' rate, how many `count_unit`s an item holds
        (a batch's clips); without them the rate is in `unit`s.
    every_s, every_n: how often a plain line is printed.
    tqdm_options: passed to tqdm only (leave, dynamic_ncols, mininterval, unit_scale...)."""
    if on_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial,
                    disable=disable, **tqdm_options)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                        disable=disable,
                        count=count, count_unit=count_unit, every_s=every_s, every_n=every_n)


class LineProgress:
    """tqdm's interface as used here (iterate, update, set_postfix, set_description,
    close), printing a plain line now and then instead of redrawing a bar."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None,
                 desc: str = "", unit: str = "it", initial: float = 0, disable: bool = False,
                 count: Callable[[Any], int] | None = None, count_unit: str | None = None,
                 every_s: float = EVERY_S, every_n: int = 0, file: TextIO | None = None) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.count, self.count_unit = disable, count, count_unit
        self.every_s, self.every_n, self.file = every_s, every_n, file
        self.n, self.counted, self.postfix = initial, 0, ""  # counted: since the start
        self.started = self.shown_at = time.monotonic()
        self.shown_n = initial

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            # Counted once the caller is done with the item, as tqdm does.
            self.update(1, self.count(item) if self.count else None)

    def update(self, n: float = 1, counted: int | None = None) -> None:
        self.n += n
        self.counted += n if counted is None else counted
        if self.disable:
            return
        now = time.monotonic()
        if (now - self.shown_at >= self.every_s
                or (self.every_n and self.n - self.shown_n >= self.every_n)):
            self.shown_at, self.shown_n = now, self.n
            if self.file is None:
                write_line(self.line(now))
            else:
                print(self.line(now), file=self.file, flush=True)

    def line(self, now: float | None = None) -> str:
        """The plain line: description, position, postfix, rate."""
        seconds = (time.monotonic() if now is None else now) - self.started
        position = (f"{self.unit} {self.n:.0f}/{self.total:.0f}" if self.total
                    else f"{self.n:.0f} {self.unit}s")
        rate = f"{self.counted / seconds:.1f} {self.count_unit or self.unit + 's'}/s" \
            if seconds > 0 else ""
        return "  ".join(part for part in (self.desc, position, self.postfix, rate) if part)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True,
                    **values: Any) -> None:
        values = {**(ordered_dict or {}), **values}
        self.postfix = "  ".join(f"{key} {value}" for key, value in values.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        """Nothing to clear: the lines stay, and the caller prints its own summary."""


Bar = tqdm | LineProgress  # what bar() returns
