"""Paper tables: k-fold summaries and experiment comparisons (pandas, no torch).

Inputs are *flat metric dicts* ``{name: value}`` with the names of
``utils.evaluation.metrics.flatten_metrics`` (``ai/pooled/mae``, ``keypoints/mm/left/mean`` ...).
Each function also accepts the nested dict of ``utils.evaluation.metrics.evaluate_predictions``, a list of
``(name, value)`` pairs, or the path of a ``metrics.csv`` / ``metrics.json``.

- ``kfold_summary(folds) -> DataFrame``: every numeric metric as mean and SD across
  folds (``ddof=1``), plus the per-fold values.
- ``write_kfold_summary(folds, out_dir)``: ``kfold_summary.csv`` (all metrics),
  ``kfold_summary.md`` and ``kfold_summary.tex`` (a curated table, mean ± SD per
  image side and for both hips). A fold whose detector found no hip at all (detection
  recall 0) is named in a one-line warning and in a footnote of both tables
  (``folds_without_detections``).
- ``compare_experiments({name: metrics}) -> DataFrame``: one row per experiment
  (a single run's metrics, a list of fold metrics, or a ``kfold_summary`` frame),
  curated pooled columns; ``write_comparison`` writes csv/md/tex with the best value
  of each column in bold.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from utils.config import AI_INTERVAL_MAX_WIDTH_DEG
from utils.evaluation.schema import check_metric_keys
from utils.evaluation.metrics import flatten_metrics, read_metrics_csv

SIDE_COLUMNS = (("left", "Left hip"), ("right", "Right hip"), ("pooled", "Both hips"))
DASH = "–"
NO_HIP = "no hip detected; the detector is undertrained or the data differ"
DETECTION_RECALL = "detection/pooled/recall"

log = logging.getLogger("hipkp")


@dataclass(frozen=True)
class Metric:
    """A curated table row/column: the first of ``keys`` present in the data is used.

    ``keys`` may contain ``{side}``; values are multiplied by ``scale`` and shown with
    ``decimals`` places. ``higher`` says which direction is better (None: neither).
    """
    label: str
    keys: Tuple[str, ...]
    scale: float = 1.0
    decimals: int = 2
    higher: Optional[bool] = None
    section: str = ""


def _sdr(r: str) -> Metric:
    return Metric(f"SDR @ {r} mm (%)", (f"keypoints/sdr_mm/{{side}}/{r}",), 100, 1, True, "Keypoints")


# section names say which hips a row counts (docs/outputs.md, "Which hips each number counts")
ALL_AI = "Acetabular index, all detected hips"
ALL_IHDI = "IHDI grade, all detected hips (a failed hip is an error)"
GRADABLE = "Gradable hips only"

PAPER_ROWS: Tuple[Metric, ...] = (
    Metric("Detection recall (%)", ("detection/{side}/recall",), 100, 1, True, "Detection"),
    Metric("Detection recall, IoU ≥ 0.5 (%)", ("detection/{side}/recall_iou0.5",), 100, 1, True, "Detection"),
    Metric("MRE (px)", ("keypoints/px/{side}/mean",), 1, 2, False, "Keypoints"),
    Metric("MRE (mm)", ("keypoints/mm/{side}/mean",), 1, 2, False, "Keypoints"),
    Metric("NME, crop diagonal (%)", ("keypoints/nme_crop/{side}/mean",), 100, 2, False, "Keypoints"),
    Metric("NME, inter-triradiate (%)", ("keypoints/nme_tri/{side}/mean",), 100, 2, False, "Keypoints"),
    _sdr("2"), _sdr("2.5"), _sdr("3"), _sdr("4"),
    Metric("AI MAE (°)", ("ai/{side}/mae",), 1, 2, False, ALL_AI),
    Metric("AI RMSE (°)", ("ai/{side}/rmse",), 1, 2, False, ALL_AI),
    Metric("AI bias (°)", ("ai/{side}/bias",), 1, 2, None, ALL_AI),
    Metric("AI 95% LoA, lower (°)", ("ai/{side}/loa_low",), 1, 2, None, ALL_AI),
    Metric("AI 95% LoA, upper (°)", ("ai/{side}/loa_high",), 1, 2, None, ALL_AI),
    Metric("AI Pearson r", ("ai/{side}/pearson_r",), 1, 3, True, ALL_AI),
    Metric("AI ICC(2,1)", ("ai/{side}/icc2_1",), 1, 3, True, ALL_AI),
    Metric("AI ICC(3,1)", ("ai/{side}/icc3_1",), 1, 3, True, ALL_AI),
    Metric("IHDI accuracy (%)", ("ihdi/{side}/accuracy",), 100, 1, True, ALL_IHDI),
    Metric("IHDI quadratic κ", ("ihdi/{side}/kappa_quadratic",), 1, 3, True, ALL_IHDI),
    Metric("IHDI macro-F1", ("ihdi/{side}/macro_f1",), 1, 3, True, ALL_IHDI),
    Metric("Screening sensitivity (%)", ("ihdi/{side}/screening/sensitivity",), 100, 1, True, ALL_IHDI),
    Metric("Screening specificity (%)", ("ihdi/{side}/screening/specificity",), 100, 1, True, ALL_IHDI),
    # the plausibility gate; AI and IHDI above are over every detected hip, these over the gradable ones
    Metric("Gradable hips (%)", ("gate/{side}/gradable_rate",), 100, 1, True, GRADABLE),
    Metric("AI MAE, gradable hips (°)", ("ai_gradable/{side}/mae",), 1, 2, False, GRADABLE),
    Metric("AI ICC(2,1), gradable hips", ("ai_gradable/{side}/icc2_1",), 1, 3, True, GRADABLE),
    Metric("IHDI accuracy, gradable hips (%)", ("ihdi_gradable/{side}/accuracy",), 100, 1, True, GRADABLE),
    Metric("IHDI quadratic κ, gradable hips", ("ihdi_gradable/{side}/kappa_quadratic",), 1, 3, True, GRADABLE),
    Metric("AI 95% interval coverage (%)", ("ai_interval/{side}/coverage",), 100, 1, None, "AI interval"),
    Metric("AI 95% interval mean width (°)", ("ai_interval/{side}/mean_width",), 1, 2, None, "AI interval"),
    # mtddh8 only (a layout without a head centre leaves these rows out)
    Metric("CE MAE (°)", ("ce/{side}/mae",), 1, 2, False, "CE angle"),
    Metric("CE bias (°)", ("ce/{side}/bias",), 1, 2, None, "CE angle"),
    Metric("CE 95% LoA, lower (°)", ("ce/{side}/loa_low",), 1, 2, None, "CE angle"),
    Metric("CE 95% LoA, upper (°)", ("ce/{side}/loa_high",), 1, 2, None, "CE angle"),
    Metric("CE ICC(2,1)", ("ce/{side}/icc2_1",), 1, 3, True, "CE angle"),
    Metric("Tönnis accuracy (%)", ("tonnis/{side}/accuracy",), 100, 1, True, "Tönnis grade"),
    Metric("Tönnis quadratic κ", ("tonnis/{side}/kappa_quadratic",), 1, 3, True, "Tönnis grade"),
    Metric("h MAE (px)", ("h_px/{side}/mae",), 1, 2, False, "Hilgenreiner distances"),
    Metric("h MAE (mm)", ("h_mm/{side}/mae",), 1, 2, False, "Hilgenreiner distances"),
    Metric("d MAE (px)", ("d_px/{side}/mae",), 1, 2, False, "Hilgenreiner distances"),
    Metric("d MAE (mm)", ("d_mm/{side}/mae",), 1, 2, False, "Hilgenreiner distances"),
)

_COMPACT = ("Detection recall (%)", "MRE (px)", "MRE (mm)", "SDR @ 2 mm (%)", "SDR @ 4 mm (%)", "AI MAE (°)",
            "AI ICC(2,1)", "IHDI accuracy (%)", "IHDI quadratic κ", "Gradable hips (%)", "AI MAE, gradable hips (°)",
            "IHDI accuracy, gradable hips (%)", "IHDI quadratic κ, gradable hips")
# the default paper table: the rows a paper reports (the full one is ``PAPER_ROWS``)
COMPACT_ROWS: Tuple[Metric, ...] = tuple(m for m in PAPER_ROWS if m.label in _COMPACT)
# fold-level confidence bounds: not summarised across folds (a mean of CI bounds is no statistic)
CI_SUFFIXES = ("_ci_lo", "_ci_hi")
# the pooled column's 95% CI: bootstrap over every hip of every fold (``ai_metrics``' mae_ci)
POOLED_CI = {"ai/{side}/mae": "ai/{side}/mae_ci", "ai_gradable/{side}/mae": "ai_gradable/{side}/mae_ci"}

COMPARE_COLUMNS: Tuple[Metric, ...] = (
    Metric("Det. recall (%)", ("detection/pooled/recall",), 100, 1, True),
    Metric("MRE (px)", ("keypoints/px/pooled/mean",), 1, 2, False),
    Metric("MRE (mm)", ("keypoints/mm/pooled/mean",), 1, 2, False),
    Metric("NME (%)", ("keypoints/nme_crop/pooled/mean",), 100, 2, False),
    Metric("SDR@2mm (%)", ("keypoints/sdr_mm/pooled/2",), 100, 1, True),
    Metric("SDR@2.5mm (%)", ("keypoints/sdr_mm/pooled/2.5",), 100, 1, True),
    Metric("SDR@3mm (%)", ("keypoints/sdr_mm/pooled/3",), 100, 1, True),
    Metric("SDR@4mm (%)", ("keypoints/sdr_mm/pooled/4",), 100, 1, True),
    Metric("AI MAE (°)", ("ai/pooled/mae",), 1, 2, False),
    Metric("AI MAE CI lo (°)", ("ai/pooled/mae_ci_lo",), 1, 2, None),
    Metric("AI MAE CI hi (°)", ("ai/pooled/mae_ci_hi",), 1, 2, None),
    Metric("AI ICC(2,1)", ("ai/pooled/icc2_1",), 1, 3, True),
    Metric("IHDI acc. (%)", ("ihdi/pooled/accuracy",), 100, 1, True),
    Metric("IHDI κ", ("ihdi/pooled/kappa_quadratic",), 1, 3, True),
    Metric("Sens. (%)", ("ihdi/pooled/screening/sensitivity",), 100, 1, True),
    Metric("Spec. (%)", ("ihdi/pooled/screening/specificity",), 100, 1, True),
    Metric("Gradable (%)", ("gate/pooled/gradable_rate",), 100, 1, True),
    Metric("AI int. cov. (%)", ("ai_interval/pooled/coverage",), 100, 1, None),
    Metric("CE MAE (°)", ("ce/pooled/mae",), 1, 2, False),
    Metric("Tönnis κ", ("tonnis/pooled/kappa_quadratic",), 1, 3, True),
)

MetricsLike = Union[Mapping, Sequence[Tuple[str, object]], str, Path]

# every key a table reads must be one the metrics produce (a renamed key is an error, not a lost row)
check_metric_keys([k for m in PAPER_ROWS + COMPARE_COLUMNS for k in m.keys], "the paper tables")


# ------------------------------------------------------------------ inputs
def _num(v) -> float:
    if v is None or isinstance(v, bool):
        return float(v) if isinstance(v, bool) else float("nan")
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def to_flat(metrics: MetricsLike) -> Dict[str, float]:
    """Any accepted metrics form -> ``{name: float}`` (non-numeric values dropped, None -> NaN)."""
    if isinstance(metrics, (str, Path)):
        p = Path(metrics)
        if p.suffix == ".json":
            metrics = json.loads(p.read_text())
        else:
            metrics = read_metrics_csv(p)
    if isinstance(metrics, Mapping):
        if any(isinstance(v, (Mapping, list, tuple)) for v in metrics.values()):
            pairs = flatten_metrics(metrics)
        else:
            pairs = list(metrics.items())
    else:
        pairs = list(metrics)
    out = {}
    for k, v in pairs:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                continue
        out[str(k)] = _num(v)
    return out


# ------------------------------------------------------------------ k-fold summary
def mean_sd(values: Iterable[float]) -> Tuple[float, float, int]:
    """Mean and sample SD (ddof=1) of the finite values, and their count (SD NaN below 2)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan"), 0
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else float("nan")), int(len(v))


def kfold_summary(folds: Sequence[MetricsLike]) -> pd.DataFrame:
    """Per metric: ``mean``, ``sd`` (ddof=1), ``n_folds`` (finite values) and ``fold_1..fold_k``.

    Indexed by metric name, in the order the metrics first appear. A fold's confidence bounds
    (``*_ci_lo``/``*_ci_hi``) are left out: their mean across folds is no statistic; the pooled
    CI over every hip of every fold is ``write_kfold_summary(pooled=...)``'s.
    """
    flats = [to_flat(f) for f in folds]
    names: List[str] = []
    seen = set()
    for f in flats:
        for k in f:
            if k not in seen:
                seen.add(k)
                names.append(k)
    rows = []
    for k in names:
        if k.endswith(CI_SUFFIXES):
            continue
        vals = [f.get(k, float("nan")) for f in flats]
        m, s, n = mean_sd(vals)
        rows.append({"metric": k, "mean": m, "sd": s, "n_folds": n,
                     **{f"fold_{i + 1}": v for i, v in enumerate(vals)}})
    cols = ["metric", "mean", "sd", "n_folds"] + [f"fold_{i + 1}" for i in range(len(flats))]
    return pd.DataFrame(rows, columns=cols).set_index("metric")


def _lookup(summary: pd.DataFrame, metric: Metric, side: str = "pooled") -> Tuple[float, float]:
    """(mean, sd) of ``metric`` in a summary frame, scaled; NaN when absent."""
    for key in metric.keys:
        k = key.format(side=side)
        if k in summary.index:
            m, s = summary.at[k, "mean"], summary.at[k, "sd"]
            return float(m) * metric.scale, float(s) * metric.scale
    return float("nan"), float("nan")


def format_mean_sd(mean: float, sd: float, decimals: int, pm: str = " ± ") -> str:
    """``"12.34 ± 0.56"``; just the mean when SD is NaN; a dash when the mean is NaN."""
    if mean is None or not math.isfinite(mean):
        return DASH
    m = f"{mean:.{decimals}f}".replace("-", "−")
    if sd is None or not math.isfinite(sd):
        return m
    return f"{m}{pm}{sd:.{decimals}f}"


INTERVAL_COVERAGE = "ai_interval/{side}/coverage"
INTERVAL_WIDTH = "ai_interval/{side}/mean_width"
UNINFORMATIVE = "uninformative"


def _uninformative(get, side: str) -> bool:
    """True when the AI interval's mean width (``get(key)``: its value) exceeds the documented
    threshold: its coverage then says nothing (``utils.config.AI_INTERVAL_MAX_WIDTH_DEG``)."""
    w = get(INTERVAL_WIDTH.format(side=side))
    return w is not None and math.isfinite(w) and w > AI_INTERVAL_MAX_WIDTH_DEG


def pooled_cell(pooled: Mapping[str, float], metric: Metric, side: str = "pooled") -> str:
    """The value of ``metric`` over every hip of every fold (out-of-fold metrics, flat), with the
    bootstrap 95% CI over those hips where the metrics carry one (``POOLED_CI``)."""
    for key in metric.keys:
        v = _num(pooled.get(key.format(side=side)))
        if not math.isfinite(v):
            continue
        cell = format_mean_sd(v * metric.scale, float("nan"), metric.decimals)
        ci = POOLED_CI.get(key)
        if ci:
            lo, hi = (_num(pooled.get(ci.format(side=side) + x)) for x in ("_lo", "_hi"))
            if math.isfinite(lo) and math.isfinite(hi):
                cell += (f" [{format_mean_sd(lo * metric.scale, float('nan'), metric.decimals)}{DASH}"
                         f"{format_mean_sd(hi * metric.scale, float('nan'), metric.decimals)}]")
        return cell
    return DASH


POOLED_COLUMN = "All folds pooled [95% CI]"


def paper_table(summary: pd.DataFrame, rows: Sequence[Metric] = PAPER_ROWS,
                pooled: Optional[MetricsLike] = None) -> pd.DataFrame:
    """The curated k-fold table: columns Section, Metric, Left hip, Right hip, Both hips (strings,
    mean ± SD of the fold point estimates) and, with ``pooled`` (the metrics of all folds' hips
    together, e.g. ``oof_metrics.json``), ``POOLED_COLUMN``: the value over all hips, with its
    bootstrap CI where one exists. An AI interval coverage whose interval is wider than
    ``AI_INTERVAL_MAX_WIDTH_DEG`` reads "uninformative".

    Rows whose metric is absent on every side are left out.
    """
    flat = to_flat(pooled) if pooled is not None else None
    out = []
    for r in rows:
        cells = [_lookup(summary, r, s) for s, _ in SIDE_COLUMNS]
        if not any(math.isfinite(m) for m, _ in cells):
            continue
        row = {"Section": r.section, "Metric": r.label,
               **{label: format_mean_sd(m, s, r.decimals) for (_, label), (m, s) in zip(SIDE_COLUMNS, cells)}}
        if flat is not None:
            row[POOLED_COLUMN] = pooled_cell(flat, r)
        if INTERVAL_COVERAGE in r.keys:
            for side, label in SIDE_COLUMNS:
                if _uninformative(lambda k: _lookup_key(summary, k), side):
                    row[label] = UNINFORMATIVE
            if flat is not None and _uninformative(lambda k: _num(flat.get(k)), "pooled"):
                row[POOLED_COLUMN] = UNINFORMATIVE
        out.append(row)
    cols = ["Section", "Metric"] + [l for _, l in SIDE_COLUMNS] + ([POOLED_COLUMN] if flat is not None else [])
    return pd.DataFrame(out, columns=cols)


def _lookup_key(summary: pd.DataFrame, key: str) -> float:
    return float(summary.at[key, "mean"]) if key in summary.index else float("nan")


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] = None) -> str:
    """A GitHub-flavoured Markdown table; ``align`` per column: 'l', 'r' or 'c'."""
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "°": r"$^\circ$", "κ": r"$\kappa$", "≥": r"$\geq$", "≤": r"$\leq$",
                  "−": r"$-$", "–": r"--"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and map the symbols used in the tables (±, °, κ, ≥, −) to math."""
    out = []
    for ch in str(text):
        out.append(_LATEX_SPECIAL.get(ch) or _LATEX_UNICODE.get(ch) or ch)
    return "".join(out).replace("$$", "")


def latex_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = None,
                sections: Sequence[Optional[str]] = None, caption: str = None, label: str = None,
                bold: Sequence[Sequence[bool]] = None, notes: Sequence[str] = ()) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); cells are escaped here.
    ``notes``: footnote lines under the tabular.

    ``sections[i]``, when set, starts a ``\\midrule`` + section line before row ``i``.
    """
    align = align or "l" + "r" * (len(header) - 1)
    ncol = len(header)
    lines = ["% kfold / comparison table, needs \\usepackage{booktabs}"]
    if caption or label:
        lines += ["\\begin{table}[t]", "\\centering"]
        if caption:
            lines.append(f"\\caption{{{latex_escape(caption)}}}")
        if label:
            lines.append(f"\\label{{{label}}}")
    lines += [f"\\begin{{tabular}}{{{align}}}", "\\toprule",
              " & ".join(latex_escape(h) for h in header) + " \\\\", "\\midrule"]
    for i, row in enumerate(rows):
        sec = sections[i] if sections else None
        if sec:
            if i > 0:
                lines.append("\\midrule")
            lines.append(f"\\multicolumn{{{ncol}}}{{l}}{{\\textit{{{latex_escape(sec)}}}}} \\\\")
        cells = []
        for j, c in enumerate(row):
            e = latex_escape(c)
            if bold is not None and bold[i][j]:
                e = f"\\textbf{{{e}}}"
            cells.append(e)
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"\\par\\smallskip{{\\footnotesize Note: {latex_escape(n)}.}}" for n in notes]
    if caption or label:
        lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def _value_columns(table: pd.DataFrame) -> List[str]:
    return [c for c in table.columns if c not in ("Section", "Metric")]


def _sectioned(table: pd.DataFrame):
    """Rows and the section name that starts each new section (None otherwise)."""
    rows, sections, last = [], [], None
    for _, r in table.iterrows():
        sec = r["Section"]
        sections.append(sec if sec != last else None)
        last = sec
        rows.append([r["Metric"]] + [r[l] for l in _value_columns(table)])
    return rows, sections


def folds_without_detections(folds: Sequence[MetricsLike], fold_ids: Sequence[int] = None) -> List[int]:
    """The fold numbers (``fold_ids``, default 1..k) whose detector found no hip: pooled detection
    recall exactly 0 over at least one side (a fold without the metric, e.g. ``--use_gt_box``, is not one)."""
    ids = list(fold_ids) if fold_ids is not None else list(range(1, len(folds) + 1))
    if len(ids) != len(folds):
        raise ValueError(f"{len(folds)} folds but {len(ids)} fold ids")
    return [i for i, f in zip(ids, folds) if to_flat(f).get(DETECTION_RECALL, float("nan")) == 0]


def no_detection_notes(folds: Sequence[int]) -> List[str]:
    """``["fold 2: no hip detected; the detector is undertrained or the data differ", ...]``."""
    return [f"fold {i}: {NO_HIP}" for i in folds]


def _population_note(pooled: bool) -> str:
    return ("Left, right and both hips: mean ± SD (ddof = 1) of the fold point estimates. "
            + ("All folds pooled: the value over every hip of every fold, with a bootstrap 95% CI over those "
               "hips where given. " if pooled else "")
            + "AI rows count every detected hip (a hip failed by the plausibility gate with its measured AI); "
            "IHDI rows count every detected hip, a failed hip as an error (in κ: the grade farthest from its "
            "reference); the gradable rows count the hips that passed the gate. ")


def kfold_markdown(summary: pd.DataFrame, rows: Sequence[Metric] = COMPACT_ROWS, title: str = None,
                   notes: Sequence[str] = (), pooled: Optional[MetricsLike] = None) -> str:
    table = paper_table(summary, rows, pooled)
    k = sum(1 for c in summary.columns if str(c).startswith("fold_"))
    header = ["Metric"] + _value_columns(table)
    body, sections = _sectioned(table)
    md_rows = []
    for sec, row in zip(sections, body):
        if sec:
            md_rows.append([f"**{sec}**"] + [""] * (len(header) - 1))
        md_rows.append(row)
    head = f"**{title}**\n\n" if title else ""
    note = (f"\n{k} folds. " + _population_note(pooled is not None)
            + "Left/right are image sides (the image-left hip is the patient's right). MRE: mean radial error; "
            "NME: normalised mean error; SDR: success detection rate; LoA: Bland–Altman limits of agreement; "
            "screening: grade I vs II–IV, positive = II–IV.\n")
    note += "".join(f"\n**Note:** {n}.\n" for n in notes)
    return head + markdown_table(header, md_rows) + note


def kfold_latex(summary: pd.DataFrame, rows: Sequence[Metric] = COMPACT_ROWS, caption: str = None,
                label: str = None, notes: Sequence[str] = (), pooled: Optional[MetricsLike] = None) -> str:
    table = paper_table(summary, rows, pooled)
    k = sum(1 for c in summary.columns if str(c).startswith("fold_"))
    body, sections = _sectioned(table)
    caption = caption or (f"Results of {k}-fold cross-validation, mean ± SD of the fold estimates"
                          + (", and over all hips pooled with a bootstrap 95% CI." if pooled is not None else "."))
    return latex_table(["Metric"] + _value_columns(table), body, sections=sections,
                       caption=caption, label=label or "tab:kfold", notes=notes)


def write_kfold_summary(folds: Sequence[MetricsLike], out_dir, prefix: str = "kfold_summary",
                        title: str = None, fold_ids: Sequence[int] = None,
                        pooled: Optional[MetricsLike] = None) -> Dict[str, Path]:
    """Write ``{prefix}.csv`` (every metric, mean/SD/per fold), ``{prefix}.md`` and ``{prefix}.tex``
    (the compact paper table, ``COMPACT_ROWS``) and ``{prefix}_full.md`` / ``_full.tex`` (every
    curated row, ``PAPER_ROWS``). ``pooled``: the metrics of all folds' hips together (adds the pooled
    column with its CI). ``fold_ids`` (default 1..k) name the folds in the warning and footnote for a
    fold without detections."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes = no_detection_notes(folds_without_detections(folds, fold_ids))
    for n in notes:
        log.warning(n)
    summary = kfold_summary(folds)
    paths = {"csv": out / f"{prefix}.csv", "md": out / f"{prefix}.md", "tex": out / f"{prefix}.tex",
             "full_md": out / f"{prefix}_full.md", "full_tex": out / f"{prefix}_full.tex"}
    summary.to_csv(paths["csv"])
    paths["md"].write_text(kfold_markdown(summary, COMPACT_ROWS, title=title, notes=notes, pooled=pooled))
    paths["tex"].write_text(kfold_latex(summary, COMPACT_ROWS, notes=notes, pooled=pooled))
    paths["full_md"].write_text(kfold_markdown(summary, PAPER_ROWS, title=title, notes=notes, pooled=pooled))
    paths["full_tex"].write_text(kfold_latex(summary, PAPER_ROWS, notes=notes, pooled=pooled,
                                             label="tab:kfold-full"))
    return paths


def read_kfold_summary(path) -> pd.DataFrame:
    """A ``kfold_summary.csv`` back as the frame ``kfold_summary`` returned."""
    return pd.read_csv(path, index_col="metric")


# ------------------------------------------------------------------ experiment comparison
def _as_summary(m) -> pd.DataFrame:
    if isinstance(m, pd.DataFrame):
        if "mean" not in m.columns:
            raise ValueError("a summary DataFrame needs 'mean' and 'sd' columns (see kfold_summary)")
        return m if "metric" not in m.columns else m.set_index("metric")
    if isinstance(m, (str, Path)) and Path(m).name.endswith(".csv"):
        df = pd.read_csv(m)
        if "mean" in df.columns:
            return df.set_index("metric")
    if isinstance(m, (list, tuple)) and m and not isinstance(m[0], tuple):
        return kfold_summary(m)  # a list of fold metrics
    return kfold_summary([m])    # one run: sd NaN


def compare_experiments(experiments: Mapping[str, object],
                        columns: Sequence[Metric] = COMPARE_COLUMNS) -> pd.DataFrame:
    """One row per experiment (index ``experiment``) with, per curated column, the value in
    display units (``"<label>"``) and its SD across folds (``"<label> SD"``, NaN for one run).

    Each value of ``experiments`` is one run's metrics (any form ``to_flat`` takes), a list
    of per-fold metrics, or a ``kfold_summary`` frame / csv. Columns absent from every
    experiment are dropped.
    """
    rows = []
    for name, m in experiments.items():
        s = _as_summary(m)
        row = {"experiment": str(name)}
        for c in columns:
            mean, sd = _lookup(s, c, "pooled")
            row[c.label], row[f"{c.label} SD"] = mean, sd
        rows.append(row)
    df = pd.DataFrame(rows).set_index("experiment")
    keep = [c for c in columns if df[c.label].notna().any()]
    df = df[[x for c in keep for x in (c.label, f"{c.label} SD")]]
    df.attrs["columns"] = keep
    return df


def _compare_cells(df: pd.DataFrame, columns: Sequence[Metric] = None):
    cols = columns or df.attrs.get("columns") or [c for c in COMPARE_COLUMNS if c.label in df.columns]
    header = ["Experiment"] + [c.label for c in cols]
    rows, bold = [], []
    best = {}
    for c in cols:
        v = df[c.label].to_numpy(dtype=float)
        fin = np.round(v[np.isfinite(v)], c.decimals)
        if c.higher is None or len(fin) < 2 or np.all(fin == fin[0]):  # nothing to single out
            best[c.label] = None
        else:
            target = np.nanmax(v) if c.higher else np.nanmin(v)
            best[c.label] = round(target, c.decimals)
    for name, r in df.iterrows():
        cells, b = [str(name)], [False]
        for c in cols:
            m, s = r[c.label], r.get(f"{c.label} SD", float("nan"))
            cells.append(format_mean_sd(m, s, c.decimals))
            b.append(best[c.label] is not None and math.isfinite(m) and round(m, c.decimals) == best[c.label])
        rows.append(cells)
        bold.append(b)
    return header, rows, bold, cols


def comparison_markdown(df: pd.DataFrame, title: str = None) -> str:
    header, rows, bold, _ = _compare_cells(df)
    rows = [[f"**{c}**" if b and c != DASH else c for c, b in zip(row, brow)] for row, brow in zip(rows, bold)]
    sd = any(df[f"{c} SD"].notna().any() for c in header[1:] if f"{c} SD" in df.columns)
    note = ("\nValues are mean ± SD across folds. " if sd else "\n") + \
        "Best value per column in bold. Pooled over both hips.\n"
    head = f"**{title}**\n\n" if title else ""
    return head + markdown_table(header, rows) + note


def comparison_latex(df: pd.DataFrame, caption: str = None, label: str = "tab:comparison") -> str:
    header, rows, bold, _ = _compare_cells(df)
    return latex_table(header, rows, caption=caption or "Comparison of experiments (best value in bold).",
                       label=label, bold=bold)


def write_comparison(df: pd.DataFrame, out_dir, prefix: str = "comparison", title: str = None,
                     notes: Sequence[str] = ()) -> Dict[str, Path]:
    """Write ``{prefix}.csv`` (numbers), ``{prefix}.md`` and ``{prefix}.tex`` (formatted, best in bold).
    ``notes``: lines listed under the markdown table (e.g. the paired tests)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / f"{prefix}.csv", "md": out / f"{prefix}.md", "tex": out / f"{prefix}.tex"}
    df.to_csv(paths["csv"])
    md = comparison_markdown(df, title)
    if notes:
        md = md.rstrip("\n") + "\n\nPaired tests of the per-hip AI errors:\n\n" + "".join(f"- {n}\n" for n in notes)
    paths["md"].write_text(md)
    paths["tex"].write_text(comparison_latex(df))
    return paths


# ------------------------------------------------------------------ headline
HEADLINE_ROWS: Tuple[Tuple[str, str, float, int], ...] = (
    ("Detection recall, IoU >= 0.5", "detection/pooled/recall_iou0.5", 1, 3),
    ("Detection recall (any box)", "detection/pooled/recall", 1, 3),
    ("Keypoint MRE (px)", "keypoints/px/pooled/mean", 1, 2),
    ("Keypoint MRE (mm)", "keypoints/mm/pooled/mean", 1, 2),
    ("AI MAE (deg)", "ai/pooled/mae", 1, 2),
    ("AI ICC(2,1)", "ai/pooled/icc2_1", 1, 3),
    ("IHDI accuracy", "ihdi/pooled/accuracy", 1, 3),
    ("IHDI kappa (quadratic)", "ihdi/pooled/kappa_quadratic", 1, 3),
    ("Screening sensitivity (II-IV)", "ihdi/pooled/screening/sensitivity", 1, 3),
    ("Screening specificity", "ihdi/pooled/screening/specificity", 1, 3),
    ("Gradable hips (plausibility gate)", "gate/pooled/gradable_rate", 1, 3),
    ("AI MAE, gradable hips (deg)", "ai_gradable/pooled/mae", 1, 2),
    ("IHDI accuracy, gradable hips", "ihdi_gradable/pooled/accuracy", 1, 3),
    ("AI 95% interval coverage", "ai_interval/pooled/coverage", 1, 3),
    ("AI 95% interval mean width (deg)", "ai_interval/pooled/mean_width", 1, 2),
    ("CE MAE (deg)", "ce/pooled/mae", 1, 2),
    ("Toennis accuracy", "tonnis/pooled/accuracy", 1, 3),
    ("Toennis kappa (quadratic)", "tonnis/pooled/kappa_quadratic", 1, 3),
    ("h MAE (px)", "h_px/pooled/mae", 1, 2),
    ("d MAE (px)", "d_px/pooled/mae", 1, 2),
)


check_metric_keys([key for _, key, _, _ in HEADLINE_ROWS], "the headline table")
check_metric_keys([DETECTION_RECALL], "the k-fold no-detection note")


def headline_rows(metrics: MetricsLike) -> List[Tuple[str, str]]:
    """The few numbers a reader looks at first, as (label, formatted value); missing ones left out."""
    flat = to_flat(metrics)
    rows = []
    for label, key, scale, nd in HEADLINE_ROWS:
        v = _num(flat.get(key))
        if key in flat and not math.isnan(v):
            if key == INTERVAL_COVERAGE.format(side="pooled") and _uninformative(lambda k: _num(flat.get(k)), "pooled"):
                rows.append((label, f"{UNINFORMATIVE} (mean width > {AI_INTERVAL_MAX_WIDTH_DEG:g} deg)"))
                continue
            rows.append((label, f"{v * scale:.{nd}f}"))
            if key == "ai/pooled/mae":
                rows += _ci_row(flat, "ai/pooled/mae", "AI MAE 95% CI (deg, bootstrap over hips)", nd)
    return rows


def _ci_row(flat: Mapping, key: str, label: str, nd: int) -> List[Tuple[str, str]]:
    """[(label, "lo–hi")] from ``{key}_ci_lo`` / ``{key}_ci_hi``, or [] when they are missing."""
    lo, hi = _num(flat.get(key + "_ci_lo")), _num(flat.get(key + "_ci_hi"))
    if math.isnan(lo) or math.isnan(hi):
        return []
    return [(label, f"{lo:.{nd}f}{DASH}{hi:.{nd}f}")]


def headline_table(metrics: MetricsLike) -> str:
    """A Markdown table of ``headline_rows`` (prints well in a terminal too)."""
    return markdown_table(["Metric", "Value"], headline_rows(metrics), align=["l", "r"])
