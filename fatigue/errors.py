"""User-facing errors: one clear line, a non-zero exit, never a traceback."""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """Something the user can fix; the message says what is wrong and what to do."""


def run_cli(main: Callable[[list[str] | None], int]) -> None:
    """Run an entry point, turning UserError into one line on stderr and exit code 2."""
    try:
        code = main(None)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
