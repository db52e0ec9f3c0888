"""Names of the predictions.csv columns and of the metric keys, in one place. No torch.

Columns (one row per image; the meaning of each is in ``utils.evaluation.metrics``):
``col.err_px(side, j)`` -> ``"err_px_left_3"`` and the like build a name; ``error_columns(df,
side)`` reads them back as ``[(column, j)]`` by matching the names this module builds (no
string splitting elsewhere).

Metric keys: ``METRIC_KEYS`` lists the flat keys (``"ai/{side}/mae"``, ``{side}`` in left,
right, pooled) that ``utils.evaluation.metrics.evaluate_predictions`` produces and the paper
tables may use. ``check_metric_keys(keys)`` raises ``KeyError`` for one that is not
among them, so a renamed metric cannot silently drop a row from a table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Tuple

SIDES = ("left", "right")
METRIC_SIDES = ("left", "right", "pooled")
BOX_COORDS = ("x1", "y1", "x2", "y2")


@dataclass(frozen=True)
class Columns:
    """The column names of a predictions row (``{side}``: left/right; ``j``: absolute keypoint index)."""
    stem: str = "stem"
    layout: str = "layout"
    pixel_spacing_mm: str = "pixel_spacing_mm"
    tri_dist: str = "tri_dist"
    mean_err_px: str = "mean_err_px"

    @staticmethod
    def detected(side: str) -> str:
        return f"detected_{side}"

    @staticmethod
    def det_conf(side: str) -> str:
        return f"det_conf_{side}"

    @staticmethod
    def iou(side: str) -> str:
        return f"iou_{side}"

    @staticmethod
    def box(kind: str, side: str, coord: str) -> str:
        """``kind`` "pred_box" or "gt_box"."""
        return f"{kind}_{side}_{coord}"

    @staticmethod
    def crop_side(side: str) -> str:
        return f"crop_side_{side}"

    @staticmethod
    def point(kind: str, axis: str, j: int) -> str:
        """``kind`` "pred" or "gt", ``axis`` "x" or "y"."""
        return f"{kind}_{axis}_{j}"

    @staticmethod
    def err_px(side: str, j: int) -> str:
        return f"err_px_{side}_{j}"

    @staticmethod
    def mean_err_px_side(side: str) -> str:
        return f"mean_err_px_{side}"

    @staticmethod
    def ai(kind: str, side: str) -> str:
        return f"{kind}_ai_{side}"

    @staticmethod
    def ihdi(kind: str, side: str) -> str:
        return f"{kind}_ihdi_{side}"


col = Columns()


def error_columns(columns: Iterable[str], side: str) -> List[Tuple[str, int]]:
    """``[(err_px column, j)]`` among ``columns`` (a DataFrame's, or any names), by index."""
    names = set(columns)
    found = []
    for name in names:
        prefix = col.err_px(side, 0)[:-1]
        rest = name[len(prefix):] if name.startswith(prefix) else ""
        if rest.isdigit() and col.err_px(side, int(rest)) == name:
            found.append((name, int(rest)))
    return sorted(found, key=lambda t: t[1])


SDR_MM = ("2", "2.5", "3", "4")

METRIC_KEYS = frozenset(
    [f"detection/{{side}}/{k}" for k in ("recall", "recall_iou0.5")]
    + [f"keypoints/{u}/{{side}}/mean" for u in ("px", "mm", "nme_crop", "nme_tri")]
    + [f"keypoints/sdr_mm/{{side}}/{r}" for r in SDR_MM]
    + [f"ai/{{side}}/{k}" for k in ("mae", "rmse", "bias", "loa_low", "loa_high", "pearson_r", "icc2_1",
                                    "icc3_1")]
    + [f"ihdi/{{side}}/{k}" for k in ("accuracy", "kappa_quadratic", "macro_f1", "screening/sensitivity",
                                      "screening/specificity")]
)


def known_metric_key(key: str) -> bool:
    """True if ``key`` (with ``{side}`` or a concrete side) is one of ``METRIC_KEYS``."""
    if key in METRIC_KEYS:
        return True
    return any(key == k.format(side=s) for k in METRIC_KEYS for s in METRIC_SIDES)


def check_metric_keys(keys: Iterable[str], where: str = "table") -> None:
    """``KeyError`` naming every key that ``evaluate_predictions`` does not produce."""
    bad = sorted(k for k in keys if not known_metric_key(k))
    if bad:
        raise KeyError(f"{where} uses metric keys that the metrics do not produce: {', '.join(bad)} "
                       f"(known: utils.evaluation.schema.METRIC_KEYS)")
