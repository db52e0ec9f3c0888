"""File idioms written once: atomic writes, output folders, one-line exception text.

- ``atomic_write(path, mode="w")``: a context manager that yields a file opened on a
  temporary name in the same folder and moves it into place with ``os.replace`` when the
  block ends without an error (the temporary file is removed otherwise). A reader never
  sees a half-written file, and a failed write leaves the previous file intact.
- ``prepare_output_dir(out, overwrite, owned=(), protect=())``: refuse a path that is a
  file, or a non-empty folder unless ``overwrite``; with ``overwrite``, refuse when one of
  ``protect`` (an input) lies inside one of ``owned`` (what the command writes) and then
  remove ``owned``; create the folder.
- ``one_line(exc)``: ``"TypeName: first line of the message"`` (compiler and decoder
  messages run to pages).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional

from utils.errors import UserError


@contextmanager
def atomic_write(path, mode: str = "w", fsync: bool = False, **open_kwargs) -> Iterator:
    """Write ``path`` all at once: ``with atomic_write(p) as f: f.write(...)``.

    ``mode`` is "w" (text; ``newline``/``encoding`` may be passed) or "wb". ``fsync`` flushes
    the data to disk before the rename (checkpoints). The folder must exist or is created.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> Path:
    """``path`` holds exactly ``text`` afterwards (atomically)."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def is_nonempty_dir(path) -> bool:
    p = Path(path)
    return p.is_dir() and any(p.iterdir())


def check_output_dir(out, overwrite: bool, hint: str = "use --overwrite") -> Path:
    """Refuse a file, or a non-empty folder without ``overwrite`` (before any work is done)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    if is_nonempty_dir(out) and not overwrite:
        raise UserError(f"output folder {out} is not empty ({hint})")
    return out


def prepare_output_dir(out, overwrite: bool, owned: Iterable = (), protect: Iterable = (),
                       hint: str = "use --overwrite") -> Path:
    """Check ``out`` (``check_output_dir``); when it is not empty (so ``overwrite`` was given),
    refuse if a ``protect`` path lies in (or is) one of ``owned``, then delete each ``owned``
    path (files, links, folders). ``owned`` are names relative to ``out`` or paths. Creates
    ``out`` and returns it."""
    out = check_output_dir(out, overwrite, hint)
    owned = [p if Path(p).is_absolute() else out / p for p in owned]
    owned = [Path(p) for p in owned]
    if is_nonempty_dir(out):
        for src in (Path(s) for s in protect):
            src_r = src.resolve()
            for p in owned:
                if p.exists() and (src_r == p.resolve() or p.resolve() in src_r.parents):
                    raise UserError(f"--overwrite would delete the input {src} (it lies in {p})")
        for p in owned:
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)
    out.mkdir(parents=True, exist_ok=True)
    return out


def one_line(exc: BaseException, limit: Optional[int] = 200, with_type: bool = True) -> str:
    """``"TypeName: first line"`` of an exception (just the type name when it has no message)."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if limit:
        first = first[:limit]
    if not with_type:
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
