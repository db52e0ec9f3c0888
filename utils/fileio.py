"""File idioms written once: atomic writes, output folders, one-line exception text.

- ``atomic_write(path, mode="w")``: a context manager that yields a file opened on a
  temporary name in the same folder and moves it into place with ``os.replace`` when the
  block ends without an error (the temporary file is removed otherwise). A reader never
  sees a half-written file, and a failed write leaves the previous file intact.
- ``prepare_output_dir(out, overwrite, owned=(), protect=())``: refuse a path that is a
  file, or a non-empty folder unless ``overwrite``; with ``overwrite``, refuse when one of
  ``protect`` (an input) lies inside one of ``owned`` (what the command writes) and then
  remove ``owned``; create the folder.
- ``check_input_dir(path, flag)`` / ``check_writable_dir(path, flag)``: a folder argument
  that is an existing file, or (output) cannot be created or written, is a ``UserError``
  naming the flag and the path; ``check_dir_args(args, inputs, outputs)`` applies them to a
  script's parsed flags, right after argparse. ``check_output_dir`` checks writability too.
- ``one_line(exc)``: ``"TypeName: first line of the message"`` (compiler and decoder
  messages run to pages).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

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


def _named(flag: Optional[str], path: Path) -> str:
    return f"{flag}: {path}" if flag else f"output {path}"


def check_input_dir(path, flag: Optional[str] = None) -> Path:
    """Refuse an input folder argument that is an existing file (a missing one is left to the
    command, which says what it expected there)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag + ': ' if flag else ''}{p} is a file, not a folder")
    return p


def check_writable_dir(path, flag: Optional[str] = None) -> Path:
    """Refuse an output folder argument that is an existing file, cannot be created (a parent is
    a file, or not writable) or cannot be written. Nothing is created; a probe file is made
    and removed at once in the folder or its nearest existing parent (so that a read-only
    file system is caught even for root, whom permission bits do not stop)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{_named(flag, p)} is a file, not a folder")
    parent = p
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{_named(flag, p)} cannot be created: {parent} is a file")
    try:
        with tempfile.TemporaryFile(dir=parent, prefix=".write_check_"):
            pass
    except OSError as e:
        what = "cannot be written" if parent == p else f"cannot be created in {parent}"
        raise UserError(f"{_named(flag, p)} {what} ({e.strerror or one_line(e)})") from None
    return p


def check_dir_args(args, inputs: Sequence[str] = (), outputs: Sequence[str] = ()) -> None:
    """Check a script's folder flags right after argparse. ``inputs``/``outputs`` are the flags as
    typed (``"--data"``, or a positional's name); values that are None are skipped, lists
    (``nargs``) are checked item by item."""
    for names, check in ((inputs, check_input_dir), (outputs, check_writable_dir)):
        for flag in names:
            value = getattr(args, flag.lstrip("-"), None)
            for v in (value if isinstance(value, (list, tuple)) else [value]):
                if v is not None and str(v) != "":
                    check(v, flag)


def check_output_dir(out, overwrite: bool, hint: str = "use --overwrite") -> Path:
    """Refuse a file, a folder that cannot be created or written, or a non-empty folder without
    ``overwrite`` (before any work is done)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    check_writable_dir(out)
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
