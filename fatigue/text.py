"""Wording shared by the messages the commands print."""
from __future__ import annotations

import shlex
from pathlib import Path


def arg(value: str | Path) -> str:
    """`value` as a shell reads it in a command we print for pasting: quoted when it holds
    spaces or other characters the shell would split or expand ('my runs/a')."""
    return shlex.quote(str(value))


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 window', '3 windows', '0 windows': a count with its noun in the right number
    (`plural` where it is not the noun and an s: 'processes')."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def agree(n: int, one: str, many: str) -> str:
    """The word that agrees with a count of `n`: agree(2, 'gives', 'give') is 'give'."""
    return one if n == 1 else many


def clips_into_epoch(clips: int, epoch: int, world_size: int = 1) -> str:
    """'40 clips into epoch 4': a run's position inside an epoch (`epoch` counted from 1);
    under torchrun each process counts its own clips, and it says so."""
    return f"{clips} clips{' of each process' if world_size > 1 else ''} into epoch {epoch}"


def first_few(items: list[str], most: int = 3) -> str:
    """'a, b, c ...': the first `most` of `items`, and ' ...' when there are more."""
    return ", ".join(items[:most]) + (" ..." if len(items) > most else "")
