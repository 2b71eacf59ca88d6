"""Wording shared by the messages the commands print."""
from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 window', '3 windows', '0 windows': a count with its noun in the right number
    (`plural` where it is not the noun and an s: 'processes')."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def agree(n: int, one: str, many: str) -> str:
    """The word that agrees with a count of `n`: agree(2, 'gives', 'give') is 'give'."""
    return one if n == 1 else many


def first_few(items: list[str], most: int = 3) -> str:
    """'a, b, c ...': the first `most` of `items`, and ' ...' when there are more."""
    return ", ".join(items[:most]) + (" ..." if len(items) > most else "")
