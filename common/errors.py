"""The one kind of failure the command-line tools report: a short sentence saying what is wrong
and what to do.

`python -m localstack`, `python -m migrations` and the migration job print a `CommandError` as
one line on stderr and exit non-zero, without a traceback, because the reader is someone running
`make up` or `terraform apply`, not someone debugging the code.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable


class CommandError(Exception):
    """A problem the user can fix; the message names it and the fix, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def require_command(name: str, how_to_install: str) -> str:
    """The full path of an executable on PATH, or a CommandError telling how to get it."""
    path = shutil.which(name)
    if path is None:
        raise CommandError(f"`{name}` is not on PATH; {how_to_install}")
    return path


def first_line(text: str | BaseException | None) -> str:
    """The first non-empty line of a (possibly multi-line) error text, to quote in a one-line
    message."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def exit_status(action: Callable[[], object]) -> int:
    """Run a command line's `action`: 0, or 1 after printing its CommandError as one line on
    stderr."""
    try:
        action()
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
