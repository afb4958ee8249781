"""What every command-line entry shares: bad input is one line on stderr (exit 2), Ctrl-C says how to go on."""

from __future__ import annotations

import sys
from typing import Callable

from dfsearch.errors import DfsearchError


def guarded(body: Callable[[], int], *, debug: bool, interrupted: str) -> int:
    """Run a CLI's body; a DfsearchError prints without a traceback (unless --debug)."""
    try:
        return body()
    except DfsearchError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; {interrupted}", file=sys.stderr)
        return 130
