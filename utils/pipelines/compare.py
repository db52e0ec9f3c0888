"""Compare two annotation sources of the same images (``compare_annotations.py``).

A source is a dataset folder (``annotations/`` by stem) or a ``predictions.csv`` written
by ``predict_hip_crop_keypoints.py`` (its ``pred_x_{j}``/``pred_y_{j}`` columns). Images
are matched by stem. Differences are B - A. docs/study_tools.md describes the outputs:

```
<output_dir>/agreement.json     n_images, keypoints, ai, ihdi, matching (the lists below)
<output_dir>/agreement.md       the same as tables
<output_dir>/per_image.csv      per image: distances, AI and IHDI of both sources
<output_dir>/plots/*.png        AI scatter, Bland-Altman, difference histogram, px vs angle, per-image bars, IHDI
<output_dir>/overlays/<bin>/<stem>_compare.png   both sources on the image, by mean distance (px)
```
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from datasets.formats import load_dataset
from datasets.layouts import SIDES, get_layout, layout_for_num_points
from utils.errors import ItemError, ProblemLog, UserError
from utils.evaluation import agreement as A
from utils.evaluation import agreement_plots as AP
from utils.evaluation import schema
from utils.evaluation.metrics import read_predictions, to_jsonable
from datasets.image_io import read_image
from utils.evaluation.plots import save_overlay
from utils.hip_geometry import hip_frames

log = logging.getLogger("hipkp")

# overlay subfolders by mean keypoint distance in px, as the original study's scripts sort them
DISTANCE_BINS = ((0.0, 2.5, "0-2.5"), (2.5, 5.0, "2.5-5"), (5.0, 7.5, "5-7.5"), (7.5, 10.0, "7.5-10"),
                 (10.0, 12.5, "10-12.5"), (12.5, 15.0, "12.5-15"), (15.0, math.inf, "15+"))


def distance_bin(d: float) -> str:
    """The overlay subfolder of a mean distance ``d`` (px); ``"n-a"`` when it is NaN."""
    if not np.isfinite(d):
        return "n-a"
    for lo, hi, name in DISTANCE_BINS:
        if lo <= d < hi:
            return name
    return DISTANCE_BINS[-1][2]


@dataclass
class Item:
    stem: str
    keypoints: np.ndarray                 # (N, 2), NaN for a missing point
    image_path: Optional[Path] = None
    spacing_mm: Optional[float] = None
    ungradable: Dict[str, str] = field(default_factory=dict)   # {side: reasons}: the source's gate failed it


@dataclass
class Source:
    label: str
    path: Path
    kind: str                             # "dataset" or "predictions"
    items: Dict[str, Item] = field(default_factory=dict)


def read_source(path, label: str, problems: ProblemLog) -> Source:
    """A dataset folder or a predictions CSV as ``{stem: Item}``; ``UserError`` when neither."""
    path = Path(path)
    if path.is_dir():
        src = Source(label, path, "dataset")
        for rec in load_dataset(path, require_annotations=True, problems=problems):
            src.items[rec.stem] = Item(rec.stem, np.asarray(rec.keypoints, dtype=float), rec.image_path,
                                       rec.pixel_spacing_mm)
        return src
    if path.is_file() and path.suffix.lower() == ".csv":
        return _read_predictions_source(path, label, problems)
    if not path.exists():
        raise UserError(f"{label}: {path} not found")
    raise UserError(f"{label}: {path} is neither a dataset folder nor a predictions .csv")


def _read_predictions_source(path: Path, label: str, problems: ProblemLog) -> Source:
    try:
        df = read_predictions(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{label}: cannot read {path} ({type(e).__name__}: {e})") from None
    x0 = schema.column("point", kind="pred", axis="x", j=0)
    if "stem" not in df.columns or x0 not in df.columns:
        raise UserError(f"{label}: {path} has no stem/{x0} columns (not a predictions.csv from "
                        "predict_hip_crop_keypoints.py?)")
    try:
        lay = layout_for_num_points(schema.point_count(df.columns))
    except ValueError as e:
        raise UserError(f"{label}: {path}: {e}") from None
    src = Source(label, path, "predictions")
    seen = set()
    for _, row in df.iterrows():
        stem = str(row["stem"])
        if stem in seen:
            problems.add(f"{path}:{stem}", "duplicate stem in the predictions file (first row kept)")
            continue
        seen.add(stem)
        kps = np.array([[pd.to_numeric(row.get(c), errors="coerce") for c in xy]
                        for xy in schema.point_columns(lay.num_points)], dtype=float)
        img = row.get("image")
        img = Path(str(img)) if isinstance(img, str) and img else None
        sp = pd.to_numeric(row.get("pixel_spacing_mm"), errors="coerce")
        src.items[stem] = Item(stem, kps, img, float(sp) if np.isfinite(sp) and sp > 0 else None,
                               _source_gate(row, kps, lay))
    if not src.items:
        raise UserError(f"{label}: {path} has no rows")
    return src


def _source_gate(row, kps: np.ndarray, lay) -> Dict[str, str]:
    """``{side: reasons}`` of the hips a predictions file marks ungradable: a non-empty
    ``qc_{side}`` (its plausibility gate's reasons), or a grade 0 in ``pred_ihdi_{side}`` of a hip
    with points (``ungradable``). A side without points is missing, not ungradable."""
    out = {}
    for s in SIDES:
        qc = row.get(schema.column("qc", side=s))
        qc = "" if qc is None or (isinstance(qc, float) and not math.isfinite(qc)) else str(qc).strip()
        grade = pd.to_numeric(row.get(schema.column("ihdi", kind="pred", side=s)), errors="coerce")
        if qc:
            out[s] = qc
        elif grade == 0 and np.all(np.isfinite(kps[lay.side_slice(s)])):
            out[s] = "ungradable"
    return out


def match_sources(a: Source, b: Source) -> Dict:
    """Stems in both, in A only, in B only, and those skipped for differing point counts."""
    common = sorted(set(a.items) & set(b.items))
    only_a, only_b = sorted(set(a.items) - set(b.items)), sorted(set(b.items) - set(a.items))
    if not common:
        raise UserError(f"no overlapping images: {a.label} ({a.path}, {len(a.items)} images) and {b.label} "
                        f"({b.path}, {len(b.items)} images) share no stem")
    counts = [(s, len(a.items[s].keypoints), len(b.items[s].keypoints)) for s in common]
    mismatch = [{"stem": s, "points_a": na, "points_b": nb} for s, na, nb in counts if na != nb]
    used = [s for s, na, nb in counts if na == nb]
    if not used:
        raise UserError(f"no overlapping image has the same number of points in {a.label} and {b.label} "
                        f"(e.g. {mismatch[0]['stem']}: {mismatch[0]['points_a']} vs {mismatch[0]['points_b']})")
    for m in mismatch:
        log.warning("skipped %s: %d points in %s, %d in %s", m["stem"], m["points_a"], a.label, m["points_b"], b.label)
    lays = {len(a.items[s].keypoints) for s in used}
    if len(lays) > 1:
        raise UserError(f"the matched images mix keypoint layouts ({sorted(lays)} points)")
    return {"common": used, "only_a": only_a, "only_b": only_b, "point_count_mismatch": mismatch,
            "layout": layout_for_num_points(lays.pop()).name}


def _measure(kps: np.ndarray, lay, ungradable: Optional[Dict[str, str]] = None) -> Dict[str, Dict[str, float]]:
    """``{side: {ai, ihdi}}`` measured on ``kps``; a hip in ``ungradable`` keeps its AI and gets
    grade 0 (its source's gate failed it, so it is graded nothing)."""
    out = {s: {"ai": np.nan, "ihdi": np.nan} for s in SIDES}
    if not np.all(np.isfinite(kps[[lay.triradiate["left"], lay.triradiate["right"]]])):
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        f = hip_frames(kps, lay)
    for s in SIDES:
        if np.all(np.isfinite(kps[lay.side_slice(s)])):
            out[s] = {"ai": float(f[s]["ai_deg"]), "ihdi": 0.0 if s in (ungradable or {}) else float(f[s]["grade"])}
    return out


def compare_sources(a: Source, b: Source, match: Dict, alpha: float = A.ALPHA, n_resamples: int = 2000,
                    seed: int = 0):
    """``(agreement dict, per-image DataFrame)`` of the matched images."""
    lay = get_layout(match["layout"])
    stems = match["common"]
    ka = np.stack([a.items[s].keypoints for s in stems])
    kb = np.stack([b.items[s].keypoints for s in stems])
    spacing = np.array([a.items[s].spacing_mm or b.items[s].spacing_mm or np.nan for s in stems], dtype=float)
    kd = A.keypoint_distances(ka, kb, lay, spacing)
    rows = []
    for i, s in enumerate(stems):
        ma, mb = _measure(ka[i], lay, a.items[s].ungradable), _measure(kb[i], lay, b.items[s].ungradable)
        r = {"stem": s, "mean_px": kd["per_image_px"][i], "mean_mm": kd["per_image_mm"][i],
             "pixel_spacing_mm": spacing[i]}
        for side in SIDES:
            r[f"ai_a_{side}"], r[f"ai_b_{side}"] = ma[side]["ai"], mb[side]["ai"]
            r[f"ai_diff_{side}"] = mb[side]["ai"] - ma[side]["ai"]
            r[f"ihdi_a_{side}"], r[f"ihdi_b_{side}"] = ma[side]["ihdi"], mb[side]["ihdi"]
            r[f"qc_a_{side}"] = a.items[s].ungradable.get(side, "")
            r[f"qc_b_{side}"] = b.items[s].ungradable.get(side, "")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r["mean_abs_ai_diff"] = float(np.nanmean([abs(r["ai_diff_left"]), abs(r["ai_diff_right"])]))
        r["overlay_bin"] = distance_bin(r["mean_px"])
        rows.append(r)
    df = pd.DataFrame(rows)
    ai_a = np.concatenate([df[f"ai_a_{s}"].to_numpy(float) for s in SIDES])
    ai_b = np.concatenate([df[f"ai_b_{s}"].to_numpy(float) for s in SIDES])
    g_a = np.concatenate([df[f"ihdi_a_{s}"].to_numpy(float) for s in SIDES])
    g_b = np.concatenate([df[f"ihdi_b_{s}"].to_numpy(float) for s in SIDES])
    ai = A.ai_agreement(ai_a, ai_b, alpha)
    ai["by_side"] = {s: {k: v for k, v in A.ai_agreement(df[f"ai_a_{s}"], df[f"ai_b_{s}"], alpha).items()
                         if k in ("n", "mae", "mean_diff", "sd_diff", "icc21", "icc31")} for s in SIDES}
    ihdi = A.ihdi_agreement(g_a, g_b, n_resamples=n_resamples, seed=seed)
    # each source's gate: a hip it failed is graded nothing (grade 0, left out of the grade agreement)
    ihdi["n_ungradable_a"], ihdi["n_ungradable_b"] = ihdi["n_ungradable_gt"], ihdi["n_ungradable_pred"]
    ihdi["ungradable_reasons"] = {lab: _reason_counts(df, k) for lab, k in (("a", "qc_a"), ("b", "qc_b"))}
    gradable = (g_a != 0) & (g_b != 0)
    ai_gradable = A.ai_agreement(np.where(gradable, ai_a, np.nan), np.where(gradable, ai_b, np.nan), alpha)
    kp = {k: v for k, v in kd.items() if not k.startswith("per_image")}
    result = {
        "label_a": a.label, "label_b": b.label, "source_a": str(a.path), "source_b": str(b.path),
        "layout": lay.name, "difference": f"{b.label} - {a.label}",
        "n_images": len(stems), "n_only_a": len(match["only_a"]), "n_only_b": len(match["only_b"]),
        "n_point_count_mismatch": len(match["point_count_mismatch"]),
        "keypoints": kp, "ai": ai, "ai_gradable": ai_gradable, "ihdi": ihdi,
        "matching": {"only_a": match["only_a"], "only_b": match["only_b"],
                     "point_count_mismatch": match["point_count_mismatch"]},
    }
    return to_jsonable(result), df


def _reason_counts(df: pd.DataFrame, prefix: str) -> Dict[str, int]:
    """``{reason: hips}`` over both sides' ``{prefix}_{side}`` cells (reasons joined by ";")."""
    counts: Dict[str, int] = {}
    for s in SIDES:
        for cell in df[f"{prefix}_{s}"].fillna("").astype(str):
            for r in filter(None, cell.split(";")):
                counts[r] = counts.get(r, 0) + 1
    return counts


def _cell(v, nd=2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def agreement_markdown(res: Dict, plots: List[str]) -> str:
    """``agreement.md``: the headline numbers as tables, the matching lists and the plots."""
    la, lb = res["label_a"], res["label_b"]
    kp, ai, ih = res["keypoints"], res["ai"], res["ihdi"]
    test, norm = ai["test"], ai["normality"]
    test_name = {"paired_t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank"}.get(test["name"], "none")
    L = [f"# Agreement: {lb} vs {la}", "",
         f"- A = **{la}**: `{res['source_a']}`", f"- B = **{lb}**: `{res['source_b']}`",
         f"- Layout `{res['layout']}`; differences are B − A.",
         f"- {res['n_images']} images compared; {res['n_only_a']} only in A, {res['n_only_b']} only in B, "
         f"{res['n_point_count_mismatch']} skipped (point counts differ).", "",
         "## Keypoints (radial distance)", "",
         "| | mean | SD | median | max |", "| :--- | ---: | ---: | ---: | ---: |",
         f"| px ({kp['n_points']} points) | {_cell(kp['mean_px'])} | {_cell(kp['sd_px'])} | "
         f"{_cell(kp['median_px'])} | {_cell(kp['max_px'])} |"]
    if kp["n_images_mm"]:
        L.append(f"| mm ({kp['n_images_mm']} images with spacing) | {_cell(kp['mean_mm'])} | {_cell(kp['sd_mm'])} | "
                 f"{_cell(kp['median_mm'])} | {_cell(kp['max_mm'])} |")
    else:
        L.append("| mm | n/a (no pixel spacing) | | | |")
    L += ["", "| keypoint | mean px | SD px | mean mm | n |", "| :--- | ---: | ---: | ---: | ---: |"]
    for name, v in kp["per_keypoint"].items():
        L.append(f"| {name} | {_cell(v['mean_px'])} | {_cell(v['sd_px'])} | {_cell(v['mean_mm'])} | {v['n']} |")
    ba = ai["bland_altman"]
    L += ["", f"## Acetabular index ({ai['n']} hips measured in both; a hip a gate failed keeps its AI)", "",
          "| metric | value |", "| :--- | ---: |",
          f"| MAE (°) | {_cell(ai['mae'])} |",
          f"| MAE, the {res['ai_gradable']['n']} hips both sources graded (°) | {_cell(res['ai_gradable']['mae'])} |",
          f"| ICC(2,1), the hips both sources graded [95% CI] | "
          f"{A.fmt_ci(res['ai_gradable']['icc21'], res['ai_gradable']['icc21_ci'])} |",
          f"| mean signed difference B − A (°) | {_cell(ai['mean_diff'])} |",
          f"| SD of the difference (°) | {_cell(ai['sd_diff'])} |",
          f"| ICC(2,1), absolute agreement [95% CI] | {A.fmt_ci(ai['icc21'], ai['icc21_ci'])} |",
          f"| ICC(3,1), consistency [95% CI] | {A.fmt_ci(ai['icc31'], ai['icc31_ci'])} |",
          f"| Bland–Altman bias (°) | {_cell(ba['bias'])} |",
          f"| 95% limits of agreement (°) | {_cell(ba['loa_low'])} to {_cell(ba['loa_high'])} |",
          f"| Pearson r | {_cell(ai['pearson_r'], 3)} |",
          f"| Shapiro–Wilk on the differences: W, p | {_cell(norm['statistic'], 3)}, {_cell(norm['p'], 4)} |",
          f"| paired test (chosen: {test_name}): statistic, p | {_cell(test['statistic'], 3)}, {_cell(test['p'], 4)} |",
          "", f"Rule: {test['rule']}." + (f" {test['note']}." if test.get("note") else ""), "",
          "| side | n | MAE (°) | mean diff (°) | ICC(2,1) | ICC(3,1) |", "| :--- | ---: | ---: | ---: | ---: | ---: |"]
    for s, v in ai["by_side"].items():
        L.append(f"| {s} (image) | {v['n']} | {_cell(v['mae'])} | {_cell(v['mean_diff'])} | {_cell(v['icc21'], 3)} | "
                 f"{_cell(v['icc31'], 3)} |")
    L += ["", f"## IHDI grade ({ih['n']} hips)", "",
          f"- Accuracy {_cell(ih['accuracy'], 3)}; quadratic-weighted κ "
          f"{A.fmt_ci(ih['kappa_quadratic'], ih['kappa_quadratic_ci'])} ({ih['kappa_ci_method']}).",
          f"- Over the {ih['n']} hips both sources graded. Ungradable in either source: {ih['n_ungradable']} "
          f"({la}: {ih['n_ungradable_a']}, {lb}: {ih['n_ungradable_b']}; a hip a source's plausibility gate "
          f"failed is graded nothing); missing: {ih['n_missing']}.",
          f"- Reasons: {la}: {_reasons_text(ih['ungradable_reasons']['a'])}; "
          f"{lb}: {_reasons_text(ih['ungradable_reasons']['b'])}.", "",
          f"| {la} \\ {lb} | I | II | III | IV |", "| :--- | ---: | ---: | ---: | ---: |"]
    for r in ("I", "II", "III", "IV"):
        L.append(f"| {r} | " + " | ".join(str(ih["confusion"][f"gt_{r}"][f"pred_{c}"]) for c in ("I", "II", "III", "IV"))
                 + " |")
    m = res["matching"]
    L += ["", "## Matching", ""]
    for key, what in (("only_a", f"only in {la}"), ("only_b", f"only in {lb}")):
        items = m[key]
        L.append(f"- {what} ({len(items)}): " + (", ".join(items[:50]) + (" ..." if len(items) > 50 else "")
                                                 if items else "none"))
    mm = m["point_count_mismatch"]
    L.append(f"- skipped, point counts differ ({len(mm)}): "
             + (", ".join(f"{x['stem']} ({x['points_a']} vs {x['points_b']})" for x in mm) if mm else "none"))
    if plots:
        L += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(L) + "\n"


def _reasons_text(counts: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def _image_for(stem: str, a: Source, b: Source):
    for src in (a, b):
        it = src.items[stem]
        if it.image_path is not None and Path(it.image_path).is_file():
            return read_image(it.image_path)[0]
    raise ItemError(f"{stem}: no readable image in either source")


def write_overlays(a: Source, b: Source, df: pd.DataFrame, layout, out: Path, problems: ProblemLog,
                   max_overlays: Optional[int] = None) -> int:
    """Both sources on each image (A: green crosses, B: red dots and its lines) in
    ``overlays/<distance bin>/``; returns the number written."""
    n = 0
    for _, r in df.iterrows():
        if max_overlays is not None and n >= max_overlays:
            break
        stem = r["stem"]
        try:
            img = _image_for(stem, a, b)
        except ItemError as e:
            problems.add(stem, f"overlay not drawn: {e}")
            continue
        title = (f"{stem}: {a.label} = green crosses, {b.label} = red dots; mean distance "
                 f"{_cell(r['mean_px'])} px")
        save_overlay(out / "overlays" / r["overlay_bin"] / f"{stem}_compare.png", img, b.items[stem].keypoints,
                     layout, gt_kps=a.items[stem].keypoints, title=title)
        n += 1
    return n


def write_plots(res: Dict, df: pd.DataFrame, out: Path) -> List[str]:
    la, lb = res["label_a"], res["label_b"]
    pdir = out / "plots"
    ai_a = {s: df[f"ai_a_{s}"].to_numpy(float) for s in SIDES}
    ai_b = {s: df[f"ai_b_{s}"].to_numpy(float) for s in SIDES}
    diffs = np.concatenate([df[f"ai_diff_{s}"].to_numpy(float) for s in SIDES])
    paths = [
        AP.plot_ai_agreement_scatter(ai_a, ai_b, pdir / "ai_scatter.png", la, lb, res["ai"]),
        AP.plot_ai_bland_altman(ai_a, ai_b, pdir / "ai_bland_altman.png", la, lb, res["ai"]),
        AP.plot_diff_hist(diffs, pdir / "ai_diff_hist.png", la, lb, res["ai"]),
        AP.plot_px_vs_angle(df["mean_px"], df["mean_abs_ai_diff"], pdir / "px_vs_angle.png", la, lb),
        AP.plot_image_distances(list(df["stem"]), df["mean_px"], pdir / "image_distances.png", la, lb),
        AP.plot_ihdi_agreement(res["ihdi"]["confusion"], pdir / "ihdi_confusion.png", la, lb, res["ihdi"]),
    ]
    return [str(Path(p).relative_to(out)) for p in paths]


def run_compare(dataset_a, dataset_b, output_dir, label_a: str = "Dataset A", label_b: str = "Dataset B",
                overlays: bool = True, max_overlays: Optional[int] = None, alpha: float = A.ALPHA,
                n_resamples: int = 2000, seed: int = 0, strict: bool = False) -> Dict:
    """Compare ``dataset_a`` with ``dataset_b`` and write everything into ``output_dir``.

    Returns the agreement dict (as written to ``agreement.json``) with ``n_overlays`` and
    ``skipped`` (per-item problems, also in ``skipped.json``) added.
    """
    out = Path(output_dir)
    problems = ProblemLog(strict=strict)
    a = read_source(dataset_a, label_a, problems)
    b = read_source(dataset_b, label_b, problems)
    match = match_sources(a, b)
    res, df = compare_sources(a, b, match, alpha, n_resamples, seed)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "per_image.csv", index=False, float_format="%.4f")
    plots = write_plots(res, df, out)
    res["n_overlays"] = write_overlays(a, b, df, match["layout"], out, problems, max_overlays) if overlays else 0
    res["skipped"] = problems.to_dicts()
    (out / "agreement.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "agreement.md").write_text(agreement_markdown(res, plots))
    problems.write(out / "skipped.json")
    return res


def print_summary(res: Dict, output_dir) -> None:
    ai, ih, kp = res["ai"], res["ihdi"], res["keypoints"]
    print(f"{res['n_images']} images ({res['n_only_a']} only in {res['label_a']}, {res['n_only_b']} only in "
          f"{res['label_b']}, {res['n_point_count_mismatch']} skipped): mean distance {_cell(kp['mean_px'])} px; "
          f"AI MAE {_cell(ai['mae'])} deg, ICC(2,1) {A.fmt_ci(ai['icc21'], ai['icc21_ci'])}, "
          f"{ai['test']['name']} p = {_cell(ai['test']['p'], 4)}; IHDI accuracy {_cell(ih['accuracy'], 3)}, "
          f"kappa {_cell(ih['kappa_quadratic'], 3)} -> {output_dir}/agreement.md")
