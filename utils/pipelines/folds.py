"""Fold numbers and per-fold path templates, shared by every k-fold script."""
from __future__ import annotations

from typing import List, Optional

from utils.errors import UserError


def parse_folds(folds: Optional[str], k: int) -> List[int]:
    """'1,3' -> [1, 3]; None or '' -> 1..k. Folds are numbered from 1."""
    if k < 2:
        raise UserError(f"--k must be at least 2, got {k}")
    if not folds:
        return list(range(1, k + 1))
    try:
        out = sorted({int(f) for f in str(folds).split(",") if f.strip()})
    except ValueError:
        raise UserError(f"--folds {folds!r}: expected comma-separated fold numbers, e.g. 1,3") from None
    bad = [f for f in out if not 1 <= f <= k]
    if bad or not out:
        raise UserError(f"--folds {folds!r}: folds are numbered 1..{k}")
    return out


def fill_template(tpl: Optional[str], fold: int) -> Optional[str]:
    """A path template with ``{fold}`` for one fold (None stays None)."""
    if not tpl:
        return None
    if "{fold}" not in tpl:
        raise UserError(f"template {tpl!r} has no {{fold}} placeholder")
    return tpl.format(fold=fold)
