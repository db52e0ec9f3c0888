"""Errors and problem bookkeeping shared by every script.

- ``UserError``: a structural problem with the user's input (missing folder, empty
  dataset, bad ratios, unknown model name, ...). Scripts exit with code 2 and print
  one line naming the problem.
- ``ItemError``: one item (an image, an annotation file) is unusable. Loaders skip
  it with a warning naming the file, count it in a ``ProblemLog``, and go on,
  unless ``strict`` is set, in which case it becomes a ``UserError``.
"""
from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Tuple

log = logging.getLogger("hipkp")


class UserError(Exception):
    """A structural problem with the input: the script stops with exit code 2."""


class ItemError(Exception):
    """One item is unusable (skipped with a warning, or fatal under --strict)."""


@dataclass
class ProblemLog:
    """Per-item problems of one run: skipped with a warning, listed in the summary."""
    strict: bool = False
    items: List[Tuple[str, str]] = field(default_factory=list)

    def add(self, item, message: str) -> None:
        item = str(item)
        message = str(message)
        if message.startswith(f"{item}: "):  # loaders' messages often start with the same path
            message = message[len(item) + 2:]
        if self.strict:
            raise UserError(f"{item}: {message} (stopped by --strict; without it this item is skipped "
                            "and listed)")
        self.items.append((item, message))
        log.warning("skipped %s: %s", item, message)

    def __len__(self) -> int:
        return len(self.items)

    def summary_line(self) -> str:
        return f"{len(self.items)} item(s) skipped" if self.items else "no items skipped"

    def to_dicts(self):
        return [{"item": i, "problem": m} for i, m in self.items]

    def write(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"skipped": self.to_dicts()}, indent=2))


def cli(fn: Callable) -> Callable:
    """Decorator for a script's ``main``: a ``UserError`` becomes one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
