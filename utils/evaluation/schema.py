"""Names of the predictions.csv columns and of the metric keys, in one place. No torch.

Columns (one row per image; the meaning of each is in ``utils.evaluation.metrics``):
``column("err_px", side="left", j=3)`` -> ``"err_px_left_3"`` builds a name (``COLUMNS``); ``error_columns(df,
side)`` reads them back as ``[(column, j)]`` by matching the names this module builds (no
string splitting elsewhere).

Metric keys: ``METRIC_KEYS`` lists the flat keys (``"ai/{side}/mae"``, ``{side}`` in left,
right, pooled) that ``utils.evaluation.metrics.evaluate_predictions`` produces and the paper
tables may use. ``check_metric_keys(keys)`` raises ``KeyError`` for one that is not
among them, so a renamed metric cannot silently drop a row from a table.
``HEAD_CENTRE_METRIC_KEYS`` (CE, Toennis) are among them but produced only for ``mtddh8``.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

SIDES = ("left", "right")
METRIC_SIDES = ("left", "right", "pooled")
BOX_COORDS = ("x1", "y1", "x2", "y2")


# column -> its name template; ``{side}`` left/right, ``{j}`` the absolute keypoint index,
# ``{kind}`` pred/gt (pred_box/gt_box for boxes), ``{axis}`` x/y, ``{coord}`` one of BOX_COORDS
COLUMNS = {
    "stem": "stem", "layout": "layout", "pixel_spacing_mm": "pixel_spacing_mm", "tri_dist": "tri_dist",
    "mean_err_px": "mean_err_px", "mean_err_px_side": "mean_err_px_{side}",
    "detected": "detected_{side}", "det_conf": "det_conf_{side}", "iou": "iou_{side}",
    "box": "{kind}_{side}_{coord}", "crop_side": "crop_side_{side}", "point": "{kind}_{axis}_{j}",
    "err_px": "err_px_{side}_{j}", "ai": "{kind}_ai_{side}", "ihdi": "{kind}_ihdi_{side}",
    # the plausibility gate, the AI interval and the further measurements (docs/outputs.md)
    "qc": "qc_{side}", "ai_lo": "pred_ai_{side}_lo", "ai_hi": "pred_ai_{side}_hi",
    "ce": "{kind}_ce_{side}", "tonnis": "{kind}_tonnis_{side}",
    "h": "{kind}_h_{side}", "d": "{kind}_d_{side}", "h_mm": "{kind}_h_mm_{side}", "d_mm": "{kind}_d_mm_{side}",
    "err": "err_{measure}_{side}",          # signed pred - gt of a measurement (ce, h, d, h_mm, d_mm)
}

# measurements with a signed error column ``err_{measure}_{side}``; ce only for a layout with a head centre
MEASURES = ("ce", "h", "d", "h_mm", "d_mm")
HEAD_CENTRE_MEASURES = ("ce", "tonnis")


def column(name: str, **parts) -> str:
    """``column("err_px", side="left", j=3) -> "err_px_left_3"``."""
    return COLUMNS[name].format(**parts)


def error_columns(columns: Iterable[str], side: str) -> List[Tuple[str, int]]:
    """``[(err_px column, j)]`` among ``columns`` (a DataFrame's, or any names), by index."""
    names = set(columns)
    found = []
    for name in names:
        prefix = column("err_px", side=side, j=0)[:-1]
        rest = name[len(prefix):] if name.startswith(prefix) else ""
        if rest.isdigit() and column("err_px", side=side, j=int(rest)) == name:
            found.append((name, int(rest)))
    return sorted(found, key=lambda t: t[1])


SDR_MM = ("2", "2.5", "3", "4")

METRIC_KEYS = frozenset(
    [f"detection/{{side}}/{k}" for k in ("recall", "recall_iou0.5")]
    + [f"keypoints/{u}/{{side}}/mean" for u in ("px", "mm", "nme_crop", "nme_tri")]
    + [f"keypoints/sdr_mm/{{side}}/{r}" for r in SDR_MM]
    + [f"ai/{{side}}/{k}" for k in ("mae", "rmse", "bias", "loa_low", "loa_high", "pearson_r", "icc2_1",
                                    "icc3_1", "mae_ci_lo", "mae_ci_hi")]
    + [f"ihdi/{{side}}/{k}" for k in ("accuracy", "kappa_quadratic", "macro_f1", "screening/sensitivity",
                                      "screening/specificity")]
    + [f"gate/{{side}}/{k}" for k in ("gradable_rate", "n_hips", "n_gradable")]
    + [f"ai_gradable/{{side}}/{k}" for k in ("mae", "rmse", "bias", "icc2_1", "n")]
    + [f"ihdi_gradable/{{side}}/{k}" for k in ("accuracy", "kappa_quadratic", "macro_f1", "n")]
    + [f"ai_interval/{{side}}/{k}" for k in ("coverage", "mean_width", "n")]
    + [f"{g}/{{side}}/mae" for g in ("h_px", "d_px", "h_mm", "d_mm")]
)

# keys only a layout with a femoral head centre (mtddh8) has: CE angle and Toennis grade
HEAD_CENTRE_METRIC_KEYS = frozenset(
    [f"ce/{{side}}/{k}" for k in ("mae", "rmse", "bias", "loa_low", "loa_high", "icc2_1", "icc3_1")]
    + [f"tonnis/{{side}}/{k}" for k in ("accuracy", "kappa_quadratic", "macro_f1")]
)
METRIC_KEYS = METRIC_KEYS | HEAD_CENTRE_METRIC_KEYS


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
