"""Agreement statistics between two annotation sources (readers, a reader twice, a reader and a model).

numpy, scipy.stats and scikit-learn only; no torch. The tests are scipy's
(``shapiro``, ``ttest_rel``, ``wilcoxon``, ``bootstrap``, the F distribution) and
scikit-learn's (``cohen_kappa_score``); the ICC point estimates, Bland-Altman and the
IHDI confusion/kappa are ``utils.evaluation.metrics``'. docs/study_tools.md describes
every number.

Conventions:
- A difference is always ``b - a`` (source B minus source A).
- SDs are sample SDs (``ddof=1``).
- Non-finite pairs are dropped and counted (``n_missing``).
- NaN in a result means "cannot be computed" (too few pairs, constant data);
  ``to_jsonable`` turns it into ``None``.

Functions:
- ``normality_test(d)``: Shapiro-Wilk on the differences.
- ``paired_test(a, b)``: Shapiro-Wilk on ``b - a``, then a paired t-test when its p is
  above ``alpha`` (0.05), else a Wilcoxon signed-rank test; records the choice.
- ``icc_with_ci(ratings, kind)``: ICC(2,1) or ICC(3,1) with the F-based confidence
  interval of McGraw & Wong (1996), cases 2A and 3A.
- ``kappa_with_ci(a, b)``: quadratic-weighted Cohen's kappa with a bootstrap CI.
- ``keypoint_distances(kps_a, kps_b, layout, spacing_mm)``: radial distances per
  keypoint and per image, in px and mm.
- ``ai_agreement(ai_a, ai_b)``, ``ihdi_agreement(g_a, g_b)``: the AI and IHDI blocks of
  ``agreement.json``.
- ``paired_ai_error_test(errors_a, errors_b)``: do two experiments differ in their
  per-hip AI errors on the same hips?
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from datasets.layouts import SIDES, get_layout
from utils.evaluation import metrics as M
from utils.evaluation import schema

ALPHA = 0.05
CI_LEVEL = 0.95
GRADES = M.GRADES
NAN = float("nan")


def _pairs(a, b) -> Tuple[np.ndarray, np.ndarray, int]:
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.size} and {b.size}")
    m = np.isfinite(a) & np.isfinite(b)
    return a[m], b[m], int((~m).sum())


# ------------------------------------------------------------------ normality and paired tests
def normality_test(diffs) -> Dict:
    """Shapiro-Wilk (``scipy.stats.shapiro``) on the finite values: ``{name, statistic, p, n}``.

    NaN statistic and p with fewer than 3 values or when all values are equal (the test
    is undefined there).
    """
    d = np.asarray(diffs, dtype=float).ravel()
    d = d[np.isfinite(d)]
    out = {"name": "shapiro", "statistic": NAN, "p": NAN, "n": int(len(d))}
    if len(d) >= 3 and np.ptp(d) > 0:
        res = stats.shapiro(d)
        out["statistic"], out["p"] = float(res.statistic), float(res.pvalue)
    return out


def paired_test(a, b, alpha: float = ALPHA) -> Dict:
    """Paired test of ``b`` against ``a``, chosen by a normality test on ``d = b - a``.

    Shapiro-Wilk on ``d``; when its p > ``alpha``, a paired t-test
    (``scipy.stats.ttest_rel(b, a)``), else a Wilcoxon signed-rank test
    (``scipy.stats.wilcoxon(b, a)``, zero differences dropped, scipy's default).

    Returns ``{"normality": {...}, "test": {name, statistic, p, n, alpha, rule}}``; the
    test's ``name`` is ``"paired_t"`` or ``"wilcoxon"``, and None (with NaN statistic and
    p, and a ``note``) when the data admit no test: fewer than 3 pairs, or every
    difference equal, where Shapiro-Wilk is undefined.
    """
    a, b, n_missing = _pairs(a, b)
    d = b - a
    norm = normality_test(d)
    test = {"name": None, "statistic": NAN, "p": NAN, "n": int(len(d)), "n_missing": n_missing,
            "alpha": float(alpha),
            "rule": f"Shapiro-Wilk p > {alpha:g}: paired t-test, else Wilcoxon signed-rank"}
    if not np.isfinite(norm["p"]):
        test["note"] = ("fewer than 3 pairs" if len(d) < 3 else "all differences are equal") + \
            ": no normality test, no paired test"
    elif norm["p"] > alpha:
        res = stats.ttest_rel(b, a)
        test.update(name="paired_t", statistic=float(res.statistic), p=float(res.pvalue))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)      # scipy's note on ties / zeros
            res = stats.wilcoxon(b, a)
        test.update(name="wilcoxon", statistic=float(res.statistic), p=float(res.pvalue))
    return {"normality": norm, "test": test}


# ------------------------------------------------------------------ ICC with confidence intervals
def _mean_squares(x: np.ndarray) -> Dict[str, float]:
    """Two-way ANOVA mean squares of an (n targets, k raters) matrix (as ``metrics.icc`` uses)."""
    n, k = x.shape
    grand = x.mean()
    ss_total = np.sum((x - grand) ** 2)
    ss_rows = k * np.sum((x.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((x.mean(axis=0) - grand) ** 2)
    ss_err = ss_total - ss_rows - ss_cols
    return {"bms": ss_rows / (n - 1), "jms": ss_cols / (k - 1), "ems": ss_err / ((n - 1) * (k - 1))}


def icc_with_ci(ratings, kind: str = "2,1", level: float = CI_LEVEL) -> Dict:
    """ICC of an (n targets, k raters) matrix with its confidence interval.

    - The point estimate is ``utils.evaluation.metrics.icc`` (Shrout & Fleiss 1979).
    - The interval is the F-based one of McGraw & Wong (1996), from
      ``scipy.stats.f`` quantiles: case 3A (consistency, ICC(3,1)) and case 2A (absolute
      agreement, ICC(2,1), with Satterthwaite's degrees of freedom). These are the
      intervals SPSS, R's ``psych::ICC`` and pingouin report.

    Rows with a non-finite rating are dropped. Returns ``{icc, ci_low, ci_high, n, k,
    level}``; NaN where undefined (fewer than 3 targets, zero residual variance).
    """
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"ratings must be (n targets, k >= 2 raters), got {x.shape}")
    if kind not in ("2,1", "3,1"):
        raise ValueError(f"kind must be '2,1' or '3,1', got {kind!r}")
    x = x[np.all(np.isfinite(x), axis=1)]
    n, k = x.shape
    out = {"icc": M.icc(x, kind) if n >= 2 else NAN, "ci_low": NAN, "ci_high": NAN,
           "n": int(n), "k": int(k), "level": float(level)}
    if n < 3:
        return out
    ms = _mean_squares(x)
    bms, jms, ems = ms["bms"], ms["jms"], ms["ems"]
    if not ems > 0:
        return out
    q = 1 - (1 - level) / 2
    df1, df2 = n - 1, (n - 1) * (k - 1)
    if kind == "3,1":
        f_obs = bms / ems
        fl = f_obs / stats.f.ppf(q, df1, df2)
        fu = f_obs * stats.f.ppf(q, df2, df1)
        lo, hi = (fl - 1) / (fl + k - 1), (fu - 1) / (fu + k - 1)
    else:
        r = out["icc"]
        if not np.isfinite(r) or r >= 1:
            return out
        a = k * r / (n * (1 - r))
        b = 1 + k * r * (n - 1) / (n * (1 - r))
        v = (a * jms + b * ems) ** 2 / ((a * jms) ** 2 / (k - 1) + (b * ems) ** 2 / df2)
        f_star = stats.f.ppf(q, n - 1, v)
        f_2star = stats.f.ppf(q, v, n - 1)
        c = k * jms + (k * n - k - n) * ems
        lo = n * (bms - f_star * ems) / (f_star * c + n * bms)
        hi = n * (f_2star * bms - ems) / (c + n * f_2star * bms)
    out["ci_low"], out["ci_high"] = float(lo), float(hi)
    return out


# ------------------------------------------------------------------ kappa with a bootstrap CI
def _kappa(a, b, weights):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cohen_kappa_score(np.asarray(a, dtype=int), np.asarray(b, dtype=int), weights=weights,
                                 labels=list(GRADES))


def kappa_with_ci(a, b, weights: Optional[str] = "quadratic", level: float = CI_LEVEL,
                  n_resamples: int = 2000, seed: int = 0) -> Dict:
    """Cohen's kappa (``sklearn.metrics.cohen_kappa_score``, labels 1-4) with a bootstrap CI.

    The interval is ``scipy.stats.bootstrap`` (paired resampling of the hips, percentile
    method, ``n_resamples``, seeded so that a rerun gives the same numbers). Only pairs
    where both grades are 1-4 are used. ``{kappa, ci_low, ci_high, n, level, method}``.
    """
    t, p = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    use = np.isin(t, GRADES) & np.isin(p, GRADES)
    t, p = t[use].astype(int), p[use].astype(int)
    out = {"kappa": NAN, "ci_low": NAN, "ci_high": NAN, "n": int(len(t)), "level": float(level),
           "method": f"bootstrap percentile, {n_resamples} resamples"}
    if len(t) < 2:
        return out
    out["kappa"] = float(_kappa(t, p, weights))
    if not np.isfinite(out["kappa"]) or len(t) < 3:
        return out
    if np.all(t == p):                  # every resample agrees perfectly too: the interval is a point
        out["ci_low"] = out["ci_high"] = out["kappa"]
        out["method"] = "none needed: all pairs agree, so every resample does"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap((t, p), lambda x, y: _kappa(x, y, weights), paired=True, vectorized=False,
                              n_resamples=n_resamples, confidence_level=level, method="percentile",
                              random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    out["ci_low"], out["ci_high"] = lo, hi
    return out


# ------------------------------------------------------------------ keypoints
def keypoint_distances(kps_a, kps_b, layout, spacing_mm=None) -> Dict:
    """Radial distances between two sources' keypoints for the same images.

    ``kps_a``, ``kps_b``: (B, N, 2) image px (NaN for a missing point); ``spacing_mm``:
    (B,) mm per pixel, NaN or None where unknown. Returns

    - ``per_image_px`` (B,): mean over the image's finite points; ``per_image_mm`` (B,);
    - ``mean_px``/``sd_px``/``median_px``/``max_px``: over all finite point distances;
      ``mean_mm`` etc. over the images with a spacing (``n_images_mm`` of them);
    - ``per_keypoint``: ``{"left_lateral_edge": {mean_px, sd_px, median_px, n, mean_mm}, ...}``
      and ``per_point`` (the same anatomical point of both sides pooled).
    """
    lay = get_layout(layout)
    a = np.asarray(kps_a, dtype=float).reshape(-1, lay.num_points, 2)
    b = np.asarray(kps_b, dtype=float).reshape(-1, lay.num_points, 2)
    d = M.radial_errors(b, a)                                   # (B, N)
    nb = d.shape[0]
    sp = np.full(nb, np.nan) if spacing_mm is None else np.asarray(spacing_mm, dtype=float).reshape(nb)
    sp = np.where(sp > 0, sp, np.nan)
    dmm = d * sp[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_px = np.nanmean(d, axis=1) if nb else np.zeros(0)
        per_mm = np.nanmean(dmm, axis=1) if nb else np.zeros(0)
    out: Dict = {"n_images": int(nb), "n_images_mm": int(np.sum(np.isfinite(sp))),
                 "n_points": int(np.sum(np.isfinite(d))), "n_points_missing": int(np.sum(~np.isfinite(d))),
                 "per_image_px": per_px, "per_image_mm": per_mm}
    for unit, vals in (("px", d), ("mm", dmm)):
        s = M.error_summary(vals)
        for key in ("mean", "sd", "median", "max"):
            out[f"{key}_{unit}"] = s[key]
    per_kp = {}
    for j in range(lay.num_points):
        s, smm = M.error_summary(d[:, j]), M.error_summary(dmm[:, j])
        per_kp[M.keypoint_name(lay, j)] = {"mean_px": s["mean"], "sd_px": s["sd"], "median_px": s["median"],
                                           "n": s["n"], "mean_mm": smm["mean"]}
    out["per_keypoint"] = per_kp
    per_point = {}
    for k, name in enumerate(lay.point_names):
        cols = [j for s in SIDES for j in lay.side_indices[s] if lay.side_point_names(s)[lay.local(s, j)] == name]
        s, smm = M.error_summary(d[:, cols]), M.error_summary(dmm[:, cols])
        per_point[name] = {"mean_px": s["mean"], "sd_px": s["sd"], "n": s["n"], "mean_mm": smm["mean"]}
    out["per_point"] = per_point
    return out


# ------------------------------------------------------------------ AI and IHDI blocks
def ai_agreement(ai_a, ai_b, alpha: float = ALPHA, level: float = CI_LEVEL) -> Dict:
    """AI agreement of two sources on the same hips (degrees; difference = b - a).

    ``mae``, ``mean_diff`` (signed), ``sd_diff``; ``icc21``/``icc31`` with
    ``icc21_ci``/``icc31_ci`` (``icc_with_ci``); ``bland_altman`` (``metrics.bland_altman``:
    bias, sd, loa_low, loa_high); ``normality`` and ``test`` (``paired_test``); Pearson r.
    """
    a, b, n_missing = _pairs(ai_a, ai_b)
    d = b - a
    out: Dict = {"n": int(len(d)), "n_missing": n_missing,
                 "mae": float(np.mean(np.abs(d))) if len(d) else NAN,
                 "mean_diff": float(np.mean(d)) if len(d) else NAN,
                 "sd_diff": float(np.std(d, ddof=1)) if len(d) > 1 else NAN,
                 "rmse": float(np.sqrt(np.mean(d ** 2))) if len(d) else NAN}
    ratings = np.stack([a, b], axis=1) if len(d) else np.empty((0, 2))
    for kind, key in (("2,1", "icc21"), ("3,1", "icc31")):
        r = icc_with_ci(ratings, kind, level)
        out[key] = r["icc"]
        out[f"{key}_ci"] = [r["ci_low"], r["ci_high"]]
    out["bland_altman"] = M.bland_altman(b, a)
    if len(d) >= 3 and np.std(a) > 0 and np.std(b) > 0:
        r, p = stats.pearsonr(a, b)
        out["pearson_r"], out["pearson_p"] = float(r), float(p)
    else:
        out["pearson_r"], out["pearson_p"] = NAN, NAN
    out.update(paired_test(a, b, alpha))
    return out


def ihdi_agreement(grades_a, grades_b, level: float = CI_LEVEL, n_resamples: int = 2000, seed: int = 0) -> Dict:
    """IHDI agreement: ``metrics.ihdi_metrics(a, b)`` (A as the rows of the confusion matrix)
    plus ``kappa_quadratic_ci`` (``kappa_with_ci``)."""
    out = M.ihdi_metrics(grades_a, grades_b)
    k = kappa_with_ci(grades_a, grades_b, "quadratic", level, n_resamples, seed)
    out["kappa_quadratic_ci"] = [k["ci_low"], k["ci_high"]]
    out["kappa_ci_method"] = k["method"]
    return out


# ------------------------------------------------------------------ two experiments on the same hips
def hip_ai_errors(df: pd.DataFrame) -> Dict[Tuple[str, str], float]:
    """``{(stem, side): |pred_ai - gt_ai|}`` of a predictions DataFrame (``utils.evaluation.metrics``
    schema); a side whose ``detected_{side}`` is false, or without both angles, is NaN."""
    out = {}
    for s in SIDES:
        pc, gc, dc = (schema.column("ai", kind="pred", side=s), schema.column("ai", kind="gt", side=s),
                      schema.column("detected", side=s))
        if pc not in df.columns or gc not in df.columns:
            continue
        p = pd.to_numeric(df[pc], errors="coerce").to_numpy(dtype=float)
        g = pd.to_numeric(df[gc], errors="coerce").to_numpy(dtype=float)
        e = np.abs(p - g)
        if dc in df.columns:
            det = df[dc].astype(str).str.lower().isin(("true", "1", "1.0"))
            e = np.where(det.to_numpy(), e, np.nan)
        for stem, v in zip(df["stem"].astype(str), e):
            out[(stem, s)] = float(v)
    return out


def _as_error_map(errors) -> Dict[Tuple[str, str], float]:
    if isinstance(errors, pd.DataFrame):
        return hip_ai_errors(errors)
    if isinstance(errors, Mapping):
        out = {}
        for key, v in errors.items():
            if not (isinstance(key, tuple) and len(key) == 2 and key[1] in SIDES):
                raise ValueError(f"error keys must be (stem, side) with side in {SIDES}, got {key!r}")
            out[(str(key[0]), key[1])] = float(v) if v is not None else NAN
        return out
    raise TypeError("errors must be a predictions DataFrame or a {(stem, side): error} mapping")


def paired_ai_error_test(errors_a, errors_b, alpha: float = ALPHA) -> Dict:
    """Paired test of two experiments' per-hip AI errors on the hips both cover.

    ``errors_a``/``errors_b``: a predictions DataFrame each (the errors are
    ``hip_ai_errors``), or ``{(stem, side): error}`` mappings. Hips are matched by stem and
    side; absolute errors are compared (a signed error is made absolute), so ``d = |e_b| -
    |e_a|`` and a negative ``mean_diff`` means B is closer to the reference. The test is
    ``paired_test`` (Shapiro-Wilk, then paired t or Wilcoxon).

    Returns ``n_pairs``, ``n_only_a``, ``n_only_b`` (hips in one experiment only),
    ``n_missing`` (matched hips without a finite error in one of them: not detected),
    ``mae_a``, ``mae_b``, ``mean_diff``, ``normality``, ``test`` and ``better``
    (``"a"``, ``"b"`` or None when p >= ``alpha`` or no test was possible).
    """
    ea, eb = _as_error_map(errors_a), _as_error_map(errors_b)
    common = sorted(set(ea) & set(eb))
    va = np.abs(np.array([ea[k] for k in common], dtype=float))
    vb = np.abs(np.array([eb[k] for k in common], dtype=float))
    fin = np.isfinite(va) & np.isfinite(vb)
    res = paired_test(va[fin], vb[fin], alpha)
    out = {"matched_on": "stem+side", "n_pairs": int(fin.sum()), "n_only_a": len(set(ea) - set(eb)),
           "n_only_b": len(set(eb) - set(ea)), "n_missing": int((~fin).sum()),
           "mae_a": float(va[fin].mean()) if fin.any() else NAN,
           "mae_b": float(vb[fin].mean()) if fin.any() else NAN,
           "mean_diff": float((vb[fin] - va[fin]).mean()) if fin.any() else NAN}
    out.update(res)
    p = res["test"]["p"]
    out["better"] = None
    if np.isfinite(p) and p < alpha:
        out["better"] = "b" if out["mean_diff"] < 0 else "a"
    return out


def fmt_ci(value, ci, nd: int = 3) -> str:
    """``"0.912 [0.871, 0.940]"``; ``"n/a"`` parts for NaN/None."""
    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"
    lo, hi = (ci or (None, None))
    return f"{f(value)} [{f(lo)}, {f(hi)}]"
