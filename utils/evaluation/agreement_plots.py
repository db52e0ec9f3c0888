"""Plots of the study tools (matplotlib, Agg, PNG): reader agreement and dataset statistics.

Agreement of two sources A and B (``compare_annotations.py``); differences are B - A and
the axes carry the sources' labels:

- ``plot_ai_agreement_scatter``: AI of B against A per hip, identity line
- ``plot_ai_bland_altman``: B - A against the mean of the two, bias and limits of agreement
- ``plot_diff_hist``: histogram of the signed AI differences, with the normality test and
  the paired test that it chose
- ``plot_px_vs_angle``: per image, mean keypoint distance against the mean |AI difference|
- ``plot_image_distances``: per-image mean keypoint distance as bars, mean and ±1 SD lines
- ``plot_ihdi_agreement``: the IHDI confusion matrix (``plots.plot_confusion_matrix``)

Dataset statistics (``analyze_dataset.py``): ``plot_ai_hist``, ``plot_ihdi_bars``,
``plot_lr_diff_hist``, ``plot_image_sizes``, ``plot_spacing_hist``.

Sides are image sides (``left`` = the hip drawn on the image-left).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from datasets.layouts import SIDES  # noqa: E402
from utils.evaluation import plots as P  # noqa: E402
from utils.evaluation.metrics import GRADE_LABELS  # noqa: E402


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=P.DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _f(v, nd=2) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def _finite_pairs(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    m = np.isfinite(a) & np.isfinite(b)
    return a[m], b[m]


# ------------------------------------------------------------------ agreement
def plot_ai_agreement_scatter(ai_a: Mapping[str, np.ndarray], ai_b: Mapping[str, np.ndarray], path,
                              label_a: str = "A", label_b: str = "B", stats: Optional[Dict] = None) -> Path:
    """AI of B (y) against A (x), one marker per image side; ``stats`` is ``ai_agreement``'s block."""
    title = None
    if stats:
        title = (f"Acetabular index, {label_b} vs {label_a} (n = {stats['n']} hips)\n"
                 f"ICC(2,1) = {_f(stats['icc21'], 3)}, ICC(3,1) = {_f(stats['icc31'], 3)}, "
                 f"MAE = {_f(stats['mae'])}°")
    return P.draw_ai_scatter({s: _finite_pairs(ai_a[s], ai_b[s]) for s in SIDES}, path,
                             (f"{label_a}: AI (°)", f"{label_b}: AI (°)"), title, size=5.4)


def plot_ai_bland_altman(ai_a: Mapping[str, np.ndarray], ai_b: Mapping[str, np.ndarray], path,
                         label_a: str = "A", label_b: str = "B", stats: Optional[Dict] = None) -> Path:
    """Bland-Altman of the AI: B - A against (A + B) / 2, bias and bias ± 1.96 SD."""
    return P.draw_bland_altman({s: _finite_pairs(ai_a[s], ai_b[s]) for s in SIDES},
                               (stats or {}).get("bland_altman") or {}, path, "Acetabular index: Bland-Altman",
                               (f"Mean of {label_a} and {label_b} AI (°)", f"{label_b} − {label_a} AI (°)"))


def plot_diff_hist(diffs, path, label_a: str = "A", label_b: str = "B", stats: Optional[Dict] = None,
                   bins: int = 30) -> Path:
    """Histogram of the signed AI differences B - A, with a normal curve of the same mean and SD,
    and the normality and paired-test results in the title."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if len(d):
        ax.hist(d, bins=bins, color="tab:blue", alpha=0.7, edgecolor="white", label="hips")
        if len(d) > 1 and np.std(d) > 0:
            mu, sd = float(np.mean(d)), float(np.std(d, ddof=1))
            x = np.linspace(d.min() - sd, d.max() + sd, 200)
            width = (d.max() - d.min()) / bins if d.max() > d.min() else 1.0
            ax.plot(x, len(d) * width * np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)),
                    color="crimson", lw=1.2, label=f"normal, mean {mu:.2f}°, SD {sd:.2f}°")
        ax.axvline(0, color="0.4", lw=0.8)
        ax.legend(fontsize=8)
    title = f"Signed AI difference, {label_b} − {label_a} (n = {len(d)} hips)"
    if stats:
        norm, test = stats.get("normality", {}), stats.get("test", {})
        name = {"paired_t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank"}.get(test.get("name"), "no test")
        title += (f"\nShapiro-Wilk W = {_f(norm.get('statistic'), 3)}, p = {_f(norm.get('p'), 3)}"
                  f" -> {name}: p = {_f(test.get('p'), 3)}")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(f"{label_b} − {label_a} AI (°)")
    ax.set_ylabel("Hips")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_px_vs_angle(mean_px, mean_abs_ai_diff, path, label_a: str = "A", label_b: str = "B") -> Path:
    """Per image: mean keypoint distance (x) against the mean |AI difference| of its hips (y)."""
    x, y = _finite_pairs(mean_px, mean_abs_ai_diff)
    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    ax.scatter(x, y, s=20, alpha=0.7, color="tab:purple", edgecolors="none")
    title = f"Keypoint distance vs AI difference, {label_b} vs {label_a} (n = {len(x)} images)"
    if len(x) >= 3 and np.std(x) > 0 and np.std(y) > 0:
        from scipy import stats
        r = stats.spearmanr(x, y)
        title += f"\nSpearman ρ = {r.statistic:.3f}"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("Mean keypoint distance (px)")
    ax.set_ylabel("Mean |AI difference| (°)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_image_distances(stems: Sequence[str], mean_px, path, label_a: str = "A", label_b: str = "B",
                         max_labels: int = 40) -> Path:
    """Per-image mean keypoint distance as bars (in stem order), with the mean and ±1 SD."""
    d = np.asarray(mean_px, dtype=float)
    fig, ax = plt.subplots(figsize=(min(16, 4 + 0.12 * len(d)), 4.6))
    idx = np.arange(len(d))
    ax.bar(idx, np.where(np.isfinite(d), d, 0), color="skyblue", edgecolor="none", label="image")
    fin = d[np.isfinite(d)]
    if len(fin):
        mu = float(fin.mean())
        ax.axhline(mu, color="crimson", lw=1.2, label=f"mean {mu:.2f} px")
        if len(fin) > 1:
            sd = float(fin.std(ddof=1))
            for y in (mu - sd, mu + sd):
                ax.axhline(y, color="crimson", ls="--", lw=0.9)
            ax.plot([], [], color="crimson", ls="--", lw=0.9, label=f"±1 SD ({sd:.2f} px)")
    step = max(1, int(np.ceil(len(d) / max_labels)))
    ax.set_xticks(idx[::step], [str(stems[i]) for i in idx[::step]], rotation=90, fontsize=6)
    ax.set_xlim(-0.6, len(d) - 0.4)
    ax.set_ylabel("Mean keypoint distance (px)")
    ax.set_title(f"Mean keypoint distance per image, {label_b} vs {label_a} (n = {len(d)} images)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_ihdi_agreement(confusion: Mapping, path, label_a: str = "A", label_b: str = "B",
                        stats: Optional[Dict] = None) -> Path:
    """IHDI confusion (rows A, columns B) through ``plots.plot_confusion_matrix``."""
    cm = np.array([[confusion[f"gt_{r}"][f"pred_{c}"] for c in GRADE_LABELS] for r in GRADE_LABELS])
    title = f"IHDI grade, {label_b} vs {label_a}"
    if stats:
        title += (f" (n = {stats.get('n')} hips)\naccuracy = {_f(stats.get('accuracy'), 3)}, "
                  f"quadratic κ = {_f(stats.get('kappa_quadratic'), 3)}")
    return P.plot_confusion_matrix(cm, GRADE_LABELS, path, title, xlabel=f"{label_b}: grade",
                                   ylabel=f"{label_a}: grade")


# ------------------------------------------------------------------ dataset statistics
def plot_ai_hist(ai: Mapping[str, np.ndarray], path, title: str = "Acetabular index", bin_deg: float = 2.0,
                 normal_range=(0.0, 60.0)) -> Path:
    """AI histogram per image side (overlaid, ``bin_deg`` wide bins), with the plausible range marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    vals = [np.asarray(ai[s], dtype=float) for s in SIDES]
    vals = [v[np.isfinite(v)] for v in vals]
    allv = np.concatenate(vals) if vals else np.array([])
    lo = min(normal_range[0], float(allv.min())) if len(allv) else normal_range[0]
    hi = max(normal_range[1], float(allv.max())) if len(allv) else normal_range[1]
    edges = np.arange(np.floor(lo / bin_deg) * bin_deg, np.ceil(hi / bin_deg) * bin_deg + bin_deg, bin_deg)
    for s, v in zip(SIDES, vals):
        st = P.SIDE_STYLE[s]
        if len(v):
            ax.hist(v, bins=edges, alpha=0.55, color=st["color"],
                    label=f"{st['label']}: n = {len(v)}, mean {v.mean():.1f}°, SD {v.std(ddof=1) if len(v) > 1 else 0:.1f}°")
    for x in normal_range:
        ax.axvline(x, color="0.3", ls=":", lw=1)
    ax.set_xlabel("AI (°)")
    ax.set_ylabel("Hips")
    ax.set_title(f"{title} per side (n = {len(allv)} hips); dotted: plausible range {normal_range[0]:g}–{normal_range[1]:g}°",
                 fontsize=10)
    ax.grid(alpha=0.3)
    if len(allv):
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_ihdi_bars(grades: Mapping[str, np.ndarray], path) -> Path:
    """Counts of IHDI grades I-IV (and 0 = ungradable, when any) per image side."""
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    g_all = np.concatenate([np.asarray(grades[s], dtype=float) for s in SIDES])
    codes = [1, 2, 3, 4] + ([0] if np.any(g_all == 0) else [])
    names = list(GRADE_LABELS) + (["ungradable"] if 0 in codes else [])
    x = np.arange(len(codes))
    for k, s in enumerate(SIDES):
        g = np.asarray(grades[s], dtype=float)
        counts = [int(np.sum(g == c)) for c in codes]
        bars = ax.bar(x + (k - 0.5) * 0.38, counts, width=0.38, color=P.SIDE_STYLE[s]["color"], alpha=0.8,
                      label=P.SIDE_STYLE[s]["label"])
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, names)
    ax.set_xlabel("IHDI grade")
    ax.set_ylabel("Hips")
    ax.set_title(f"IHDI grades per side (n = {int(np.sum(np.isfinite(g_all)))} hips)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_lr_diff_hist(diff, path, bins: int = 30) -> Path:
    """Histogram of AI(left) − AI(right) per image (image sides)."""
    d = np.asarray(diff, dtype=float)
    d = d[np.isfinite(d)]
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    if len(d):
        ax.hist(d, bins=bins, color="tab:green", alpha=0.7, edgecolor="white")
        ax.axvline(0, color="0.3", lw=0.8)
        ax.axvline(d.mean(), color="crimson", lw=1.2, label=f"mean {d.mean():.2f}°")
        ax.legend(fontsize=8)
    ax.set_xlabel("AI left − AI right (°), image sides")
    ax.set_ylabel("Images")
    ax.set_title(f"Left-right AI difference (n = {len(d)} images)", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_image_sizes(widths, heights, path) -> Path:
    """Image width against height, one dot per image (sizes that repeat drawn larger)."""
    w, h = np.asarray(widths, dtype=float), np.asarray(heights, dtype=float)
    m = np.isfinite(w) & np.isfinite(h)
    w, h = w[m], h[m]
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    if len(w):
        pairs, counts = np.unique(np.stack([w, h], 1), axis=0, return_counts=True)
        ax.scatter(pairs[:, 0], pairs[:, 1], s=16 + 12 * np.sqrt(counts), alpha=0.6, color="tab:blue",
                   edgecolors="none")
        for (pw, ph), c in zip(pairs, counts):
            if c > 1:
                ax.annotate(f"×{c}", (pw, ph), xytext=(4, 4), textcoords="offset points", fontsize=7)
        ax.set_title(f"Image sizes (n = {len(w)} images, {len(pairs)} distinct)", fontsize=10)
    else:
        ax.set_title("Image sizes (none read)", fontsize=10)
    ax.set_xlabel("Width (px)")
    ax.set_ylabel("Height (px)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_spacing_hist(spacing, path, bins: int = 30) -> Path:
    """Histogram of the pixel spacing (mm per pixel) of the images where it is known."""
    s = np.asarray(spacing, dtype=float)
    n_all = len(s)
    s = s[np.isfinite(s) & (s > 0)]
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    if len(s):
        ax.hist(s, bins=bins, color="tab:orange", alpha=0.75, edgecolor="white")
    ax.set_xlabel("Pixel spacing (mm / px)")
    ax.set_ylabel("Images")
    ax.set_title(f"Pixel spacing (known for {len(s)} of {n_all} images)", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)
