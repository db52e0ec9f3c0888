"""Progress that reads well in a terminal and in a log file (SLURM, nohup, CI, ``> log 2>&1``).

``progress_bar(iterable, total, desc, unit, enabled, every, stream)`` returns a tqdm bar when
``stream`` (stderr by default, where tqdm writes) is a terminal. Otherwise it returns a
``PlainProgress``: no carriage returns, no redraws, only whole lines
``"{desc}: {n}/{total} {unit} ({pct}%), {rate} {unit}/s, {elapsed} s, eta {eta} s"``, one each
time ``every`` more items are done and one at the end; ``every=0`` prints nothing (training
logs its own line per epoch). Both have the same small interface: iterate, ``update(n)``,
``set_postfix(**kw)``, ``close()``, and ``with``.

``interactive(stream)`` is the one test of "is this a terminal".
"""
from __future__ import annotations

import math
import sys
import time
from typing import Iterable, Optional


def interactive(stream=None) -> bool:
    """True when ``stream`` (default: stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def every_for(total: int, chunk: int = 1, lines: int = 10) -> int:
    """Items per plain line: about ``lines`` lines over ``total`` items, never under ``chunk``
    (prediction updates a batch at a time)."""
    return max(int(chunk), math.ceil(max(int(total), 1) / max(int(lines), 1)))


class PlainProgress:
    """The line-per-N-items stand-in for a tqdm bar (see the module docstring)."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", every: int = 0, stream=None):
        self.iterable, self.desc, self.unit, self.every = iterable, desc, unit, max(0, int(every))
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.stream = total, stream
        self.n, self.last_n, self.postfix, self.closed = 0, 0, "", False
        self.t0 = time.time()

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        if self.every and self.n - self.last_n >= self.every and self.n != self.total:
            self._print()

    def close(self) -> None:
        if not self.closed and self.every and self.n != self.last_n:
            self._print()
        self.closed = True

    def line(self) -> str:
        dt = max(time.time() - self.t0, 1e-9)
        rate = self.n / dt
        if self.total:
            head = f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            head = f"{self.n} {self.unit}"
        text = f"{self.desc}: {head}, {rate:.1f} {self.unit}/s, {dt:.0f} s"
        if self.total and 0 < self.n < self.total and rate > 0:
            text += f", eta {(self.total - self.n) / rate:.0f} s"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _print(self) -> None:
        self.last_n = self.n
        stream = sys.stderr if self.stream is None else self.stream
        print(self.line(), file=stream, flush=True)


def progress_bar(iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", enabled: bool = True, every: int = 0, stream=None, **tqdm_kwargs):
    """A tqdm bar in a terminal, a ``PlainProgress`` otherwise (silent when not ``enabled``)."""
    if enabled and interactive(stream):
        from tqdm import tqdm  # (tqdm's import is slow-ish; only a run in a terminal needs it)

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, **tqdm_kwargs)
    return PlainProgress(iterable, total, desc, unit, every if enabled else 0, stream)
