"""Evaluation plots (matplotlib, Agg, PNG). No torch. Image overlays are in ``utils.evaluation.overlays``.

Plots take the predictions DataFrame described in ``utils.evaluation.metrics`` and write one
PNG each:

- ``plot_ai_scatter``: predicted vs reference AI, identity line, r / ICC / MAE in the title
- ``plot_bland_altman``: difference vs mean, bias and 95% limits of agreement
  (both draw with ``draw_ai_scatter`` / ``draw_bland_altman``, which take ``{side: (x, y)}``
  pairs and axis ``labels``; the study tools' agreement plots use them too)
- ``plot_confusion``: IHDI I-IV or screening (I vs II-IV) confusion, counts and row %
- ``plot_keypoint_errors``: per-keypoint radial error box plot, left and right hips
- ``plot_error_hist``: histogram of all radial errors
- ``plot_all``: all of the above into one folder
- ``plot_training_curves``: a training run's loss, NME and pixel-error curves per epoch
- ``plot_kfold_curves``: validation curves of every fold and their mean

"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import cv2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datasets.layouts import SIDES, get_layout  # noqa: E402
from utils.evaluation import metrics, schema  # noqa: E402
from utils.evaluation.overlays import draw_overlay, overlay_from_row, save_overlay, save_worst_cases  # noqa: E402,F401  (moved there; the old import path keeps working)
from utils.fileio import atomic_write  # noqa: E402
from utils.hip_geometry import grade_name, hip_frames, hip_lines  # noqa: E402

SIDE_STYLE = {"left": dict(marker="o", color="tab:blue", label="left hip (image)"),
              "right": dict(marker="^", color="tab:orange", label="right hip (image)")}
DPI = 150


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _fmt(v, nd=2):
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def _pairs(df, name):
    """{side: (pred, gt)} of finite pairs of column ``name`` (e.g. "ai"; undetected sides left out)."""
    out = {}
    pv, gv = metrics.side_values(df, name, True, kind="pred"), metrics.side_values(df, name, kind="gt")
    for s in SIDES:
        p, g = pv[s], gv[s]
        m = np.isfinite(p) & np.isfinite(g)
        out[s] = (p[m], g[m])
    return out


# ------------------------------------------------------------------ AI agreement
def _ai_pairs(df: pd.DataFrame):
    """Per-side (pred, ref) AI pairs and both sides pooled."""
    pairs = _pairs(df, "ai")
    return (pairs, np.concatenate([pairs[s][0] for s in SIDES]),
            np.concatenate([pairs[s][1] for s in SIDES]))


AI_LABELS = ("Reference AI (°)", "Predicted AI (°)")                                   # (x, y) axes
BLAND_ALTMAN_LABELS = ("Mean of predicted and reference AI (°)", "Predicted − reference AI (°)")


def plot_ai_scatter(df: pd.DataFrame, path, title: str = "Acetabular index", labels=AI_LABELS) -> Path:
    """Predicted vs reference AI per hip, left/right markers, identity line; r, ICC(2,1), MAE in the title."""
    pairs, p_all, g_all = _ai_pairs(df)
    ag = metrics.agreement(p_all, g_all)
    return draw_ai_scatter({s: (g, p) for s, (p, g) in pairs.items()}, path, labels,
                           f"{title} (n = {ag['n']} hips)\n"
                           f"r = {_fmt(ag['pearson_r'], 3)}, ICC(2,1) = {_fmt(ag['icc2_1'], 3)}, "
                           f"MAE = {_fmt(ag['mae'])}°")


def draw_ai_scatter(pairs, path, labels=AI_LABELS, title=None, size: float = 5.2) -> Path:
    """y against x per hip (``pairs``: {side: (x, y)}, finite), left/right markers and the identity
    line; ``labels``: the (x, y) axis labels; ``title`` None: none."""
    fig, ax = plt.subplots(figsize=(size, size))
    for s in SIDES:
        x, y = pairs[s]
        st = SIDE_STYLE[s]
        ax.scatter(x, y, s=22, alpha=0.75, marker=st["marker"], color=st["color"],
                   label=f"{st['label']} (n = {len(x)})", edgecolors="none")
    v = np.concatenate([np.concatenate([np.asarray(a, float) for a in pairs[s]]) for s in SIDES])
    if len(v):
        lo, hi = float(v.min()), float(v.max())
        pad = 0.05 * (hi - lo) + 1.0
        lo, hi = lo - pad, hi + pad
    else:
        lo, hi = 0.0, 45.0
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="identity (y = x)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if title is not None:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_ai_error_vs_true(df: pd.DataFrame, path, title: str = "Acetabular index error vs reference AI") -> Path:
    """AI error (pred - ref) per hip against the reference AI, left/right markers, a zero line
    and the mean absolute error per reference-AI bin; the MAE and its 95% bootstrap CI in the title."""
    pairs, p_all, g_all = _ai_pairs(df)
    err = p_all - g_all
    lo, hi = metrics.bootstrap_ci(np.abs(err))
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for s in SIDES:
        p, g = pairs[s]
        st = SIDE_STYLE[s]
        ax.scatter(g, p - g, s=22, alpha=0.75, marker=st["marker"], color=st["color"],
                   label=f"{st['label']} (n = {len(p)})", edgecolors="none")
    ax.axhline(0.0, color="k", lw=1)
    if len(err) >= 4:
        edges = np.unique(np.quantile(g_all, np.linspace(0, 1, min(6, len(err) // 4) + 1)))
        if len(edges) > 1:
            idx = np.clip(np.searchsorted(edges, g_all, side="right") - 1, 0, len(edges) - 2)
            centres = [(edges[i] + edges[i + 1]) / 2 for i in range(len(edges) - 1) if np.any(idx == i)]
            mae_bin = [np.mean(np.abs(err[idx == i])) for i in range(len(edges) - 1) if np.any(idx == i)]
            ax.plot(centres, mae_bin, "-", color="tab:red", lw=1.5, marker="s", ms=4,
                    label="mean |error| per AI bin")
    ax.set_xlabel("Reference AI (°)")
    ax.set_ylabel("AI error, predicted − reference (°)")
    mae = float(np.mean(np.abs(err))) if len(err) else float("nan")
    ax.set_title(f"{title} (n = {len(err)} hips)\nMAE = {_fmt(mae)}° (95% CI {_fmt(lo)}–{_fmt(hi)}°)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def plot_bland_altman(df: pd.DataFrame, path, title: str = "Acetabular index: Bland-Altman",
                      labels=BLAND_ALTMAN_LABELS) -> Path:
    """Difference (pred - ref) vs mean of the two, with bias and bias ± 1.96 SD lines labelled."""
    pairs, p_all, g_all = _ai_pairs(df)
    return draw_bland_altman({s: (g, p) for s, (p, g) in pairs.items()}, metrics.bland_altman(p_all, g_all),
                             path, title, labels)


def draw_bland_altman(pairs, ba, path, title: str = "Acetabular index: Bland-Altman",
                      labels=BLAND_ALTMAN_LABELS) -> Path:
    """Bland-Altman of ``pairs`` ({side: (x, y)}, finite): y - x against (x + y) / 2, with the
    ``bias``, ``loa_high`` and ``loa_low`` lines of ``ba`` (a ``metrics.bland_altman`` dict; a
    missing or NaN one is not drawn); ``labels``: the (x, y) axis labels."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    diffs = []
    for s in SIDES:
        x, y = pairs[s]
        st = SIDE_STYLE[s]
        ax.scatter((y + x) / 2, y - x, s=22, alpha=0.75, marker=st["marker"], color=st["color"],
                   label=f"{st['label']} (n = {len(x)})", edgecolors="none")
        diffs.append(y - x)
    d = np.concatenate(diffs)
    ax.axhline(0, color="0.6", lw=0.8)
    span = max([abs(float(v)) for v in d] + [1.0])
    for key, name, ls in (("bias", "bias", "-"), ("loa_high", "+1.96 SD", "--"), ("loa_low", "−1.96 SD", "--")):
        v = ba.get(key)
        if v is not None and np.isfinite(v):
            span = max(span, abs(v))
            ax.axhline(v, color="crimson", ls=ls, lw=1.2)
            ax.annotate(f"{name}: {v:.2f}°", xy=(1.0, v), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                        textcoords="offset points", ha="right", va="bottom", fontsize=8, color="crimson")
    ax.set_ylim(-1.25 * span, 1.25 * span)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(f"{title} (n = {len(d)} hips)\nbias = {_fmt(ba.get('bias'))}°, "
                 f"95% LoA = [{_fmt(ba.get('loa_low'))}, {_fmt(ba.get('loa_high'))}]°", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


# ------------------------------------------------------------------ IHDI confusion
def plot_confusion_matrix(cm, labels: Sequence[str], path, title: str = "",
                          xlabel: str = "Predicted grade", ylabel: str = "Reference grade") -> Path:
    """A confusion matrix with the count and the row-normalised % in each cell."""
    cm = np.asarray(cm, dtype=int)
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(rows > 0, 100.0 * cm / np.maximum(rows, 1), 0.0)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.2, 1.1 * k + 1.8))
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            txt = f"{cm[i, j]}\n({pct[i, j]:.0f}%)" if rows[i, 0] else "0"
            ax.text(j, i, txt, ha="center", va="center", fontsize=10,
                    color="white" if pct[i, j] > 55 else "black")
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("% of reference row")
    return _save(fig, path)


def plot_confusion(df: pd.DataFrame, path, kind: str = "4class", side: str = metrics.POOLED) -> Path:
    """IHDI confusion of ``side`` (left/right/pooled): ``kind`` "4class" (I-IV) or "screening" (I vs II-IV)."""
    pred, gt = metrics.side_values(df, "ihdi", True, kind="pred"), metrics.side_values(df, "ihdi", kind="gt")
    res = metrics.ihdi_metrics(gt[side], pred[side])
    where = "both hips" if side == metrics.POOLED else f"{side} hips"
    excl = res["n_ungradable"] + res["n_missing"]
    note = f"; {excl} excluded: ungradable or missing" if excl else ""
    if kind == "4class":
        cm = metrics.confusion_4class(gt[side], pred[side])
        title = (f"IHDI grade, {where} (n = {res['n']}{note})\n"
                 f"accuracy = {_fmt(res['accuracy'], 3)}, quadratic κ = {_fmt(res['kappa_quadratic'], 3)}")
        return plot_confusion_matrix(cm, metrics.GRADE_LABELS, path, title)
    if kind == "screening":
        cm = metrics.screening_confusion(gt[side], pred[side])
        sc = res["screening"]
        title = (f"IHDI screening, {where} (n = {res['n']}{note})\n"
                 f"sensitivity = {_fmt(sc['sensitivity'], 3)}, specificity = {_fmt(sc['specificity'], 3)}")
        return plot_confusion_matrix(cm, ["I (normal)", "II–IV"], path, title)
    raise ValueError(f"kind must be '4class' or 'screening', got {kind!r}")


# ------------------------------------------------------------------ keypoint errors
def _errors_mm(df, s):
    cols = metrics.error_columns(df, s)
    sp = metrics.column(df, "pixel_spacing_mm")
    sp = np.where(sp > 0, sp, np.nan)
    return {c: metrics.column(df, c) * sp for c in cols}


def _side_errors(df, s, unit):
    cols = metrics.error_columns(df, s)
    if unit == "mm":
        return _errors_mm(df, s)
    return {c: metrics.column(df, c) for c in cols}


def plot_keypoint_errors(df: pd.DataFrame, path, layout=None, unit: str = "px") -> Path:
    """Box plot of the radial error per anatomical keypoint, left and right hips side by side."""
    lay = metrics.infer_layout(df, layout)
    fig, ax = plt.subplots(figsize=(1.3 * lay.points_per_side + 2.5, 4.6))
    names = list(lay.point_names)
    n_img = 0
    for si, s in enumerate(SIDES):
        errs = _side_errors(df, s, unit)
        data = []
        for pname in names:
            col = None
            raw_index = dict(schema.error_columns(errs, s))
            for c in errs:
                j = metrics.error_index(lay, s, raw_index[c])
                if lay.side_point_names(s)[lay.local(s, j)] == pname:
                    col = c
            v = errs[col] if col is not None else np.array([])
            v = v[np.isfinite(v)]
            n_img = max(n_img, len(v))
            data.append(v if len(v) else np.array([np.nan]))
        pos = np.arange(len(names)) + (-0.18 if si == 0 else 0.18)
        bp = ax.boxplot(data, positions=pos, widths=0.32, patch_artist=True, showfliers=True,
                        flierprops=dict(marker=".", markersize=3, alpha=0.5))
        for b in bp["boxes"]:
            b.set_facecolor(SIDE_STYLE[s]["color"])
            b.set_alpha(0.6)
        for med in bp["medians"]:
            med.set_color("black")
        ax.plot([], [], "s", color=SIDE_STYLE[s]["color"], alpha=0.6, label=SIDE_STYLE[s]["label"])
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=25, ha="right")
    ax.set_ylabel(f"Radial error ({unit})")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Keypoint error per point, {lay.name} (n = {n_img} images)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_error_hist(df: pd.DataFrame, path, unit: str = "px", bins: int = 40) -> Path:
    """Histogram of all radial errors with the mean and median marked."""
    vals = []
    for s in SIDES:
        vals += list(_side_errors(df, s, unit).values())
    e = np.concatenate(vals) if vals else np.array([])
    e = e[np.isfinite(e)]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    if len(e):
        ax.hist(e, bins=bins, color="tab:blue", alpha=0.75, edgecolor="white")
        ax.axvline(e.mean(), color="crimson", lw=1.2, label=f"mean (MRE) = {e.mean():.2f} {unit}")
        ax.axvline(np.median(e), color="black", ls="--", lw=1.2, label=f"median = {np.median(e):.2f} {unit}")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"Radial error ({unit})")
    ax.set_ylabel("Keypoints")
    ax.set_title(f"Radial keypoint error (n = {len(e)} keypoints)", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_all(df: pd.DataFrame, out_dir, layout=None) -> List[Path]:
    """Every plot whose columns ``df`` has, into ``out_dir``; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    cols = set(df.columns)
    if {schema.column("ai", kind=k, side="left") for k in ("pred", "gt")} <= cols:
        paths.append(plot_ai_scatter(df, out / "ai_scatter.png"))
        paths.append(plot_bland_altman(df, out / "ai_bland_altman.png"))
        paths.append(plot_ai_error_vs_true(df, out / "ai_error_vs_true.png"))
    if {schema.column("ihdi", kind=k, side="left") for k in ("pred", "gt")} <= cols:
        paths.append(plot_confusion(df, out / "ihdi_confusion.png", "4class"))
        paths.append(plot_confusion(df, out / "ihdi_screening_confusion.png", "screening"))
    if metrics.error_columns(df, "left") or metrics.error_columns(df, "right"):
        paths.append(plot_keypoint_errors(df, out / "keypoint_errors_px.png", layout, "px"))
        paths.append(plot_error_hist(df, out / "error_hist_px.png", "px"))
        if np.any(np.isfinite(metrics.column(df, "pixel_spacing_mm"))):
            paths.append(plot_keypoint_errors(df, out / "keypoint_errors_mm.png", layout, "mm"))
            paths.append(plot_error_hist(df, out / "error_hist_mm.png", "mm"))
    return paths


# ------------------------------------------------------------------ training curves
def plot_training_curves(history: List[Dict], path, title: str = "") -> None:
    """Loss, NME and pixel-error curves per epoch to a PNG."""
    ep = [r["epoch"] for r in history]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    ax[0].plot(ep, [r["train_loss"] for r in history], "o-", ms=3, label="train")
    ax[0].plot(ep, [r["val_loss"] for r in history], "o-", ms=3, label="val")
    ax[0].set_title("loss")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[1].plot(ep, [r["val_nme"] for r in history], "o-", ms=3, color="C2")
    ax[1].set_title("validation NME (error / crop side)")
    px = [r["val_px_error"] for r in history]
    ax[2].plot(ep, px, "o-", ms=3, color="C3")
    finite = [(e, v) for e, v in zip(ep, px) if math.isfinite(v)]
    if finite:
        e_best, v_best = min(finite, key=lambda t: t[1])
        ax[2].plot([e_best], [v_best], "*", ms=12, color="k", label=f"best {v_best:.2f} px (epoch {e_best})")
        ax[2].legend()
    ax[2].set_title("validation mean error (original-image px)")
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3, which="both")
    for a in ax[1:]:
        a.set_yscale("log")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def plot_kfold_curves(curves: Dict[int, List[Dict]], path: Path, title: str) -> None:
    """Validation loss and pixel error per epoch of each fold, and their mean, to a PNG."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "val_loss", "validation loss"), (axes[1], "val_px_error", "validation error (px)")):
        per_epoch: Dict[int, List[float]] = {}
        for i, hist in sorted(curves.items()):
            ep = [h["epoch"] for h in hist]
            ax.plot(ep, [h[key] for h in hist], alpha=0.45, lw=1, label=f"fold {i}")
            for h in hist:
                per_epoch.setdefault(int(h["epoch"]), []).append(h[key])
        eps = sorted(per_epoch)
        ax.plot(eps, [np.mean(per_epoch[e]) for e in eps], color="k", lw=2.2, label="mean")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if key == "val_px_error":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}: {len(curves)} folds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
