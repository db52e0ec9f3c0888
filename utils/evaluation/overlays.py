"""Image overlays (OpenCV, BGR). No torch.

Overlays draw on the image itself (``draw_overlay`` / ``save_overlay``): predicted
and reference keypoints, H-, P- and D-lines and the acetabular roof lines from
``utils.hip_geometry.hip_lines``, the AI and IHDI grade per hip, detection boxes and
a legend strip under the image; for mtddh8 the CE and SMA lines, and for each hip its AI
interval and, when it failed the plausibility gate, its reasons in a warning colour
(docs/outputs.md). ``overlay_from_row`` draws one row of predictions.csv;
``save_worst_cases`` writes overlays of the images with the largest errors. Sides are
image sides ("L" = image-left hip).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Union

import cv2
import numpy as np
import pandas as pd

from datasets.image_io import read_image, to_uint8
from datasets.layouts import SIDES, get_layout
from utils.config import AI_INTERVAL_MAX_WIDTH_DEG
from utils.cropping import apply_matrix, box_to_crop_matrix, square_box, warp
from utils.evaluation import metrics, schema
from utils.hip_geometry import ce_angle, grade_name, head_lines, hip_frames, hip_lines, tonnis_grade


# ------------------------------------------------------------------ overlays
# BGR colours
COLORS = {
    "pred": (40, 40, 255),       # red
    "gt": (60, 220, 60),         # green
    "h_line": (0, 230, 255),     # yellow
    "p_line": (255, 220, 0),     # cyan
    "d_line": (255, 60, 255),    # magenta
    "roof": (0, 150, 255),       # orange
    "box": (255, 150, 40),       # light blue
    "hpoint": (40, 40, 255),     # red ring (the predicted H-point)
    "text": (255, 255, 255),
    "ce": (203, 192, 255),       # pink: C -> E and the perpendicular through C (CE angle, mtddh8)
    "sma": (235, 235, 235),      # light grey: the SMA line through E (Toennis, mtddh8)
    "warn": (0, 190, 255),       # amber: a hip that failed the plausibility gate
}
LEGEND = (("pred", "predicted", "dot"), ("hpoint", "H-point", "ring"), ("gt", "reference", "cross"), ("h_line", "H-line", "line"),
          ("p_line", "P-line", "line"), ("d_line", "D-line", "line"), ("roof", "roof (AI)", "line"),
          ("box", "detection", "rect"), ("ce", "CE angle", "line"), ("sma", "SMA line", "line"),
          ("warn", "ungradable", "line"))
FONT = cv2.FONT_HERSHEY_SIMPLEX


class _Style:
    """Line widths, radii and font sizes scaled with the image size (reads at 300 px and 3000 px)."""

    def __init__(self, h, w):
        s = max(h, w) / 1000.0
        self.s = s
        self.thick = max(1, int(round(2.2 * s)))
        self.radius = max(2, int(round(5 * s)))
        self.font = max(0.4, 0.85 * s)
        self.font_thick = max(1, int(round(1.8 * s)))
        self.pad = max(3, int(round(8 * s)))

    def text_size(self, text, scale=None):
        (tw, th), base = cv2.getTextSize(text, FONT, scale or self.font, self.font_thick)
        return tw, th, base


def _pt(p):
    return int(round(float(p[0]))), int(round(float(p[1])))


def _to_bgr(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = to_uint8(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, :3])
    return np.ascontiguousarray(img.copy())


def _text_block(img, lines, anchor, st: _Style, align="center", x_limits=None):
    """Draw lines of (text, colour) on a dark translucent box; anchor = (x centre, y bottom), clamped
    to the image and, where it fits, to ``x_limits`` = (x min, x max) (keeps two hips' texts apart)."""
    H, W = img.shape[:2]
    room = (x_limits[1] - x_limits[0]) if x_limits is not None else W
    lines, scale = _fit_lines(lines, st, max(int(room) - 2 * st.pad, 1))
    sizes = [st.text_size(t, scale) for t, _ in lines]
    line_h = max(th + base for _, th, base in sizes) + st.pad // 2
    bw = max(tw for tw, _, _ in sizes) + 2 * st.pad
    bh = line_h * len(lines) + st.pad
    x0 = int(anchor[0] - bw / 2) if align == "center" else int(anchor[0])
    if x_limits is not None and x_limits[1] - x_limits[0] >= bw:
        x0 = min(max(x0, int(x_limits[0])), int(x_limits[1] - bw))
    y0 = int(anchor[1] - bh)
    x0 = min(max(x0, 0), max(W - bw, 0))
    y0 = min(max(y0, 0), max(H - bh, 0))
    roi = img[y0:y0 + bh, x0:x0 + bw]
    roi[:] = (roi.astype(np.float32) * 0.35).astype(np.uint8)
    y = y0 + st.pad // 2
    for (t, c), (tw, th, base) in zip(lines, sizes):
        y += line_h
        cv2.putText(img, t, (x0 + st.pad, y - base - st.pad // 4), FONT, scale, c, st.font_thick, cv2.LINE_AA)
    return x0, y0, bw, bh


MIN_FONT = 0.3


def _fit_lines(lines, st: _Style, width: int):
    """``(lines, font scale)`` that fit in ``width`` px: a line too long is wrapped at its spaces
    (continuation lines keep its colour), and a word still too long shrinks the font (not below
    ``MIN_FONT``), so a label on a small film is neither cut off nor spills into the other hip's."""
    out = []
    for text, colour in lines:
        words, cur = text.split(" "), ""
        for w in words:
            trial = f"{cur} {w}" if cur else w
            if cur and st.text_size(trial)[0] > width:
                out.append((cur, colour))
                cur = "  " + w
            else:
                cur = trial
        out.append((cur, colour))
    scale = st.font
    while scale > MIN_FONT and max(st.text_size(t, scale)[0] for t, _ in out) > width:
        scale = max(MIN_FONT, scale * 0.9)
    return out, scale


def _box_and_conf(b):
    """Accept (x1, y1, x2, y2), (box, conf), a dict with box/conf, or an object with .box/.conf."""
    if b is None:
        return None, None
    if hasattr(b, "box"):
        return np.asarray(b.box, dtype=float), getattr(b, "conf", None)
    if isinstance(b, Mapping):
        return np.asarray(b["box"], dtype=float), b.get("conf")
    if isinstance(b, (tuple, list)) and len(b) == 2 and np.ndim(b[0]) == 1:
        return np.asarray(b[0], dtype=float), b[1]
    return np.asarray(b, dtype=float).ravel()[:4], None


def _legend_strip(width, st: _Style, title=None, items=LEGEND) -> np.ndarray:
    """A dark strip with the title (if any) and colour swatches, wrapped to ``width``."""
    _, th, base = st.text_size("Ag")
    row_h = th + base + 2 * st.pad
    sw = max(14, int(round(30 * st.s)))  # swatch length
    # flow the entries into rows
    rows, cur, x = [], [], st.pad
    for key, label, kind in items:
        tw, _, _ = st.text_size(label)
        w = sw + st.pad // 2 + tw + 2 * st.pad
        if cur and x + w > width:
            rows.append(cur)
            cur, x = [], st.pad
        cur.append((key, label, kind, x))
        x += w
    rows.append(cur)
    n_title = 1 if title else 0
    strip = np.full(((len(rows) + n_title) * row_h + st.pad, width, 3), 30, np.uint8)
    y = st.pad
    if title:
        t = title
        while len(t) > 4 and st.text_size(t)[0] > width - 2 * st.pad:
            t = t[:-4] + "..."
        cv2.putText(strip, t, (st.pad, y + th), FONT, st.font, COLORS["text"], st.font_thick, cv2.LINE_AA)
        y += row_h
    for row in rows:
        cy = y + th // 2
        for key, label, kind, x in row:
            c = COLORS[key]
            if kind == "line":
                cv2.line(strip, (x, cy), (x + sw, cy), c, max(2, st.thick), cv2.LINE_AA)
            elif kind == "dot":
                cv2.circle(strip, (x + sw // 2, cy), st.radius, c, -1, cv2.LINE_AA)
            elif kind == "ring":
                cv2.circle(strip, (x + sw // 2, cy), st.radius + 1, c, max(1, st.thick), cv2.LINE_AA)
            elif kind == "cross":
                cv2.drawMarker(strip, (x + sw // 2, cy), c, cv2.MARKER_CROSS, 2 * st.radius + 2,
                               max(1, st.thick), cv2.LINE_AA)
            else:
                cv2.rectangle(strip, (x, cy - th // 2), (x + sw, cy + th // 2), c, max(1, st.thick))
            cv2.putText(strip, label, (x + sw + st.pad // 2, y + th), FONT, st.font, COLORS["text"],
                        st.font_thick, cv2.LINE_AA)
        y += row_h
    return strip


def _measure(kps, lay):
    kps = None if kps is None else np.asarray(kps, dtype=float).reshape(lay.num_points, 2)
    if kps is None or not np.all(np.isfinite(kps)):
        return kps, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        f = hip_frames(kps, lay)
    if not (f["left"]["valid"] and f["right"]["valid"]):
        return kps, None
    return kps, f


def _interval_text(ai_interval, s) -> str:
    """`` (21.9-26.5)``; for an interval wider than ``AI_INTERVAL_MAX_WIDTH_DEG`` (it spans most of
    the AI's plausible range and says nothing) `` (interval uninformative)``; "" without one."""
    lo, hi = (ai_interval or {}).get(s) or (np.nan, np.nan)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    if float(hi) - float(lo) > AI_INTERVAL_MAX_WIDTH_DEG:
        return " (interval uninformative)"
    return f" ({float(lo):.1f}-{float(hi):.1f})"


def hip_labels(pred_frames=None, gt_frames=None, qc=None, ai_interval=None, head=None) -> Dict[str, List]:
    """Per side, the overlay text lines ``[(text, BGR colour)]``, e.g. ``"L: AI 23.4 deg, IHDI I"``,
    or with an interval ``"L: AI 24.1 deg (21.9-26.5)"`` and ``"IHDI I"``.

    ``*_frames`` are ``hip_frames`` results for one image (or None). OpenCV's Hershey
    fonts have no degree sign, hence "deg". With both, the reference line starts "ref:".
    ``qc``: {side: "reason;..."}: a failed hip's lines are in the warning colour, its grade
    reads "ungradable" and its reasons follow. ``ai_interval``: {side: (lo, hi)}.
    ``head``: {side: (CE deg, Toennis grade)} of the prediction (mtddh8), a line of its own.
    """
    out = {}
    for s in SIDES:
        tag = "L" if s == "left" else "R"
        lines = []
        reasons = str((qc or {}).get(s) or "")
        if pred_frames is not None:
            f = pred_frames[s]
            colour = COLORS["pred"] if gt_frames is not None else COLORS["text"]
            grade = grade_name(0 if reasons else f["grade"])
            colour = COLORS["warn"] if reasons else colour
            interval = _interval_text(ai_interval, s)
            if interval:            # the interval makes the line long: the grade goes on its own line
                lines += [(f"{tag}: AI {float(f['ai_deg']):.1f} deg{interval}", colour), (f"IHDI {grade}", colour)]
            else:
                lines.append((f"{tag}: AI {float(f['ai_deg']):.1f} deg, IHDI {grade}", colour))
            if head and s in head:
                ce, tg = head[s]
                lines.append((f"CE {ce:.1f} deg, Tonnis {grade_name(0 if reasons else tg)}", colour))
        if reasons:
            lines.append((f"ungradable: {reasons.replace(';', ', ')}", COLORS["warn"]))
        if gt_frames is not None:
            f = gt_frames[s]
            lead = "ref" if pred_frames is not None else f"{tag} ref"
            lines.append((f"{lead}: AI {float(f['ai_deg']):.1f} deg, IHDI {grade_name(f['grade'])}", COLORS["gt"]))
        out[s] = lines
    return out


def draw_overlay(image, pred_kps, layout, gt_kps=None, boxes=None, title: Optional[str] = None,
                 draw_lines: bool = True, legend: bool = True, qc=None, ai_interval=None) -> np.ndarray:
    """Draw one image's measurement and return a new BGR image.

    - ``image``: gray (H, W) or BGR (H, W, 3); not modified.
    - ``pred_kps``: (N, 2) image px (NaN rows for an undetected side) or None.
    - ``gt_kps``: (N, 2) reference points, drawn as crosses, or None.
    - ``boxes``: ``{"left"/"right": box}`` with a box given as (x1, y1, x2, y2),
      (box, conf), {"box", "conf"} or a ``Detection``.
    - The H-, P-, D- and roof lines and the per-hip text ("L: AI 23.4 deg, IHDI I")
      come from the predicted points when both hips are predicted. The text names
      image sides.
    - For a layout with a head centre (mtddh8) the CE lines (C -> E and the perpendicular
      to the H-line through C) and the SMA line, and a "CE .. deg, Tonnis .." text line.
    - ``qc``: {side: "reason;..."} of the plausibility gate: a failed hip's lines and text
      are drawn in the warning colour with its reasons. ``ai_interval``: {side: (lo, hi)},
      shown as "AI 24.1 deg (21.9-26.5)".
    - With ``legend`` a strip with the title and colour key is appended *below* the
      image, so image coordinates are unchanged in the returned array.
    """
    lay = get_layout(layout)
    img = _to_bgr(image)
    H, W = img.shape[:2]
    st = _Style(H, W)
    pred, fp = _measure(pred_kps, lay)
    gt, fg = _measure(gt_kps, lay)

    if boxes:
        for s in SIDES:
            box, conf = _box_and_conf(boxes.get(s))
            if box is None or not np.all(np.isfinite(box)):
                continue
            x1, y1, x2, y2 = box
            cv2.rectangle(img, _pt((min(x1, x2), min(y1, y2))), _pt((max(x1, x2), max(y1, y2))),
                          COLORS["box"], st.thick, cv2.LINE_AA)
            label = ("LeftHip" if s == "left" else "RightHip") + (f" {conf:.2f}" if conf is not None else "")
            # label just under the box (the per-hip text sits above the hip), inside it at the image edge
            tw, th, base = st.text_size(label, st.font * 0.8)
            ty = int(max(y1, y2)) + th + st.pad // 2
            ty = ty if ty + base < H else int(max(y1, y2)) - st.pad // 2
            cv2.putText(img, label, (int(min(x1, x2)), ty), FONT, st.font * 0.8, COLORS["box"],
                        st.font_thick, cv2.LINE_AA)

    if draw_lines and fp is not None:
        lines = hip_lines(pred, lay)
        # one H-line through both triradiate points, out to each side's lateral end
        cv2.line(img, _pt(lines["left"]["h_line"][1]), _pt(lines["right"]["h_line"][1]), COLORS["h_line"],
                 st.thick, cv2.LINE_AA)
        for s in SIDES:
            for name in ("p_line", "d_line", "roof"):
                a, b = lines[s][name]
                cv2.line(img, _pt(a), _pt(b), COLORS["warn" if (qc or {}).get(s) else name], st.thick, cv2.LINE_AA)
    head = _draw_head_lines(img, pred, lay, st) if (draw_lines and fp is not None) else None

    if gt is not None:
        for p in gt:
            if np.all(np.isfinite(p)):
                cv2.drawMarker(img, _pt(p), COLORS["gt"], cv2.MARKER_CROSS, 2 * st.radius + 4,
                               max(1, st.thick), cv2.LINE_AA)
    if fp is not None:
        for s in SIDES:  # the H-point that decides the IHDI grade
            cv2.circle(img, _pt(fp[s]["hpoint"]), st.radius + max(1, st.thick), COLORS["pred"],
                       max(1, st.thick), cv2.LINE_AA)
    if pred is not None:
        for p in pred:
            if np.all(np.isfinite(p)):
                cv2.circle(img, _pt(p), st.radius, COLORS["pred"], -1, cv2.LINE_AA)
                cv2.circle(img, _pt(p), st.radius, (0, 0, 0), 1, cv2.LINE_AA)

    # per-hip text above the acetabulum
    ref = fp if fp is not None else fg
    labels = hip_labels(fp, fg, qc=qc, ai_interval=ai_interval, head=head)
    if ref is not None:
        span = float(np.linalg.norm(ref["right"]["triradiate"] - ref["left"]["triradiate"]))
        for s in SIDES:
            tri, edge = ref[s]["triradiate"], ref[s]["lateral_edge"]
            top = min(tri[1], edge[1]) - 0.12 * span
            mid = float(ref["left"]["triradiate"][0] + ref["right"]["triradiate"][0]) / 2
            limits = (0, mid - st.pad) if s == "left" else (mid + st.pad, W)
            _text_block(img, labels[s], ((tri[0] + edge[0]) / 2, top), st, x_limits=limits)
    else:                       # nothing measured: still say why a hip is ungradable, at the top
        for s in SIDES:
            if labels[s]:
                _text_block(img, labels[s], (W * (0.25 if s == "left" else 0.75), 0.15 * H), st)

    if not legend:
        return img
    shown = {"ce": bool(head), "sma": bool(head), "warn": any((qc or {}).get(s) for s in SIDES)}
    items = [it for it in LEGEND
             if (it[0] != "gt" or gt is not None) and (it[0] != "box" or boxes) and shown.get(it[0], True)
             and (it[0] in ("pred", "gt", "box", "warn") or (it[0] == "hpoint" and fp is not None)
                  or (draw_lines and fp is not None))]
    strip = _legend_strip(W, st, title, items)
    return np.vstack([img, strip])


def _draw_head_lines(img, pred, lay, st: _Style) -> Optional[Dict[str, tuple]]:
    """CE and SMA lines of a layout with a head centre; {side: (CE deg, Toennis grade)}, or None."""
    if not schema.has_head_centre(lay):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        segs, ce, tg = head_lines(pred, lay), ce_angle(pred, lay), tonnis_grade(pred, lay)
    for s, d in segs.items():
        for name, colour in (("sma", "sma"), ("vertical", "ce"), ("ce", "ce")):
            a, b = d[name]
            cv2.line(img, _pt(a), _pt(b), COLORS[colour], st.thick, cv2.LINE_AA)
    return {s: (float(ce[k]), int(tg[k])) for k, s in enumerate(SIDES) if s in segs}


def save_overlay(path, image, pred_kps, layout, gt_kps=None, boxes=None, title=None, **kw) -> Path:
    """``draw_overlay`` written to ``path`` (PNG/JPEG by extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = draw_overlay(image, pred_kps, layout, gt_kps=gt_kps, boxes=boxes, title=title, **kw)
    if not cv2.imwrite(str(path), out):
        raise OSError(f"cannot write overlay {path}")
    return path


# ------------------------------------------------------------------ overlays from the predictions DataFrame
def _num(v) -> float:
    """A cell as float: '' / None / text -> NaN."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def row_keypoints(row: Mapping, layout, prefix: str = "pred") -> Optional[np.ndarray]:
    """(N, 2) keypoints from a predictions row's ``{prefix}_x_{j}``/``{prefix}_y_{j}``; None when absent/all NaN."""
    lay = get_layout(layout)
    try:
        k = np.array([[_num(row[x]), _num(row[y])] for x, y in schema.point_columns(lay.num_points, prefix)])
    except KeyError:
        return None
    return None if not np.any(np.isfinite(k)) else k


def row_boxes(row: Mapping, prefix: str = "pred_box") -> Dict:
    """``{side: (box, conf)}`` from a predictions row (sides without a finite box are left out).

    Reads ``{prefix}_{side}_x1..y2``; for the predicted boxes ``box_{side}_x1..y2`` too.
    """
    out = {}
    for s in SIDES:
        b = None
        for pre in ((prefix, "box") if prefix == "pred_box" else (prefix,)):
            try:
                b = np.array([_num(row[c]) for c in schema.box_columns(pre, s)], dtype=float)
                break
            except KeyError:
                continue
        if b is None:
            continue
        if np.all(np.isfinite(b)):
            conf = _num(row.get(schema.column("det_conf", side=s))) if prefix == "pred_box" else float("nan")
            conf = conf if np.isfinite(conf) else None
            out[s] = (b, conf)
    return out


def row_annotations(row: Mapping) -> Dict[str, Dict]:
    """``{"qc": {side: reasons}, "ai_interval": {side: (lo, hi)}}`` of a predictions row, for ``draw_overlay``."""
    qc = {}
    for s in SIDES:
        v = row.get(schema.column("qc", side=s))
        qc[s] = v if isinstance(v, str) else ""
    return {"qc": qc, "ai_interval": {s: tuple(_num(row.get(schema.column(b, side=s))) for b in ("ai_lo", "ai_hi"))
                                      for s in SIDES}}


def overlay_from_row(image, row: Mapping, layout=None, title: Optional[str] = None) -> np.ndarray:
    """``draw_overlay`` of one predictions row (keypoints, reference, detection boxes, gate, AI interval)."""
    lay = get_layout(layout or row.get("layout") or metrics.infer_layout(pd.DataFrame([dict(row)])))
    if title is None:
        e = _num(row.get("mean_err_px"))
        title = str(row.get("stem", ""))
        if np.isfinite(e):
            title += f"  mean error {e:.1f} px"
    return draw_overlay(image, row_keypoints(row, lay, "pred"), lay, gt_kps=row_keypoints(row, lay, "gt"),
                        boxes=row_boxes(row) or None, title=title, **row_annotations(row))


ImageLookup = Union[Mapping[str, object], Callable[[str], object]]
HIP_SHEET = "hip_sheet.png"


def _hip_box(row: Mapping, lay, side: str):
    """One hip's detection box (x1, y1, x2, y2), or without one (a full-image model) the box of its
    predicted points; None when neither (or the points coincide)."""
    box = row_boxes(row).get(side)
    if box is not None:
        return np.asarray(box[0], dtype=float)
    k = row_keypoints(row, lay, "pred")
    k = None if k is None else k[list(lay.side_indices[side])]
    if k is None or not np.all(np.isfinite(k)) or not np.ptp(k, axis=0).max() > 0:
        return None
    return np.concatenate([k.min(0), k.max(0)])


def _cell_points(img, M, pts, draw) -> None:
    """``draw(img, (x, y))`` at each finite point of ``pts`` (N, 2) mapped by the crop matrix ``M``."""
    if pts is None:
        return
    for q in apply_matrix(M, pts):
        if np.all(np.isfinite(q)):
            draw(img, _pt(q))


def hip_cell(image, row: Mapping, lay, side: str, cell: int = 256, margin: float = 1.7) -> np.ndarray:
    """One hip of ``image`` (the film: gray or BGR), cut square around it and scaled to ``cell`` px, with
    the row's points drawn at the cell's scale (predicted: red dots, the H-point ringed, amber for a hip
    that failed the gate; reference: green crosses) and a caption bar: ``"stem L: AI 23.4 IHDI I"``, the
    gate's reasons in the warning colour, or "no detection"."""
    tag = "L" if side == "left" else "R"
    box = _hip_box(row, lay, side)
    reasons = row.get(schema.column("qc", side=side))
    reasons = reasons if isinstance(reasons, str) else ""
    if box is None:
        img = np.full((cell, cell, 3), 40, np.uint8)
        caption, colour = f"{row.get('stem', '')} {tag}: no detection", COLORS["warn"]
    else:
        m = box_to_crop_matrix(square_box(box, (margin - 1) / 2), cell)   # side: margin x the longer side
        img = warp(_to_bgr(image), m, cell, cv2.INTER_AREA if m[0, 0] < 1 else cv2.INTER_LINEAR)
        r = max(2, int(round(cell / 110)))
        dot = COLORS["warn"] if reasons else COLORS["pred"]
        pred, gt = row_keypoints(row, lay, "pred"), row_keypoints(row, lay, "gt")
        _cell_points(img, m, gt, lambda im, q: cv2.drawMarker(im, q, COLORS["gt"], cv2.MARKER_CROSS, 3 * r, 1,
                                                             cv2.LINE_AA))
        if pred is not None:
            _cell_points(img, m, pred[list(lay.hpoint[side])].mean(0, keepdims=True),
                         lambda im, q: cv2.circle(im, q, 2 * r, dot, 1, cv2.LINE_AA))
        _cell_points(img, m, pred, lambda im, q: (cv2.circle(im, q, r, dot, -1, cv2.LINE_AA),
                                                  cv2.circle(im, q, r, (0, 0, 0), 1, cv2.LINE_AA)))
        ai = _num(row.get(schema.column("ai", kind="pred", side=side)))
        g = _num(row.get(schema.column("ihdi", kind="pred", side=side)))
        grade = int(g) if np.isfinite(g) and not reasons else 0
        caption = f"{row.get('stem', '')} {tag}: AI {ai:.1f} IHDI {grade_name(grade)}" if np.isfinite(ai) else \
            f"{row.get('stem', '')} {tag}"
        if reasons:
            caption += f" ({reasons.replace(';', ', ')})"
        colour = COLORS["warn"] if reasons else COLORS["text"]
    font = 0.36 * cell / 256
    bar = max(12, int(round(16 * cell / 256)))
    captions = _wrap(caption, font, cell - 6)          # a long caption (the gate's reasons) wraps, not cut off
    cv2.rectangle(img, (0, 0), (cell, bar * len(captions)), (0, 0, 0), -1)
    for i, text in enumerate(captions):
        cv2.putText(img, text, (3, bar * (i + 1) - 4), FONT, font, colour, 1, cv2.LINE_AA)
    return img


def crop_sheet(crops: np.ndarray, pred: np.ndarray, gt: Optional[np.ndarray] = None, cols: int = 4,
               cell: int = 192) -> np.ndarray:
    """Model inputs side by side with their points (BGR): ``crops`` (N, S, S) 8-bit gray, ``pred`` and
    ``gt`` (N, P, 2) in the crops' pixels; each crop scaled to ``cell`` px, predicted points as red
    dots, reference points as green crosses, and the crop's mean error (crop px) in its corner. The
    training run's TensorBoard image of validation predictions."""
    cells = []
    for i, crop in enumerate(crops):
        k = cell / crop.shape[0]
        img = cv2.resize(_to_bgr(crop), (cell, cell), interpolation=cv2.INTER_LINEAR)
        r = max(2, int(round(cell / 80)))
        if gt is not None:
            for q in gt[i]:
                if np.all(np.isfinite(q)):
                    cv2.drawMarker(img, _pt((q + 0.5) * k - 0.5), COLORS["gt"], cv2.MARKER_CROSS, 3 * r, 1,
                                   cv2.LINE_AA)
        for q in pred[i]:
            if np.all(np.isfinite(q)):
                cv2.circle(img, _pt((q + 0.5) * k - 0.5), r, COLORS["pred"], -1, cv2.LINE_AA)
        if gt is not None:
            err = float(np.nanmean(np.linalg.norm(pred[i] - gt[i], axis=-1)))
            cv2.putText(img, f"{err:.1f} px", (3, 12), FONT, 0.35, COLORS["text"], 1, cv2.LINE_AA)
        cells.append(img)
    if not cells:
        return np.zeros((cell, cell, 3), np.uint8)
    cols = max(1, min(cols, len(cells)))
    cells += [np.zeros_like(cells[0])] * (-len(cells) % cols)
    return np.vstack([np.hstack(cells[i:i + cols]) for i in range(0, len(cells), cols)])


def _wrap(text: str, font: float, width: int) -> List[str]:
    """``text`` split at its spaces into lines no wider than ``width`` px (a single word may be)."""
    lines, cur = [], ""
    for w in text.split(" "):
        trial = f"{cur} {w}" if cur else w
        if cur and cv2.getTextSize(trial, FONT, font, 1)[0][0] > width:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    return lines + [cur]


def save_hip_sheet(df: pd.DataFrame, images_lookup: ImageLookup, out_png, n: int = 24, cell: int = 256,
                   margin: float = 1.7, cols: int = 4, layout=None) -> Optional[Path]:
    """A contact sheet of the hips of the first ``n`` films (by stem): each hip cut square around its
    detection box (``margin`` times its longer side), with its points drawn at the cell's scale and no
    lines, so that the bone under them shows (``hip_cell``). Two films a row at ``cols=4``. Returns the
    path, or None when no image could be read."""
    lay = metrics.infer_layout(df, layout)
    cells = []
    for _, row in df.sort_values("stem").head(n).iterrows():
        img = _load(images_lookup, str(row["stem"]))
        if img is None:
            continue
        cells += [hip_cell(img, row.to_dict(), lay, s, cell, margin) for s in SIDES]
    if not cells:
        return None
    cells += [np.zeros_like(cells[0])] * (-len(cells) % cols)
    sheet = np.vstack([np.hstack(cells[i:i + cols]) for i in range(0, len(cells), cols)])
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), sheet)
    return out


def _load(lookup: ImageLookup, stem: str):
    src = lookup(stem) if callable(lookup) else lookup.get(stem)
    if src is None:
        return None
    if isinstance(src, np.ndarray):
        return src
    return read_image(src)[0]


def save_worst_cases(df: pd.DataFrame, images_lookup: ImageLookup, out_dir, n: int = 10,
                     key: str = "mean_err_px", layout=None, ascending: bool = False) -> List[Path]:
    """Overlays of the ``n`` rows with the largest ``key`` (NaN last) as ``{rank:02d}_{stem}.png``.

    ``images_lookup`` maps a stem to an image path or array (a dict or a callable);
    stems it cannot resolve are skipped.
    """
    if key not in df.columns:
        raise KeyError(f"column {key!r} not in the predictions DataFrame")
    lay = metrics.infer_layout(df, layout)
    order = df.assign(_k=pd.to_numeric(df[key], errors="coerce")).sort_values(
        "_k", ascending=ascending, na_position="last")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for rank, (_, row) in enumerate(order.head(n).iterrows(), 1):
        img = _load(images_lookup, str(row["stem"]))
        if img is None:
            continue
        v = row["_k"]
        title = f"#{rank} {row['stem']}  {key} = {v:.2f}" if np.isfinite(v) else f"#{rank} {row['stem']}"
        ov = overlay_from_row(img, row.drop(labels="_k").to_dict(), lay, title=title)
        p = out / f"{rank:02d}_{row['stem']}.png"
        cv2.imwrite(str(p), ov)
        paths.append(p)
    return paths
