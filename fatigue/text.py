"""Wording shared by the messages the commands print."""
from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """'1 window', '3 windows', '0 windows': a count with its noun in the right number."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
