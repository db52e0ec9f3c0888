"""Clinical and keypoint metrics for hip keypoint detection (numpy/scipy/sklearn, no torch).

Everything here works on plain arrays or on one *predictions DataFrame* with one
row per image. ``evaluate_predictions(df)`` (alias ``evaluate``) turns that DataFrame into a nested, JSON-ready dict;
``flatten_metrics`` turns the dict into ``(name, value)`` rows for ``metrics.csv``.

Sides are image sides (docs/CONVENTIONS.md, "Coordinates and sides"): ``left`` is the hip drawn on the
image-left, the patient's right hip.

Predictions DataFrame schema
----------------------------
One row per image. ``make_row(...)`` builds a row with exactly these columns as a
``utils.evaluation.schema.PredictionRow`` (``prediction_row(...)``: the same as a dict), so a
predict script should call it rather than assemble columns itself; the names and their order
live in ``utils.evaluation.schema``. ``{side}`` is
``left`` or ``right``; ``{j}`` is the *absolute* keypoint index of the layout
(ihdi12: left 0-5, right 6-11; mtddh8: left 0-3, right 4-7), so a column's
anatomical name is ``layout.side_point_names(side)[layout.local(side, j)]``.

==========================  =================================================================
column                      meaning
==========================  =================================================================
``stem``                    image stem (str)
``layout``                  keypoint layout name (``ihdi12`` / ``mtddh8``)
``detected_{side}``         bool: the detector returned a box for this side
``det_conf_{side}``         detector confidence (NaN when not detected / GT boxes)
``iou_{side}``              IoU of the predicted box with the GT box; 0 when not detected,
                            NaN when there is no GT box
``pred_box_{side}_{c}``     predicted box, ``c`` in x1, y1, x2, y2 (image px; NaN if none)
``gt_box_{side}_{c}``       GT box, same (NaN if none)
``crop_side_{side}``        side of the square crop in original image px (NaN if none)
``pixel_spacing_mm``        mm per pixel, NaN when unknown (excluded from the mm metrics)
``tri_dist``                GT inter-triradiate distance in px (NaN without GT)
``pred_x_{j}``, ``pred_y_{j}``  predicted keypoints in image px (NaN for an undetected side)
``gt_x_{j}``, ``gt_y_{j}``      GT keypoints in image px (NaN without GT)
``err_px_{side}_{j}``       radial error of keypoint ``j`` in px (NaN when not available); a
                            right-side ``j`` below the points per side is also accepted as the
                            position in the side's stored block (see ``error_index``)
``mean_err_px``             mean of the row's ``err_px_*`` (NaN when none)
``mean_err_px_{side}``      mean of the side's ``err_px_*``
``pred_ai_{side}``          predicted acetabular index, degrees (NaN when not measurable)
``gt_ai_{side}``            GT acetabular index, degrees
``pred_ihdi_{side}``        predicted IHDI grade 1-4, 0 = ungradable (degenerate geometry),
                            NaN = no prediction (side not detected)
``gt_ihdi_{side}``          GT IHDI grade, same coding
``qc_{side}``               plausibility gate: "" when the hip passes (or was not gated), else
                            its reason codes joined by ";"; a failed hip's ``pred_ihdi`` and
                            ``pred_tonnis`` are 0, its ``pred_ai`` and ``pred_ce`` stay
``pred_ai_{side}_lo/_hi``   the AI's 95% interval from sampled keypoints (NaN: no distribution)
``{kind}_ce_{side}``        CE angle, degrees (layouts with a head centre: mtddh8)
``{kind}_tonnis_{side}``    Toennis grade 1-4, 0 ungradable (mtddh8)
``{kind}_h_{side}``,        Hilgenreiner h and d in px; ``{kind}_h_mm_{side}``/``_d_mm_`` in mm
``{kind}_d_{side}``         (NaN without a pixel spacing)
``err_{m}_{side}``          signed pred - gt of m in ce, h, d, h_mm, d_mm
==========================  =================================================================

``evaluate_predictions`` needs only ``stem`` plus whichever of ``detected_*``, ``iou_*``,
``err_px_*``, ``pixel_spacing_mm``, ``crop_side_*``, ``tri_dist``, ``*_ai_*`` and
``*_ihdi_*`` are present; a metric group whose columns are missing is left out.

Conventions
-----------
- Undetected sides (``detected_{side}`` false) are counted by the detection metrics
  and excluded (reported as ``n_missing``) from the keypoint, AI and IHDI metrics,
  whatever their ``pred_*`` cells hold (e.g. a 0 grade).
- IHDI grade 0 (ungradable) is counted (``n_ungradable_gt`` / ``n_ungradable_pred``)
  and the pair is excluded from the grade metrics, except in the all-hips blocks (``ihdi``,
  ``tonnis``), where a hip failed by the gate counts as an error (``ihdi_metrics(failed=...)``;
  docs/outputs.md, "Which hips each number counts"). Every block's ``n`` is the number of hips
  it counts.
- SDs are sample SDs (``ddof=1``). ``pooled`` means both sides together.
- Values that cannot be computed (no data, zero denominators) are NaN, ``None`` in
  the JSON dict.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

from datasets.layouts import SIDES, get_layout, layout_for_num_points
from utils.config import AI_INTERVAL_MAX_WIDTH_DEG
from utils.evaluation import schema
from utils.evaluation.schema import has_head_centre
from utils.hip_geometry import (DEFAULT_MIN_CONF, GATE_REASONS, ce_angle, format_reasons, hilgenreiner_distances,
                                hip_frames, plausibility_gate, tonnis_grade)

GRADES = (1, 2, 3, 4)
GRADE_LABELS = ("I", "II", "III", "IV")
SDR_RADII = (2.0, 2.5, 3.0, 4.0)
IOU_THRESHOLD = 0.5
POOLED = "pooled"


# ------------------------------------------------------------------ helpers
def _nan_if_empty(fn, x):
    return float(fn(x)) if len(x) else float("nan")


def _finite(*arrays):
    """Mask of positions where every array is finite."""
    m = np.ones(np.shape(arrays[0]), dtype=bool)
    for a in arrays:
        m &= np.isfinite(np.asarray(a, dtype=float))
    return m


def _div(a, b):
    return float(a) / float(b) if b else float("nan")


def to_jsonable(obj):
    """Recursively turn numpy scalars/arrays into Python types and NaN/inf into None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


# ------------------------------------------------------------------ keypoints
def radial_errors(pred, gt) -> np.ndarray:
    """Euclidean distance per keypoint: ``pred``, ``gt`` (B, N, 2) or (N, 2) -> (B, N) or (N,)."""
    pred = np.asarray(pred, dtype=float)
    gt = np.asarray(gt, dtype=float)
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must have the same (..., 2) shape, got {pred.shape} and {gt.shape}")
    return np.sqrt(np.sum((pred - gt) ** 2, axis=-1))


def error_summary(errors) -> Dict[str, float]:
    """Mean (MRE), SD (ddof=1), median, max and count of the finite values of ``errors``."""
    e = np.asarray(errors, dtype=float).ravel()
    e = e[np.isfinite(e)]
    return {
        "mean": _nan_if_empty(np.mean, e),
        "sd": float(np.std(e, ddof=1)) if len(e) > 1 else float("nan"),
        "median": _nan_if_empty(np.median, e),
        "max": _nan_if_empty(np.max, e),
        "n": int(len(e)),
    }


def success_detection_rate(errors, radii: Sequence[float] = SDR_RADII) -> Dict[str, float]:
    """Fraction of finite errors ``<= r`` for each radius ``r`` (keys: ``"2"``, ``"2.5"``, ...)."""
    e = np.asarray(errors, dtype=float).ravel()
    e = e[np.isfinite(e)]
    return {_radius_key(r): (float(np.mean(e <= r)) if len(e) else float("nan")) for r in radii}


def _radius_key(r: float) -> str:
    return f"{float(r):g}"


def crop_diagonal(crop_side) -> np.ndarray:
    """Diagonal of a square crop of side ``crop_side`` (px): the original study's NME normaliser."""
    return np.asarray(crop_side, dtype=float) * math.sqrt(2.0)


def normalized_errors(errors, norm) -> np.ndarray:
    """``errors`` (B, K) divided by a per-row normaliser ``norm`` (B,); non-positive norms -> NaN."""
    e = np.asarray(errors, dtype=float)
    n = np.asarray(norm, dtype=float).reshape(-1, *([1] * (e.ndim - 1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, e / n, np.nan)


def box_iou(a, b) -> np.ndarray:
    """IoU of boxes ``(x1, y1, x2, y2)`` (any corner order), broadcast over leading axes.

    ``a`` (..., 4) and ``b`` (..., 4) -> (...). Boxes with NaN give NaN; two
    zero-area boxes give 0.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)

    def norm(x):
        return (np.minimum(x[..., 0], x[..., 2]), np.minimum(x[..., 1], x[..., 3]),
                np.maximum(x[..., 0], x[..., 2]), np.maximum(x[..., 1], x[..., 3]))

    ax1, ay1, ax2, ay2 = norm(a)
    bx1, by1, bx2, by2 = norm(b)
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    iou = np.where(np.isfinite(union), iou, np.nan)
    return iou if iou.ndim else float(iou)


# ------------------------------------------------------------------ agreement (continuous)
def icc(ratings, kind: str = "2,1") -> float:
    """Intraclass correlation (Shrout & Fleiss 1979) of an (n targets, k raters) matrix.

    From the two-way ANOVA mean squares: BMS (between targets), JMS (between
    raters), EMS (residual), WMS (within targets).

    - ``"1,1"``: (BMS - WMS) / (BMS + (k-1) WMS)
    - ``"2,1"``: (BMS - EMS) / (BMS + (k-1) EMS + k (JMS - EMS) / n)   absolute agreement
    - ``"3,1"``: (BMS - EMS) / (BMS + (k-1) EMS)                       consistency

    Rows with a non-finite rating are dropped. NaN with fewer than 2 targets.
    """
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"ratings must be (n targets, k >= 2 raters), got {x.shape}")
    x = x[np.all(np.isfinite(x), axis=1)]
    n, k = x.shape
    if n < 2:
        return float("nan")
    grand = x.mean()
    ss_total = np.sum((x - grand) ** 2)
    ss_rows = k * np.sum((x.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((x.mean(axis=0) - grand) ** 2)
    ss_err = ss_total - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    jms = ss_cols / (k - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    wms = (ss_cols + ss_err) / (n * (k - 1))
    if kind == "1,1":
        num, den = bms - wms, bms + (k - 1) * wms
    elif kind == "2,1":
        num, den = bms - ems, bms + (k - 1) * ems + k * (jms - ems) / n
    elif kind == "3,1":
        num, den = bms - ems, bms + (k - 1) * ems
    else:
        raise ValueError(f"kind must be '1,1', '2,1' or '3,1', got {kind!r}")
    if den == 0:
        return 1.0 if num == 0 and ss_total == 0 else float("nan")
    return float(num / den)


def bland_altman(pred, gt) -> Dict[str, float]:
    """Bland-Altman on finite pairs: bias = mean(pred - gt), LoA = bias -/+ 1.96 SD (ddof=1)."""
    p, g = np.asarray(pred, dtype=float).ravel(), np.asarray(gt, dtype=float).ravel()
    m = _finite(p, g)
    d = p[m] - g[m]
    bias = _nan_if_empty(np.mean, d)
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd, "n": int(len(d))}


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_ci(values, statistic=np.mean, confidence: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> Tuple[float, float]:
    """Percentile bootstrap confidence interval (``scipy.stats.bootstrap``, seeded) of
    ``statistic`` over the finite ``values`` (e.g. absolute AI errors, one per hip).
    (NaN, NaN) with fewer than 2 values; (v, v) when all values are equal."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    if np.all(v == v[0]):
        s = float(statistic(v))
        return s, s
    res = stats.bootstrap((v,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", random_state=np.random.default_rng(seed), vectorized=False)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def agreement(pred, gt) -> Dict[str, float]:
    """Continuous agreement of predicted vs reference values (e.g. AI in degrees).

    MAE, SD of the error (ddof=1), RMSE, bias (mean pred - gt), Pearson r and its p,
    ICC(2,1), ICC(3,1), Bland-Altman limits of agreement, on the finite pairs.
    """
    p, g = np.asarray(pred, dtype=float).ravel(), np.asarray(gt, dtype=float).ravel()
    m = _finite(p, g)
    p, g = p[m], g[m]
    d = p - g
    out = {"n": int(len(d)), "n_missing": int((~m).sum())}
    out["mae"] = _nan_if_empty(np.mean, np.abs(d))
    out["sd_error"] = float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
    out["rmse"] = float(np.sqrt(np.mean(d ** 2))) if len(d) else float("nan")
    ba = bland_altman(p, g)
    out["bias"], out["loa_low"], out["loa_high"] = ba["bias"], ba["loa_low"], ba["loa_high"]
    if len(d) >= 2 and np.std(p) > 0 and np.std(g) > 0:
        r, pv = stats.pearsonr(p, g)
        out["pearson_r"], out["pearson_p"] = float(r), float(pv)
    else:
        out["pearson_r"], out["pearson_p"] = float("nan"), float("nan")
    pair = np.stack([g, p], axis=1) if len(d) else np.empty((0, 2))
    out["icc2_1"] = icc(pair, "2,1") if len(d) >= 2 else float("nan")
    out["icc3_1"] = icc(pair, "3,1") if len(d) >= 2 else float("nan")
    return out


# ------------------------------------------------------------------ IHDI grades
def _grade_pairs(y_true, y_pred):
    """Split grade pairs into usable (both 1-4), ungradable (a 0) and missing (NaN)."""
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    missing = ~_finite(t, p)
    ung_t = (t == 0) & ~missing
    ung_p = (p == 0) & ~missing
    use = ~missing & ~ung_t & ~ung_p
    bad = use & ~(np.isin(t, GRADES) & np.isin(p, GRADES))
    if np.any(bad):
        raise ValueError(f"IHDI grades must be 0-4 (or NaN), got {sorted(set(t[bad]) | set(p[bad]))}")
    counts = {"n": int(use.sum()), "n_missing": int(missing.sum()),
              "n_ungradable_gt": int(ung_t.sum()), "n_ungradable_pred": int(ung_p.sum()),
              "n_ungradable": int((ung_t | ung_p).sum())}
    return t[use].astype(int), p[use].astype(int), counts


def confusion_4class(y_true, y_pred) -> np.ndarray:
    """4x4 confusion matrix, rows = reference grade I-IV, columns = predicted (grade 0 / NaN dropped)."""
    t, p, _ = _grade_pairs(y_true, y_pred)
    return confusion_matrix(t, p, labels=list(GRADES)) if len(t) else np.zeros((4, 4), dtype=int)


def screening_confusion(y_true, y_pred) -> np.ndarray:
    """2x2 confusion of the screening view, rows/cols ``[normal (I), abnormal (II-IV)]``."""
    t, p, _ = _grade_pairs(y_true, y_pred)
    return confusion_matrix(t >= 2, p >= 2, labels=[False, True]) if len(t) else np.zeros((2, 2), dtype=int)


def screening_metrics(tp: int, fp: int, tn: int, fn: int) -> Dict[str, float]:
    """Sensitivity, specificity, PPV, NPV, F1 from counts (positive = abnormal)."""
    sens, spec = _div(tp, tp + fn), _div(tn, tn + fp)
    ppv, npv = _div(tp, tp + fp), _div(tn, tn + fn)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    return {"sensitivity": sens, "specificity": spec, "ppv": ppv, "npv": npv, "f1": f1,
            "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def _failed_pairs(y_true, y_pred, failed) -> np.ndarray:
    """Reference grades (1-4) of the pairs ``failed`` marks whose prediction is ungradable (0)."""
    if failed is None:
        return np.empty(0, dtype=int)
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    m = np.asarray(failed, dtype=bool).ravel() & (p == 0) & np.isin(t, GRADES)
    return t[m].astype(int)


def worst_case_grade(y_true) -> np.ndarray:
    """The grade farthest from each reference grade (I, II -> IV; III, IV -> I): what an
    ungradable prediction counts as in the all-hips kappa, the most conservative assignment."""
    t = np.asarray(y_true, dtype=int)
    return np.where(t <= 2, GRADES[-1], GRADES[0]).astype(int)


def ihdi_metrics(y_true, y_pred, failed=None) -> Dict:
    """IHDI grade agreement on pairs where both grades are 1-4.

    Accuracy, confusion matrix (labels I-IV fixed; ``confusion[gt][pred]``), macro
    precision/recall/F1 over the grades present in either array (sklearn,
    zero_division=0), per-grade P/R/F1/support, quadratic-weighted Cohen's kappa
    (labels 1-4; NaN when undefined, e.g. a single grade in both) and the screening
    view (grade I vs II-IV, positive = II-IV). Grade-0 and missing pairs are counted
    and excluded. ``n`` is the number of hips every one of these numbers counts.

    ``failed`` (a boolean mask like ``y_pred``) marks hips that failed the plausibility
    gate: their ungradable prediction (0) then counts as an error instead of being left
    out (``n_failed_as_error``; ``n`` = ``n_graded`` + ``n_failed_as_error``): wrong in the
    accuracy, a miss of its reference grade in P/R/F1, a ``pred_ungradable`` column of the
    confusion matrix, the wrong side of the screening split, and in the kappa the grade
    farthest from its reference (``worst_case_grade``). Without ``failed`` every number is
    over the graded pairs (``n`` = ``n_graded``).
    """
    t, p, counts = _grade_pairs(y_true, y_pred)
    tf = _failed_pairs(y_true, y_pred, failed)
    out: Dict = dict(counts)
    out["n_graded"] = int(len(t))
    out["n"] = int(len(t) + len(tf))
    cm = confusion_matrix(t, p, labels=list(GRADES)) if len(t) else np.zeros((4, 4), dtype=int)
    out["confusion"] = {f"gt_{GRADE_LABELS[i]}": {f"pred_{GRADE_LABELS[j]}": int(cm[i, j]) for j in range(4)}
                        for i in range(4)}
    if failed is not None:
        out["n_failed_as_error"] = int(len(tf))
        for i, g in enumerate(GRADES):
            out["confusion"][f"gt_{GRADE_LABELS[i]}"]["pred_ungradable"] = int(np.sum(tf == g))
    ta, pa = np.concatenate([t, tf]), np.concatenate([p, np.zeros(len(tf), dtype=int)])
    if len(ta):
        out["accuracy"] = float(np.mean(ta == pa))
        present = sorted((set(ta.tolist()) | set(pa.tolist())) & set(GRADES))
        pr, rc, f1, _ = precision_recall_fscore_support(ta, pa, labels=present, average="macro", zero_division=0)
        out["macro_precision"], out["macro_recall"], out["macro_f1"] = float(pr), float(rc), float(f1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["kappa_quadratic"] = float(cohen_kappa_score(ta, np.concatenate([p, worst_case_grade(tf)]),
                                                             weights="quadratic", labels=list(GRADES)))
        pr_c, rc_c, f1_c, sup = precision_recall_fscore_support(ta, pa, labels=list(GRADES), zero_division=0)
    else:
        out.update(accuracy=float("nan"), macro_precision=float("nan"), macro_recall=float("nan"),
                   macro_f1=float("nan"), kappa_quadratic=float("nan"))
        pr_c = rc_c = f1_c = np.full(4, np.nan)
        sup = np.zeros(4, dtype=int)
    out["per_grade"] = {GRADE_LABELS[i]: {"precision": float(pr_c[i]), "recall": float(rc_c[i]),
                                          "f1": float(f1_c[i]), "support": int(sup[i])} for i in range(4)}
    tb = np.concatenate([t >= 2, tf >= 2])
    pb = np.concatenate([p >= 2, tf < 2])          # a failed hip lands on the wrong side of the split
    out["screening"] = screening_metrics(tp=int(np.sum(tb & pb)), fp=int(np.sum(~tb & pb)),
                                         tn=int(np.sum(~tb & ~pb)), fn=int(np.sum(tb & ~pb)))
    return out


# ------------------------------------------------------------------ predictions DataFrame
def column(df, name, default=np.nan) -> np.ndarray:
    if name in df.columns:
        col = df[name]
        if col.dtype == object or pd.api.types.is_string_dtype(col):  # booleans read back as strings
            col = col.replace({"True": 1, "False": 0, "true": 1, "false": 0})
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    return np.full(len(df), default, dtype=float)


def error_columns(df: pd.DataFrame, side: str) -> List[str]:
    """The ``err_px_{side}_{j}`` columns of ``df`` in index order."""
    return [c for c, _ in schema.error_columns(df.columns, side)]


def infer_layout(df: pd.DataFrame, layout=None):
    """The layout named by ``layout``, else by a ``layout`` column, else by the error/coordinate columns."""
    if layout is not None:
        return get_layout(layout)
    if "layout" in df.columns and df["layout"].notna().any():
        return get_layout(str(df["layout"].dropna().iloc[0]))
    n = len(error_columns(df, "left")) + len(error_columns(df, "right"))
    return layout_for_num_points(n or schema.point_count(df.columns))


def error_index(layout, side: str, j: int) -> int:
    """Absolute keypoint index of column ``err_px_{side}_{j}``.

    ``j`` is normally absolute (right hip of ihdi12: 6-11). A right-side ``j`` below the
    points per side is read as the position within the side's stored block instead
    (0 -> index 6), so both numberings work; for the left side they coincide.
    """
    lay = get_layout(layout)
    idx = lay.side_indices[side]
    if j in idx:
        return int(j)
    if 0 <= j < lay.points_per_side:
        return int(idx[j])
    raise ValueError(f"{schema.column('err_px', side=side, j=j)}: index {j} is not a {side} keypoint of "
                     f"layout {lay.name}")


def keypoint_name(layout, j: int) -> str:
    """``{side}_{anatomical name}`` of absolute keypoint index ``j``."""
    lay = get_layout(layout)
    for s in SIDES:
        if j in lay.side_indices[s]:
            return f"{s}_{lay.side_point_names(s)[lay.local(s, j)]}"
    raise ValueError(f"index {j} not in layout {lay.name}")


def make_row(stem: str, pred_kps, layout, gt_kps=None, pred_boxes=None, gt_boxes=None,
             det_conf=None, pixel_spacing_mm=None, crop_sides=None,
             gt_ai=None, gt_ihdi=None, image_width=None, min_conf=DEFAULT_MIN_CONF,
             ai_interval=None, refine_shift=None) -> schema.PredictionRow:
    """One row of the predictions DataFrame as a ``schema.PredictionRow`` (see the module
    docstring for the columns; ``prediction_row`` gives it as a dict).

    - ``pred_kps``: (N, 2) image px, NaN rows for a side without a prediction.
    - ``pred_boxes`` / ``gt_boxes``: ``{side: (x1, y1, x2, y2) or None}``; when
      ``pred_boxes`` is None, a side counts as detected when its points are finite.
    - ``det_conf``: ``{side: float}``; ``crop_sides``: ``{side: px}``.
    - ``gt_ai`` / ``gt_ihdi``: ``{side: value}`` overriding the values measured on
      ``gt_kps`` (e.g. a synthetic phantom's true angles).

    - ``image_width``: runs the plausibility gate (``qc_{side}``; a failed hip's grades
      become 0, its measured angles stay); None leaves ``qc_*`` empty (not gated).
      ``min_conf``: the gate's detector confidence threshold (GT boxes have none).
    - ``ai_interval``: ``{side: (lo, hi)}``, the AI's 95% interval (NaN when not given).
    - ``refine_shift``: ``{side: fraction}`` from a roof refiner, for the gate's ``stages_disagree``.

    AI and IHDI come from ``utils.hip_geometry`` on the full keypoint set; both need
    the two triradiate points, so a missing side leaves the other side unmeasured.
    CE, Toennis (layouts with a head centre) and h, d come from ``measurements``.
    """
    lay = get_layout(layout)
    pred = np.asarray(pred_kps, dtype=float).reshape(lay.num_points, 2)
    gt = None if gt_kps is None else np.asarray(gt_kps, dtype=float).reshape(lay.num_points, 2)
    pred_boxes, gt_boxes, det_conf, crop_sides = pred_boxes or {}, gt_boxes or {}, det_conf or {}, crop_sides or {}
    err = radial_errors(pred, gt) if gt is not None else np.full(lay.num_points, np.nan)
    fp, fg = _frames(pred, lay), _frames(gt, lay)
    measures = measurements(pred, gt, lay, pixel_spacing_mm)
    hips = {}
    for s in SIDES:
        pb, gb, c, cs = pred_boxes.get(s), gt_boxes.get(s), det_conf.get(s), crop_sides.get(s)
        e = err[lay.side_slice(s)]
        hips[s] = schema.HipCells(
            detected=(pb is not None) if pred_boxes else bool(np.all(np.isfinite(pred[lay.side_slice(s)]))),
            det_conf=float(c) if c is not None else np.nan,
            iou=np.nan if gb is None else (float(box_iou(pb, gb)) if pb is not None else 0.0),
            pred_box=_box_cells(pb), gt_box=_box_cells(gb),
            crop_side=float(cs) if cs is not None else np.nan,
            err_px={j: float(err[j]) for j in lay.side_indices[s]},
            mean_err_px=float(np.mean(e)) if np.all(np.isfinite(e)) else np.nan,
            pred_ai=float(fp[s]["ai_deg"]) if fp is not None else np.nan,
            pred_ihdi=int(fp[s]["grade"]) if fp is not None else np.nan,
            gt_ai=_given_or(gt_ai, s, float, fg, "ai_deg"), gt_ihdi=_given_or(gt_ihdi, s, int, fg, "grade"),
            measures=measures[s], ai_interval=tuple(float(v) for v in (ai_interval or {}).get(s) or (np.nan, np.nan)))
    fin = err[np.isfinite(err)]
    no_gt = np.full((lay.num_points, 2), np.nan)
    row = schema.PredictionRow(
        stem=str(stem), layout=lay.name, hips=hips,
        pixel_spacing_mm=float(pixel_spacing_mm) if pixel_spacing_mm else np.nan,
        tri_dist=float(np.linalg.norm(gt[lay.triradiate["right"]] - gt[lay.triradiate["left"]]))
        if gt is not None else np.nan,
        pred_points=[(float(x), float(y)) for x, y in pred],
        gt_points=[(float(x), float(y)) for x, y in (gt if gt is not None else no_gt)],
        mean_err_px=float(fin.mean()) if len(fin) else np.nan)
    return gate_row(row, pred, lay, image_width, det_conf, min_conf, refine_shift)


def prediction_row(stem: str, pred_kps, layout, **kwargs) -> Dict:
    """``make_row(...)`` as a dict ``{column: value}`` in column order (the cells that have a value)."""
    return make_row(stem, pred_kps, layout, **kwargs).as_dict()


def _box_cells(box) -> Tuple[float, ...]:
    vals = np.full(4, np.nan) if box is None else np.asarray(box, dtype=float).ravel()
    return tuple(float(v) for v in vals)


def _frames(kps, lay):
    """``hip_frames`` of a complete keypoint set, else None."""
    if kps is None or not np.all(np.isfinite(kps)):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return hip_frames(kps, lay)


def _given_or(given, side, cast, frames, key):
    """A reference value: ``given[side]`` when given, else measured on the frames (NaN without)."""
    if given and given.get(side) is not None:
        return cast(given[side])
    return cast(frames[side][key]) if frames is not None else np.nan


def _measures(kps, lay, spacing) -> Dict[str, Tuple[float, float]]:
    """{measure: (left, right)} of one keypoint set: CE and Toennis (head centre only), h, d in px and mm."""
    names = schema.row_measures(lay)
    if kps is None or not np.all(np.isfinite(kps)):
        return {m: (np.nan, np.nan) for m in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hd = hilgenreiner_distances(kps, lay)
        out = {"h": hd["h"], "d": hd["d"]}
        if has_head_centre(lay):
            out["ce"], out["tonnis"] = ce_angle(kps, lay), tonnis_grade(kps, lay)
    for m in ("h", "d"):
        out[f"{m}_mm"] = tuple(v * spacing if spacing else np.nan for v in out[m])
    return {m: out[m] for m in names}


def measurements(pred, gt, layout, pixel_spacing_mm=None) -> Dict[str, Dict[str, Tuple[float, float]]]:
    """The further measurements of a row, ``{side: {measure: (pred, gt)}}`` for measure ce,
    tonnis (layouts with a head centre), h, d (px) and h_mm, d_mm (NaN without a pixel
    spacing); the row adds the signed error pred - gt (none for the Toennis grade). NaN where a
    keypoint set is missing or incomplete."""
    lay = get_layout(layout)
    spacing = float(pixel_spacing_mm) if pixel_spacing_mm and np.isfinite(pixel_spacing_mm) else None
    mp, mg = _measures(pred, lay, spacing), _measures(gt, lay, spacing)
    out: Dict = {s: {} for s in SIDES}
    for m in mp:
        cast = (lambda v: int(v) if np.isfinite(v) else v) if m == "tonnis" else float
        for k, s in enumerate(SIDES):
            out[s][m] = (cast(float(mp[m][k])), cast(float(mg[m][k])))
    return out


def gate_row(row: schema.PredictionRow, pred, layout, image_width=None, det_conf=None,
             min_conf=DEFAULT_MIN_CONF, refine_shift=None) -> schema.PredictionRow:
    """Run the plausibility gate on a row: ``qc`` = the reasons joined by ";" ("" = passed, or
    not gated when ``image_width`` is None); a failed hip's ``pred_ihdi`` (and ``pred_tonnis``)
    become 0 (ungradable), its measured AI and CE stay."""
    lay = get_layout(layout)
    reasons = ([], [])
    if image_width is not None:
        conf = [(det_conf or {}).get(s) for s in SIDES]
        detected = tuple(bool(row.hips[s].detected) for s in SIDES)
        reasons = plausibility_gate(pred, image_width, lay, detected=detected, min_conf=min_conf,
                                    confidences=None if all(c is None for c in conf) else conf,
                                    refine_shift=None if not refine_shift else
                                    tuple(refine_shift.get(s) for s in SIDES))
    for s, r in zip(SIDES, reasons):
        hip = row.hips[s]
        hip.qc = format_reasons(r)
        if r:
            hip.pred_ihdi = 0
            if "tonnis" in hip.measures:
                hip.measures["tonnis"] = (0, hip.measures["tonnis"][1])
    return row


def side_values(df, name, mask_undetected: bool = False, **parts) -> Dict[str, np.ndarray]:
    """``{left, right, pooled}`` arrays of column ``schema.column(name, side=..., **parts)``, e.g.
    ``side_values(df, "ai", kind="pred")``; with ``mask_undetected`` the sides whose
    ``detected_{side}`` is false become NaN (missing, whatever was written there)."""
    vals = {s: column(df, schema.column(name, side=s, **parts)) for s in SIDES}
    if mask_undetected:
        for s in SIDES:
            if schema.column("detected", side=s) in df.columns:
                vals[s] = np.where(column(df, schema.column("detected", side=s)) == 0, np.nan, vals[s])
    vals[POOLED] = np.concatenate([vals[s] for s in SIDES])
    return vals


def roof_points(layout, side: str) -> List[int]:
    """Absolute indices of ``side``'s acetabular roof points: lateral edge, mid roof (where the
    layout has one), triradiate point."""
    lay = get_layout(layout)
    mid = [j for j, n in zip(lay.side_indices[side], lay.side_point_names(side)) if n == "mid_roof"]
    return [lay.lateral_edge[side], *mid, lay.triradiate[side]]


def roof_perpendicular_errors(df: pd.DataFrame, layout=None) -> np.ndarray:
    """|component of (pred - gt) perpendicular to the GT roof line| (triradiate -> lateral edge)
    of every roof point (``roof_points``) of every hip with both, in image px (flat array).
    This is the error that moves the AI; an error along the roof line does not."""
    lay = infer_layout(df, layout)
    out = []
    for s in SIDES:
        e, t = lay.lateral_edge[s], lay.triradiate[s]
        gx, gy = (column(df, schema.column("point", kind="gt", axis=a, j=e))
                  - column(df, schema.column("point", kind="gt", axis=a, j=t)) for a in "xy")
        norm = np.hypot(gx, gy)
        with np.errstate(invalid="ignore", divide="ignore"):
            nx, ny = -gy / norm, gx / norm                      # unit normal of the GT roof line
        for j in roof_points(lay, s):
            dx, dy = (column(df, schema.column("point", kind="pred", axis=a, j=j))
                      - column(df, schema.column("point", kind="gt", axis=a, j=j)) for a in "xy")
            out.append(np.abs(dx * nx + dy * ny))
    v = np.concatenate(out) if out else np.empty(0)
    return v[np.isfinite(v)]


def no_detector(df: pd.DataFrame) -> bool:
    """True when the frame has predicted-box columns, sides marked detected and not one box: a run
    without a detection stage (the full-image model), whose ``detected_*`` only says its points are
    finite, so it has no detection recall to report."""
    cols = [c for s in SIDES for c in schema.box_columns("pred_box", s) if c in df.columns]
    det = [column(df, schema.column("detected", side=s)) for s in SIDES if schema.column("detected", side=s) in df]
    if not cols or not det or not np.any(np.concatenate(det) > 0):
        return False
    return not np.isfinite(np.stack([column(df, c) for c in cols])).any()


def detection_metrics(df: pd.DataFrame) -> Dict:
    """Per side and pooled: fraction of sides detected, and recall at IoU >= 0.5 where GT boxes exist."""
    out = {}
    det = side_values(df, "detected")
    iou = side_values(df, "iou") if any(schema.column("iou", side=s) in df.columns for s in SIDES) else None
    for key in (*SIDES, POOLED):
        d = det[key]
        d = d[np.isfinite(d)]
        r = {"n": int(len(d)), "n_detected": int(np.sum(d > 0)),
             "recall": float(np.mean(d > 0)) if len(d) else float("nan")}
        if iou is not None:
            v = iou[key][np.isfinite(iou[key])]
            r["n_gt_boxes"] = int(len(v))
            r["iou_mean"] = _nan_if_empty(np.mean, v)
            r[f"recall_iou{IOU_THRESHOLD:g}"] = float(np.mean(v >= IOU_THRESHOLD)) if len(v) else float("nan")
        out[key] = r
    return out


def keypoint_metrics(df: pd.DataFrame, layout=None, sdr_radii: Sequence[float] = SDR_RADII) -> Dict:
    """MRE/SD/median in px and mm, NME (crop diagonal, inter-triradiate), SDR; per side, pooled, per keypoint."""
    lay = infer_layout(df, layout)
    spacing = column(df, "pixel_spacing_mm")
    spacing = np.where(spacing > 0, spacing, np.nan)
    tri = column(df, "tri_dist")
    E = {s: np.stack([column(df, c) for c in error_columns(df, s)], axis=1) if error_columns(df, s)
         else np.empty((len(df), 0)) for s in SIDES}
    # sides marked undetected are excluded (their errors should be NaN anyway)
    for s in SIDES:
        if schema.column("detected", side=s) in df.columns:
            undetected = column(df, schema.column("detected", side=s)) == 0
            E[s] = np.where(undetected[:, None], np.nan, E[s])
    mm = {s: E[s] * spacing[:, None] for s in SIDES}
    nme_crop = {s: normalized_errors(E[s], crop_diagonal(column(df, schema.column("crop_side", side=s))))
                for s in SIDES}
    nme_tri = {s: normalized_errors(E[s], tri) for s in SIDES}

    def by_side(d):
        r = {s: d[s] for s in SIDES}
        r[POOLED] = np.concatenate([d[s].ravel() for s in SIDES])
        return r

    out: Dict = {"layout": lay.name, "n_images": int(len(df)),
                 "n_images_with_spacing": int(np.sum(np.isfinite(spacing)))}
    for s in SIDES:
        n_side = E[s].shape[1]
        out[f"n_missing_{s}"] = int(np.sum(~np.all(np.isfinite(E[s]), axis=1))) if n_side else int(len(df))
    for name, d in (("px", E), ("mm", mm)):
        bs = by_side(d)
        block = {k: error_summary(v) for k, v in bs.items()}
        per_kp = {}
        for s in SIDES:
            for i, (_, raw_j) in enumerate(schema.error_columns(df.columns, s)):
                j = error_index(lay, s, raw_j)
                per_kp[keypoint_name(lay, j)] = error_summary(d[s][:, i])
        block["per_keypoint"] = per_kp
        # the same anatomical point on both sides, pooled
        per_point = {}
        for k, pname in enumerate(lay.point_names):
            vals = []
            for s in SIDES:
                for i, (_, raw_j) in enumerate(schema.error_columns(df.columns, s)):
                    j = error_index(lay, s, raw_j)
                    if lay.side_point_names(s)[lay.local(s, j)] == pname:
                        vals.append(d[s][:, i])
            per_point[pname] = error_summary(np.concatenate(vals) if vals else [])
        block["per_point"] = per_point
        out[name] = block
    out["nme_crop"] = {k: error_summary(v) for k, v in by_side(nme_crop).items()}
    out["nme_tri"] = {k: error_summary(v) for k, v in by_side(nme_tri).items()}
    out["sdr_px"] = {k: success_detection_rate(v, sdr_radii) for k, v in by_side(E).items()}
    if out["n_images_with_spacing"]:
        out["sdr_mm"] = {k: success_detection_rate(v, sdr_radii) for k, v in by_side(mm).items()}
    return out


def failed_hips(df: pd.DataFrame) -> Optional[Dict[str, np.ndarray]]:
    """``{left, right, pooled}`` booleans: the hip failed the plausibility gate (a non-empty
    ``qc_{side}``); None when the frame has no ``qc_*`` columns (an older predictions file)."""
    cols = [schema.column("qc", side=s) for s in SIDES]
    if not all(c in df.columns for c in cols):
        return None
    out = {s: df[c].fillna("").astype(str).str.strip().str.len().to_numpy() > 0 for s, c in zip(SIDES, cols)}
    out[POOLED] = np.concatenate([out[s] for s in SIDES])
    return out


def _gradable_only(vals: Dict[str, np.ndarray], failed) -> Dict[str, np.ndarray]:
    return {k: np.where(failed[k], np.nan, v) for k, v in vals.items()}


def gate_metrics(df: pd.DataFrame) -> Dict:
    """Per side and pooled: hips, gradable hips (every hip counts, undetected ones too: they
    fail with ``no_detection``), ``gradable_rate`` and the count of each gate reason."""
    failed = failed_hips(df)
    cells = {s: df[schema.column("qc", side=s)].fillna("").astype(str).tolist() for s in SIDES}
    cells[POOLED] = cells["left"] + cells["right"]
    out = {}
    for k in (*SIDES, POOLED):
        n = len(failed[k])
        reasons = {code: int(sum(code in c.split(";") for c in cells[k])) for code in GATE_REASONS}
        out[k] = {"n_hips": n, "n_gradable": int(n - failed[k].sum()),
                  "gradable_rate": _div(n - failed[k].sum(), n), "reasons": reasons}
    return out


def ai_metrics(df: pd.DataFrame, gradable_only: bool = False, prefix: str = "ai") -> Dict:
    """Agreement of ``pred_{prefix}`` with ``gt_{prefix}`` over the detected hips (the gradable
    ones only with ``gradable_only``), plus ``mae_ci_lo``/``mae_ci_hi``: the 95% percentile
    bootstrap CI of the MAE over hips (``bootstrap_ci``). ``prefix`` names a schema column
    with a kind: ai, ce, h, d, h_mm, d_mm."""
    pred, gt = side_values(df, prefix, True, kind="pred"), side_values(df, prefix, kind="gt")
    if gradable_only:
        pred = _gradable_only(pred, failed_hips(df))
    out = {}
    for k in (*SIDES, POOLED):
        out[k] = agreement(pred[k], gt[k])
        out[k]["mae_ci_lo"], out[k]["mae_ci_hi"] = bootstrap_ci(np.abs(np.asarray(pred[k]) - np.asarray(gt[k])))
    return out


def ihdi_side_metrics(df: pd.DataFrame, gradable_only: bool = False, prefix: str = "ihdi") -> Dict:
    """Grade agreement over the detected hips, a hip failed by the gate counting as an error
    (``ihdi_metrics(failed=...)``), or over the gradable hips only with ``gradable_only``
    (``prefix``: ihdi or tonnis)."""
    pred, gt = side_values(df, prefix, True, kind="pred"), side_values(df, prefix, kind="gt")
    failed = failed_hips(df)
    if gradable_only:
        return {k: ihdi_metrics(gt[k], _gradable_only(pred, failed)[k]) for k in (*SIDES, POOLED)}
    return {k: ihdi_metrics(gt[k], pred[k], failed=None if failed is None else failed[k]) for k in (*SIDES, POOLED)}


def interval_informative(mean_width, max_width: float = AI_INTERVAL_MAX_WIDTH_DEG) -> bool:
    """True when a mean interval width (degrees) is at most ``max_width``: an interval wider
    than that spans most of the AI's plausible range and says nothing about the hip."""
    return mean_width is not None and math.isfinite(float(mean_width)) and float(mean_width) <= max_width


def ai_interval_metrics(df: pd.DataFrame, max_width: float = AI_INTERVAL_MAX_WIDTH_DEG) -> Dict:
    """Calibration of the AI intervals: the fraction of reference AIs inside
    [``pred_ai_{side}_lo``, ``pred_ai_{side}_hi``] (``coverage``; a 95% interval should give
    0.90-0.98), the mean width in degrees and the number of detected hips with an interval.
    ``informative`` is False when the mean width exceeds ``max_width``: such a coverage is no
    success, the interval only covers because it spans nearly everything."""
    lo = {s: column(df, schema.column("ai_lo", side=s)) for s in SIDES}
    hi = {s: column(df, schema.column("ai_hi", side=s)) for s in SIDES}
    det = {s: column(df, schema.column("detected", side=s), default=1) != 0 for s in SIDES}
    gt = {s: column(df, schema.column("ai", kind="gt", side=s)) for s in SIDES}
    for d in (lo, hi, det, gt):
        d[POOLED] = np.concatenate([d[s] for s in SIDES])
    out = {}
    for k in (*SIDES, POOLED):
        m = det[k] & _finite(lo[k], hi[k], gt[k])
        inside = (lo[k][m] <= gt[k][m]) & (gt[k][m] <= hi[k][m])
        width = _nan_if_empty(np.mean, hi[k][m] - lo[k][m])
        out[k] = {"coverage": _nan_if_empty(np.mean, inside), "mean_width": width, "n": int(m.sum()),
                  "informative": interval_informative(width, max_width), "max_mean_width": float(max_width)}
    return out


def _any_side(cols, name, kind) -> bool:
    return any(schema.column(name, kind=kind, side=s) in cols for s in SIDES)


def _has(cols, prefix) -> bool:
    return all(schema.column(prefix, kind=kind, side=s) in cols for kind in ("pred", "gt") for s in SIDES)


def measurement_metrics(df: pd.DataFrame) -> Dict:
    """CE (agreement), Toennis (grade agreement, failed hips as errors), h and d MAE etc. in px
    and mm, and the AI interval calibration: the groups whose columns the frame has."""
    cols, out = set(df.columns), {}
    if _has(cols, "ce"):
        out["ce"] = ai_metrics(df, prefix="ce")
    if _has(cols, "tonnis"):
        out["tonnis"] = ihdi_side_metrics(df, prefix="tonnis")
    for m, key in (("h", "h_px"), ("d", "d_px"), ("h_mm", "h_mm"), ("d_mm", "d_mm")):
        if _has(cols, m):
            out[key] = ai_metrics(df, prefix=m)
    if all(schema.column(c, side=s) in cols for c in ("ai_lo", "ai_hi") for s in SIDES):
        out["ai_interval"] = ai_interval_metrics(df)
    return out


def evaluate_predictions(df: pd.DataFrame, layout=None, sdr_radii: Sequence[float] = SDR_RADII) -> Dict:
    """All metrics of a predictions DataFrame as a nested, JSON-serialisable dict.

    Top-level keys (present when their columns are): ``n_images``, ``detection``,
    ``keypoints``, ``ai``, ``ihdi`` (over every detected hip; a hip failed by the gate keeps
    its measured AI, and its ungradable grade counts as an error), ``gate`` (gradable rate,
    reasons), ``ai_gradable`` and ``ihdi_gradable`` (the gradable hips only), ``ce``,
    ``tonnis`` (mtddh8), ``h_px``, ``d_px``, ``h_mm``, ``d_mm``, ``ai_interval``
    (coverage, mean width). Inside, ``left``/``right``/``pooled`` blocks.
    NaN becomes None.
    """
    cols = set(df.columns)
    out: Dict = {"n_images": int(len(df))}
    if any(schema.column("detected", side=s) in cols for s in SIDES) and not no_detector(df):
        out["detection"] = detection_metrics(df)
    if any(schema.error_columns(cols, s) for s in SIDES):
        out["keypoints"] = keypoint_metrics(df, layout, sdr_radii)
    gated = failed_hips(df) is not None
    if gated:
        out["gate"] = gate_metrics(df)
    if _any_side(cols, "ai", "pred") and _any_side(cols, "ai", "gt"):
        out["ai"] = ai_metrics(df)
        if gated:
            out["ai_gradable"] = ai_metrics(df, gradable_only=True)
    if _any_side(cols, "ihdi", "pred") and _any_side(cols, "ihdi", "gt"):
        out["ihdi"] = ihdi_side_metrics(df)
        if gated:
            out["ihdi_gradable"] = ihdi_side_metrics(df, gradable_only=True)
    out.update(measurement_metrics(df))
    return to_jsonable(out)


def flatten_metrics(metrics: Mapping, prefix: str = "", sep: str = "/") -> List[Tuple[str, object]]:
    """Nested metrics dict -> ``[(name, value)]`` with names like ``ai/pooled/mae``.

    Lists are indexed (``name/0``); values stay as they are (None for NaN).
    """
    rows: List[Tuple[str, object]] = []

    def walk(obj, name):
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(v, f"{name}{sep}{k}" if name else str(k))
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{name}{sep}{i}")
        else:
            rows.append((name, to_jsonable(obj)))

    walk(metrics, prefix)
    return rows


def read_predictions(path) -> pd.DataFrame:
    """A predictions CSV with ``stem`` kept as text (so "0012" stays "0012")."""
    return pd.read_csv(path, dtype={"stem": str, "layout": str})


def write_metrics_csv(path, metrics: Mapping) -> None:
    """``metric,value`` CSV of ``flatten_metrics(metrics)`` (empty value for None)."""
    pd.DataFrame(flatten_metrics(metrics), columns=["metric", "value"]).to_csv(path, index=False)


def read_metrics_csv(path) -> Dict[str, Optional[float]]:
    """``metrics.csv`` -> ``{name: float or None}`` (non-numeric values kept as strings)."""
    df = pd.read_csv(path, dtype={"metric": str}, keep_default_na=False)
    out: Dict[str, object] = {}
    for name, v in zip(df["metric"], df["value"]):
        if v == "" or v is None:
            out[name] = None
            continue
        try:
            out[name] = float(v)
        except (TypeError, ValueError):
            out[name] = v
    return out


evaluate = evaluate_predictions  # the older public name
