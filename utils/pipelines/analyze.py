"""Statistics and problems of one dataset folder (``analyze_dataset.py``).

Works for both layouts (``ihdi12``, ``mtddh8``), including MTDDH labels converted by
``python -m datasets.mtddh``. docs/study_tools.md describes the outputs:

```
<output_dir>/dataset_report.md     counts, distributions, problems and outliers, with the plots
<output_dir>/dataset_report.json   the same numbers
<output_dir>/per_image.csv         per image: size, spacing, hash, AI / IHDI per side, gate reasons, flags
<output_dir>/plots/*.png           AI per side, IHDI grades, left-right AI difference, image sizes, spacing
```

Problems are of three kinds:
- format problems: items ``datasets.formats.load_dataset`` skips (unreadable or malformed
  annotation/detection files), images without an annotation, missing detection or
  YOLO label files, labels that do not fit the image (``check_record``);
- outliers: a hip that fails ``utils.hip_geometry.plausibility_gate`` (its AI outside
  0-60 degrees is one of the gate's reasons, ``ai_out_of_range``);
- duplicates: images whose decoded pixels are the same (SHA-256 of the pixel array), whatever
  their file format or header (two DICOM files of one film with different tags are one image).

A plain folder of images (no ``images/``, no labels) is analysed too: sizes, spacing, duplicates.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from datasets.formats import check_record, load_dataset
from datasets.layouts import SIDES, get_layout
from utils.errors import ItemError, ProblemLog, UserError
from utils.evaluation import agreement_plots as AP
from utils.evaluation.metrics import GRADE_LABELS, to_jsonable
from utils.hip_geometry import AI_RANGE_DEG, format_reasons, hip_frames, plausibility_gate, summarize_gate
from datasets.image_io import is_dicom, read_image
from utils.hip_geometry import ce_angle

log = logging.getLogger("hipkp")


def file_hash(path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def pixel_hash(image: np.ndarray) -> str:
    """SHA-256 of a decoded image's shape, dtype and pixels (hex): equal for the same picture in
    two files whose bytes differ (headers, compression, DICOM tags)."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def image_facts(path) -> Dict:
    """``{width, height, pixel_spacing_mm}`` from the header (Pillow), or by decoding (DICOM and
    files Pillow cannot open; these also give the DICOM pixel spacing)."""
    if not is_dicom(path):
        try:
            from PIL import Image
            with Image.open(path) as im:
                w, h = im.size
            if w > 0 and h > 0:
                return {"width": int(w), "height": int(h), "pixel_spacing_mm": None}
        except Exception:
            pass
    img, info = read_image(path)
    return {"width": int(img.shape[1]), "height": int(img.shape[0]), "pixel_spacing_mm": info.get("pixel_spacing_mm")}


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def analyze_records(root: Path, records, problems: ProblemLog) -> pd.DataFrame:
    """One row per record: image facts, hashes (file and pixels), AI/IHDI per side, gate reasons and
    problem flags (the label-file flags only for a dataset folder, not for a plain image folder)."""
    labelled = (root / "images").is_dir()
    rows = []
    for rec in records:
        r: Dict = {"stem": rec.stem, "image": rec.image_path.name}
        flags = []
        try:
            facts = image_facts(rec.image_path)
        except ItemError as e:
            problems.add(rec.image_path, str(e))
            continue
        r.update(width=facts["width"], height=facts["height"])
        sp = rec.pixel_spacing_mm or facts["pixel_spacing_mm"]
        r["pixel_spacing_mm"] = float(sp) if sp else np.nan
        r["sha256"] = file_hash(rec.image_path)
        try:
            r["pixel_sha256"] = pixel_hash(read_image(rec.image_path)[0])
        except ItemError as e:
            problems.add(rec.image_path, str(e))
            continue
        if labelled and rec.keypoints is None:
            flags.append("no_annotation")
        if labelled and not (root / "detections" / f"{rec.stem}.json").exists():
            flags.append("no_detection_file")
        if labelled and not (root / "yolo_labels" / f"{rec.stem}.txt").exists():
            flags.append("no_yolo_label")
        try:
            check_record(rec, facts["width"], facts["height"])
        except ItemError as e:
            flags.append("labels_outside_image")
            problems.add(rec.image_path, str(e))
        for s in SIDES:
            r[f"ai_{s}"], r[f"ihdi_{s}"], r[f"qc_{s}"] = np.nan, np.nan, ""
        if rec.keypoints is not None:
            lay = get_layout(rec.layout)
            k = np.asarray(rec.keypoints, dtype=float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                f = hip_frames(k, lay)
                gate = plausibility_gate(k, facts["width"], layout=lay)
            for s, reasons in zip(SIDES, gate):
                r[f"ai_{s}"] = float(f[s]["ai_deg"])
                r[f"ihdi_{s}"] = int(f[s]["grade"])
                r[f"qc_{s}"] = format_reasons(reasons)
            if lay.name == "mtddh8":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    ce = ce_angle(k, lay)
                r["ce_left"], r["ce_right"] = float(ce[0]), float(ce[1])
            for s in SIDES:                     # metadata that disagrees with the keypoints
                m = _float(rec.meta.get(f"ai_{s}"))
                if np.isfinite(m) and abs(m - r[f"ai_{s}"]) > 0.05:
                    flags.append(f"metadata_ai_{s}_differs")
        r["ai_lr_diff"] = r["ai_left"] - r["ai_right"]
        r["flags"] = ";".join(flags)
        rows.append(r)
    df = pd.DataFrame(rows)
    if len(df):
        dup = df.groupby("pixel_sha256")["stem"].transform("count") > 1
        df["duplicate_of"] = ""
        for h, g in df[dup].groupby("pixel_sha256"):
            for i in g.index:
                df.at[i, "duplicate_of"] = ";".join(s for s in g["stem"] if s != df.at[i, "stem"])
    return df


def _describe(v) -> Dict:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0}
    return {"n": int(len(v)), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}


def summarize(df: pd.DataFrame, layout: Optional[str], problems: ProblemLog, n_files: int) -> Dict:
    out: Dict = {"layout": layout, "n_image_files": n_files, "n_images": int(len(df)),
                 "n_annotated": int(df["ai_left"].notna().sum()) if len(df) else 0}
    out["ai"] = {s: _describe(df[f"ai_{s}"]) for s in SIDES}
    out["ai"]["pooled"] = _describe(np.concatenate([df[f"ai_{s}"].to_numpy(float) for s in SIDES]))
    out["ai_lr_diff"] = _describe(df["ai_lr_diff"])
    out["ai_lr_abs_diff"] = _describe(np.abs(df["ai_lr_diff"].to_numpy(float)))
    out["ihdi"] = {s: {GRADE_LABELS[g - 1]: int((df[f"ihdi_{s}"] == g).sum()) for g in (1, 2, 3, 4)} for s in SIDES}
    for s in SIDES:
        out["ihdi"][s]["ungradable"] = int((df[f"ihdi_{s}"] == 0).sum())
    if "ce_left" in df.columns:
        out["ce"] = {s: _describe(df[f"ce_{s}"]) for s in SIDES}
    out["width"], out["height"] = _describe(df["width"]), _describe(df["height"])
    sizes = Counter(zip(df["width"].astype(int), df["height"].astype(int)))
    out["sizes"] = [{"width": w, "height": h, "n": n} for (w, h), n in sizes.most_common()]
    out["pixel_spacing_mm"] = _describe(df["pixel_spacing_mm"])
    annotated = df[df["ai_left"].notna() | df["ai_right"].notna()]
    out["gate"] = summarize_gate([c for s in SIDES for c in annotated[f"qc_{s}"]]) if len(annotated) else "no hips"
    lo, hi = AI_RANGE_DEG
    ai_all = {s: df[f"ai_{s}"].to_numpy(float) for s in SIDES}
    out_range = [{"stem": st, "side": s, "ai": float(v)} for s in SIDES
                 for st, v in zip(df["stem"], ai_all[s]) if np.isfinite(v) and not lo <= v <= hi]
    gate_fail = [{"stem": st, "side": s, "reasons": q} for s in SIDES for st, q in zip(df["stem"], df[f"qc_{s}"]) if q]
    dups = []
    if len(df):
        for h, g in df.groupby("pixel_sha256"):
            if len(g) > 1:
                dups.append(sorted(g["stem"]))
    flags = Counter(f for cell in df["flags"] for f in cell.split(";") if f)
    out["problems"] = {"skipped": problems.to_dicts(), "flags": dict(flags),
                       "flagged": [{"stem": st, "flags": fl} for st, fl in zip(df["stem"], df["flags"]) if fl]}
    out["outliers"] = {"ai_range_deg": [lo, hi], "ai_out_of_range": out_range, "gate_failures": gate_fail,
                       "duplicate_groups": sorted(dups)}
    return out


def _fmt(d: Dict, key: str, nd: int = 1) -> str:
    v = d.get(key)
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def report_markdown(root: Path, s: Dict, plots: List[str]) -> str:
    L = [f"# Dataset report: `{root}`", "",
         (f"- Layout `{s['layout']}`; " if s["layout"] else "- No annotations (a plain image folder, or none "
          "annotated); ") + f"{s['n_images']} images analysed ({s['n_image_files']} image files, "
         f"{s['n_annotated']} annotated, {len(s['problems']['skipped'])} items skipped).",
         f"- Plausibility gate: {s['gate']}.", "",
         "## Acetabular index (°)", "",
         "| side | n | mean | SD | min | median | max |", "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k in (*SIDES, "pooled"):
        d = s["ai"][k]
        L.append(f"| {k} | {d['n']} | {_fmt(d, 'mean')} | {_fmt(d, 'sd')} | {_fmt(d, 'min')} | {_fmt(d, 'median')} | "
                 f"{_fmt(d, 'max')} |")
    d, da = s["ai_lr_diff"], s["ai_lr_abs_diff"]
    L += ["", f"Left − right AI per image (image sides): mean {_fmt(d, 'mean', 2)}°, SD {_fmt(d, 'sd', 2)}°; "
              f"|left − right| mean {_fmt(da, 'mean', 2)}°, max {_fmt(da, 'max', 2)}°.", ""]
    if "ce" in s:
        L += ["CE angle (°): " + "; ".join(f"{k} mean {_fmt(s['ce'][k], 'mean')}, SD {_fmt(s['ce'][k], 'sd')}"
                                          for k in SIDES) + ".", ""]
    L += ["## IHDI grades (hips)", "", "| side | I | II | III | IV | ungradable |", "| :--- | ---: | ---: | ---: | ---: | ---: |"]
    for k in SIDES:
        g = s["ihdi"][k]
        L.append(f"| {k} | {g['I']} | {g['II']} | {g['III']} | {g['IV']} | {g['ungradable']} |")
    w, h, sp = s["width"], s["height"], s["pixel_spacing_mm"]
    sizes = ", ".join(f"{x['width']}x{x['height']} ({x['n']})" for x in s["sizes"][:8])
    L += ["", "## Images", "",
          f"- Width {_fmt(w, 'min', 0)}–{_fmt(w, 'max', 0)} px, height {_fmt(h, 'min', 0)}–{_fmt(h, 'max', 0)} px; "
          f"{len(s['sizes'])} distinct sizes; most common: {sizes}.",
          f"- Pixel spacing known for {sp['n']} of {s['n_images']} images"
          + (f": {_fmt(sp, 'min', 4)}–{_fmt(sp, 'max', 4)} mm/px, mean {_fmt(sp, 'mean', 4)}." if sp["n"] else "."),
          "", "## Problems", ""]
    sk = s["problems"]["skipped"]
    L.append(f"- Format problems, skipped ({len(sk)}): " + ("none" if not sk else ""))
    L += [f"  - `{x['item']}`: {x['problem']}" for x in sk[:100]]
    fl = s["problems"]["flags"]
    L.append("- Flags: " + (", ".join(f"{k} {v}" for k, v in sorted(fl.items())) if fl else "none"))
    L += [f"  - {x['stem']}: {x['flags']}" for x in s["problems"]["flagged"][:100]]
    o = s["outliers"]
    lo, hi = o["ai_range_deg"]
    L += ["", "## Outliers", "",
          f"- AI outside {lo:g}–{hi:g}° ({len(o['ai_out_of_range'])}): "
          + (", ".join(f"{x['stem']} {x['side']} {x['ai']:.1f}°" for x in o["ai_out_of_range"][:100]) or "none"),
          f"- Plausibility gate failures ({len(o['gate_failures'])} hips): "
          + ("none" if not o["gate_failures"] else "")]
    L += [f"  - {x['stem']} {x['side']}: {x['reasons']}" for x in o["gate_failures"][:100]]
    L.append(f"- Duplicate images by decoded pixels ({len(o['duplicate_groups'])} groups): "
             + ("; ".join(", ".join(g) for g in o["duplicate_groups"]) or "none"))
    if plots:
        L += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(L) + "\n"


def run_analysis(dataset, output_dir=None, strict: bool = False) -> Dict:
    """Analyse ``dataset``; write the report, CSV and plots into ``output_dir`` (default
    ``<dataset>/analysis``). Returns the summary dict (``dataset_report.json``)."""
    root = Path(dataset)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    out = Path(output_dir) if output_dir else root / "analysis"
    problems = ProblemLog(strict=strict)
    records = load_dataset(root, problems=problems)
    layout = next((r.layout for r in records if r.layout), None)
    n_files = len(records) + len(problems)
    df = analyze_records(root, records, problems)
    if not len(df):
        raise UserError(f"no readable image in {root} ({problems.summary_line()})")
    s = summarize(df, layout, problems, n_files)
    s["dataset"] = str(root)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "per_image.csv", index=False, float_format="%.4f")
    pdir = out / "plots"
    paths = [AP.plot_ai_hist({k: df[f"ai_{k}"] for k in SIDES}, pdir / "ai_hist.png"),
             AP.plot_ihdi_bars({k: df[f"ihdi_{k}"] for k in SIDES}, pdir / "ihdi_grades.png"),
             AP.plot_lr_diff_hist(df["ai_lr_diff"], pdir / "ai_lr_diff.png"),
             AP.plot_image_sizes(df["width"], df["height"], pdir / "image_sizes.png"),
             AP.plot_spacing_hist(df["pixel_spacing_mm"], pdir / "pixel_spacing.png")]
    plots = [str(Path(p).relative_to(out)) for p in paths]
    s = to_jsonable(s)
    (out / "dataset_report.json").write_text(json.dumps(s, indent=2) + "\n")
    (out / "dataset_report.md").write_text(report_markdown(root, s, plots))
    s["output_dir"] = str(out)
    return s


def print_summary(s: Dict) -> None:
    ai = s["ai"]["pooled"]
    o = s["outliers"]
    mean = ai.get("mean")
    what = s["layout"] or "no annotations"
    print(f"{s['n_images']} images ({what}), AI mean {mean:.1f} deg" if mean is not None else
          f"{s['n_images']} images ({what})", end="")
    print(f"; {len(s['problems']['skipped'])} skipped, {len(o['ai_out_of_range'])} hips with AI out of range, "
          f"{len(o['gate_failures'])} gate failures, {len(o['duplicate_groups'])} duplicate groups "
          f"-> {s['output_dir']}/dataset_report.md")
