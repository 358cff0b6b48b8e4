"""The error policy of every command line: a user's mistake is one line and exit code 2.

A `UserError` is something the user can fix (a bad config key, a missing or corrupt file, bad data, a size
mismatch): its message says what is wrong, where (file:line or record id) and what to do. `run_cli` prints
it as `error: ...` and exits 2; `--debug` (or TELUGU_JAX_DEBUG=1) shows the traceback instead. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
  """A mistake the user can fix; the message is the whole report."""


class OutputExistsError(UserError, FileExistsError):
  """The output would replace something the user did not ask to replace."""


def debug_requested(argv: Sequence[str]) -> bool:
  return "--debug" in argv or os.environ.get("TELUGU_JAX_DEBUG", "") not in ("", "0")


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
  """Run `main(argv)` (argv without `--debug`) under the error policy; returns the exit code."""
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = debug_requested(argv)
  try:
    return int(main([a for a in argv if a != "--debug"]) or 0)
  except UserError as e:
    if debug:
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
