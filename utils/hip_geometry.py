"""Clinical geometry of the hip on an AP pelvis film.

The definitions, in plain words, are in ``docs/clinical_definitions.md``; this module
implements them. Pure numpy, no torch. Every function accepts keypoints of shape
``(N, 2)`` for one image or ``(B, N, 2)`` for a batch, in image pixels (x right,
y down). Sides are image sides: ``left`` is the hip drawn on the image-left (the
patient's right hip).

- H-line (Hilgenreiner): through the two triradiate points.
- AI per hip: angle between the H-line direction pointing laterally from this
  hip's triradiate point and the line from that point to the lateral acetabular
  edge. Invariant to rotation, scale and translation.
- P-line (Perkin): through the lateral acetabular edge, perpendicular to the H-line.
- Local frame per hip: origin where P meets H; x along H (positive laterally),
  y perpendicular (positive inferiorly, toward larger image y).
- D-line: the 45 degree diagonal y = x from the origin, running inferolaterally.
- IHDI grade from the H-point (x, y): y < 0 -> IV; x <= 0 -> I; y >= x -> II; else III.
- CE angle (Wiberg) and Toennis grade, for layouts with a femoral head centre (mtddh8).
- Hilgenreiner distances h and d of the H-point.
- The plausibility gate: reason codes for hips that should not be graded.
- ``ai_interval``: a percentile interval of the AI over sampled keypoint sets.

Degenerate geometry (the two triradiate points coincide, a roof line of zero
length, non-finite points) gives NaN angles and grade 0 ("ungradable") with a
warning rather than an exception.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from datasets.layouts import SIDES, get_layout

_EPS = 1e-9
GRADE_NAMES = {0: "ungradable", 1: "I", 2: "II", 3: "III", 4: "IV"}


def _as_batch(keypoints, layout):
    lay = get_layout(layout)
    kps = np.asarray(keypoints, dtype=float)
    single = kps.ndim == 2
    if single:
        kps = kps[None]
    if kps.ndim != 3 or kps.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape (N, 2) or (B, N, 2), got {np.shape(keypoints)}")
    if kps.shape[1] != lay.num_points:
        raise ValueError(f"layout {lay.name} expects {lay.num_points} points, got {kps.shape[1]}")
    return kps, single, lay


def hpoint(keypoints, side: str, layout="ihdi12") -> np.ndarray:
    """The H-point (femoral reference point) of ``side``: (2,) or (B, 2)."""
    kps, single, lay = _as_batch(keypoints, layout)
    p = kps[:, list(lay.hpoint[side]), :].mean(axis=1)
    return p[0] if single else p


def hip_frames(keypoints, layout="ihdi12") -> Dict[str, Dict[str, np.ndarray]]:
    """Everything needed to measure and draw both hips.

    Returns ``{side: {...}}`` with, per side, arrays of shape (B, ...) or without the
    batch axis for a single image:

    - ``triradiate``, ``lateral_edge``, ``hpoint``: points (2,)
    - ``lateral``: unit vector along the H-line pointing laterally for this hip
    - ``inferior``: unit vector perpendicular to the H-line, toward larger image y
    - ``origin``: where the P-line meets the H-line
    - ``ai_deg``: acetabular index in degrees
    - ``hpoint_local``: (x, y) of the H-point in the hip's local frame
    - ``grade``: IHDI grade 1-4 (0 when the geometry is degenerate)
    - ``valid``: bool, False for degenerate geometry
    """
    kps, single, lay = _as_batch(keypoints, layout)
    tri = {s: kps[:, lay.triradiate[s], :] for s in SIDES}
    h_vec = tri["right"] - tri["left"]                       # points image-rightwards
    h_len = np.linalg.norm(h_vec, axis=-1, keepdims=True)
    h_ok = (h_len[:, 0] > _EPS) & np.isfinite(h_len[:, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        h_unit = h_vec / np.where(h_ok[:, None], h_len, np.nan)
    # perpendicular: rotate +90 deg in image coords (x right, y down) -> points inferiorly
    inferior = np.stack([-h_unit[:, 1], h_unit[:, 0]], axis=-1)
    # (an upside-down image would flip this; the H-line's own direction decides)

    out = {}
    for s in SIDES:
        lateral = -h_unit if s == "left" else h_unit
        edge = kps[:, lay.lateral_edge[s], :]
        hp = kps[:, list(lay.hpoint[s]), :].mean(axis=1)
        roof = edge - tri[s]
        roof_len = np.linalg.norm(roof, axis=-1)
        ok = h_ok & (roof_len > _EPS) & np.isfinite(roof_len) & np.all(np.isfinite(hp), axis=-1)
        dot = np.sum(roof * lateral, axis=-1)
        cross = roof[:, 0] * lateral[:, 1] - roof[:, 1] * lateral[:, 0]
        ai = np.degrees(np.arctan2(np.abs(cross), dot))
        ai = np.where(ok, ai, np.nan)
        # origin: projection of the lateral edge onto the H-line
        t = np.sum((edge - tri[s]) * lateral, axis=-1, keepdims=True)
        origin = tri[s] + t * lateral
        d = hp - origin
        x = np.sum(d * lateral, axis=-1)
        y = np.sum(d * inferior, axis=-1)
        grade = np.where(y < 0, 4, np.where(x <= 0, 1, np.where(y >= x, 2, 3)))
        grade = np.where(ok, grade, 0).astype(int)
        out[s] = {
            "triradiate": tri[s], "lateral_edge": edge, "hpoint": hp,
            "lateral": lateral, "inferior": inferior, "origin": origin,
            "ai_deg": ai, "hpoint_local": np.stack([x, y], axis=-1),
            "grade": grade, "valid": ok,
        }
    bad = ~(out["left"]["valid"] & out["right"]["valid"])
    if np.any(bad):
        warnings.warn(f"degenerate hip geometry in {int(bad.sum())} of {len(bad)} image(s) "
                      "(coincident triradiate points, zero-length roof line or non-finite points): "
                      "AI is NaN and the IHDI grade is 0 (ungradable)", RuntimeWarning, stacklevel=2)
    if single:
        out = {s: {k: v[0] for k, v in d.items()} for s, d in out.items()}
    return out


def acetabular_index(keypoints, layout="ihdi12") -> Tuple:
    """Acetabular index in degrees ``(left_deg, right_deg)`` (floats, or arrays for a batch)."""
    f = hip_frames(keypoints, layout)
    l, r = f["left"]["ai_deg"], f["right"]["ai_deg"]
    if np.ndim(l) == 0:
        return float(l), float(r)
    return l, r


def ihdi_grade(keypoints, layout="ihdi12") -> Tuple:
    """IHDI grade per hip ``(left, right)`` as ints 1-4 (0 = degenerate geometry)."""
    f = hip_frames(keypoints, layout)
    l, r = f["left"]["grade"], f["right"]["grade"]
    if np.ndim(l) == 0:
        return int(l), int(r)
    return l, r


def hip_lines(keypoints, layout="ihdi12", length: float = None) -> Dict[str, Dict[str, np.ndarray]]:
    """Line segments for drawing one image's measurement: ``{side: {name: ((x0, y0), (x1, y1))}}``.

    Names: ``h_line`` (through both triradiate points, extended), ``p_line`` (Perkin,
    through the lateral edge), ``d_line`` (45 degree diagonal from the origin, running
    inferolaterally), ``roof`` (triradiate -> lateral edge). ``length`` sets how far
    the P- and D-lines run (default: the inter-triradiate distance / 2).
    """
    f = hip_frames(keypoints, layout)
    if np.ndim(f["left"]["ai_deg"]) != 0:
        raise ValueError("hip_lines takes one image's keypoints (N, 2)")
    tl, tr = f["left"]["triradiate"], f["right"]["triradiate"]
    span = float(np.linalg.norm(tr - tl))
    L = span / 2 if length is None else float(length)
    out = {}
    for s in SIDES:
        d = f[s]
        lat, inf, o = d["lateral"], d["inferior"], d["origin"]
        # from the midpoint between the triradiate points out past this hip's origin:
        # the two sides' segments together draw the whole H-line
        h0 = (tl + tr) / 2
        reach = max(float(np.dot(o - d["triradiate"], lat)), 0.0)
        h1 = d["triradiate"] + lat * (reach + 0.3 * span)
        diag = (lat + inf) / np.sqrt(2.0)
        out[s] = {
            "h_line": (h0, h1),
            "p_line": (o - inf * 0.5 * L, o + inf * L),
            "d_line": (o, o + diag * L),
            "roof": (d["triradiate"], d["lateral_edge"]),
            "hpoint": d["hpoint"],
            "origin": o,
        }
    return out


def grade_name(grade: int) -> str:
    return GRADE_NAMES.get(int(grade), "?")


# --------------------------------------------------------------------------------------
# CE angle, Toennis grade, Hilgenreiner distances (docs/clinical_definitions.md)
# --------------------------------------------------------------------------------------

#: Toennis: |s| <= TONNIS_TAU_FRACTION x the inter-triradiate distance counts as "level
#: with the SMA line" (grade III).
TONNIS_TAU_FRACTION = 0.03


def _quiet_frames(kps, lay):
    """``hip_frames`` on a batch without its AI/IHDI warning (callers judge validity themselves)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return hip_frames(kps, lay)


def _unbatch(pair, single, cast=float):
    l, r = pair
    if single:
        return cast(l[0]), cast(r[0])
    return l, r


def _warn_degenerate(bad, what):
    if np.any(bad):
        warnings.warn(f"degenerate hip geometry in {int(np.sum(bad))} hip(s) "
                      f"(coincident triradiate points or non-finite points): {what}",
                      RuntimeWarning, stacklevel=3)


def head_centre_index(layout, side: str) -> int:
    """Absolute index of ``side``'s femoral head centre; ValueError if the layout has none.

    Read from the layout's point names (``"head_centre"``), so ``mtddh8`` has one and
    ``ihdi12`` does not.
    """
    lay = get_layout(layout)
    names = lay.side_point_names(side)
    if "head_centre" not in names:
        raise ValueError(f"layout {lay.name} has no femoral head centre; the CE angle and the "
                         "Toennis grade need one (use mtddh8)")
    return lay.side_indices[side][names.index("head_centre")]


def _head_frames(keypoints, layout):
    """Per side: head centre C, lateral edge E, the frame's unit vectors and a validity mask (batched)."""
    kps, single, lay = _as_batch(keypoints, layout)
    idx = {s: head_centre_index(lay, s) for s in SIDES}
    f = _quiet_frames(kps, lay)
    out = {}
    for s in SIDES:
        c = kps[:, idx[s], :]
        d = f[s]
        ok = (np.all(np.isfinite(d["lateral"]), axis=-1) & np.all(np.isfinite(c), axis=-1)
              & np.all(np.isfinite(d["lateral_edge"]), axis=-1))
        out[s] = {"head_centre": c, "lateral_edge": d["lateral_edge"], "lateral": d["lateral"],
                  "inferior": d["inferior"], "valid": ok}
    span = np.linalg.norm(f["right"]["triradiate"] - f["left"]["triradiate"], axis=-1)
    return out, span, single


def ce_angle(keypoints, layout="mtddh8") -> Tuple:
    """Wiberg centre-edge angle in degrees ``(left_deg, right_deg)``, in (-180, 180].

    At the head centre C: the angle from the line through C perpendicular to the H-line,
    pointing superiorly, to the line C -> lateral edge E; positive when E is lateral to
    that perpendicular. NaN (with a warning) for degenerate geometry, including E == C.
    ValueError for a layout without a head centre (ihdi12).
    """
    h, _, single = _head_frames(keypoints, layout)
    res, bad = [], []
    for s in SIDES:
        d = h[s]
        v = d["lateral_edge"] - d["head_centre"]
        lat = np.sum(v * d["lateral"], axis=-1)
        sup = -np.sum(v * d["inferior"], axis=-1)
        ok = d["valid"] & (np.hypot(lat, sup) > _EPS)
        with np.errstate(invalid="ignore"):
            ang = np.degrees(np.arctan2(lat, sup))
        ang = np.where(ang <= -180.0, ang + 360.0, ang)         # (-180, 180]
        res.append(np.where(ok, ang, np.nan))
        bad.append(~ok)
    _warn_degenerate(np.concatenate(bad), "CE angle is NaN")
    return _unbatch(res, single)


def tonnis_grade(keypoints, layout="mtddh8") -> Tuple:
    """Toennis grade per hip ``(left, right)`` as ints 1-4 (0 = degenerate geometry).

    s = signed height of the head centre C above the SMA line (through E, parallel to the
    H-line), tau = TONNIS_TAU_FRACTION x the inter-triradiate distance:
    IV if s > tau; III if |s| <= tau; otherwise II if C is lateral to the P-line, else I.
    ValueError for a layout without a head centre (ihdi12).
    """
    h, span, single = _head_frames(keypoints, layout)
    tau = TONNIS_TAU_FRACTION * span
    res, bad = [], []
    for s in SIDES:
        d = h[s]
        v = d["head_centre"] - d["lateral_edge"]
        height = -np.sum(v * d["inferior"], axis=-1)            # positive superior
        lateral = np.sum(v * d["lateral"], axis=-1)             # positive lateral to the P-line
        with np.errstate(invalid="ignore"):
            g = np.where(height > tau, 4,
                         np.where(np.abs(height) <= tau, 3, np.where(lateral > 0, 2, 1)))
        ok = d["valid"]
        res.append(np.where(ok, g, 0).astype(int))
        bad.append(~ok)
    _warn_degenerate(np.concatenate(bad), "Toennis grade is 0 (ungradable)")
    return _unbatch(res, single, int)


def hilgenreiner_distances(keypoints, layout="ihdi12", pixel_spacing=None) -> Dict[str, Tuple]:
    """Hilgenreiner distances of the H-point: ``{"h": (left, right), "d": (left, right)}``.

    - h: perpendicular distance from the H-point to the H-line, positive inferior;
    - d: distance along the H-line, positive laterally, from this hip's triradiate point
      to the foot of the perpendicular from the H-point.

    In pixels, or in mm when ``pixel_spacing`` (mm per pixel: a scalar, or one value per
    image of a batch) is given; the spacing is assumed isotropic. NaN for degenerate
    geometry (with a warning).
    """
    kps, single, lay = _as_batch(keypoints, layout)
    f = _quiet_frames(kps, lay)
    scale = 1.0 if pixel_spacing is None else np.broadcast_to(
        np.asarray(pixel_spacing, dtype=float), (kps.shape[0],))
    hs, ds, bad = [], [], []
    for s in SIDES:
        d = f[s]
        v = d["hpoint"] - d["triradiate"]
        ok = np.all(np.isfinite(d["lateral"]), axis=-1) & np.all(np.isfinite(v), axis=-1)
        hs.append(np.where(ok, np.sum(v * d["inferior"], axis=-1) * scale, np.nan))
        ds.append(np.where(ok, np.sum(v * d["lateral"], axis=-1) * scale, np.nan))
        bad.append(~ok)
    _warn_degenerate(np.concatenate(bad), "h and d are NaN")
    return {"h": _unbatch(hs, single), "d": _unbatch(ds, single)}


def head_lines(keypoints, layout="mtddh8", length: float = None) -> Dict[str, Dict[str, np.ndarray]]:
    """Segments for drawing the CE angle and the SMA line of one image: ``{side: {name: (p0, p1)}}``.

    Names: ``ce`` (head centre C -> lateral edge E), ``vertical`` (from C, perpendicular
    to the H-line, superiorly, as long as CE), ``sma`` (through E, parallel to the H-line,
    ``length`` to each side; default a quarter of the inter-triradiate distance). A side
    with degenerate geometry is left out. ValueError for a layout without a head centre.
    """
    h, span, single = _head_frames(keypoints, layout)
    if not single:
        raise ValueError("head_lines takes one image's keypoints (N, 2)")
    L = float(span[0]) / 4 if length is None else float(length)
    out = {}
    for s in SIDES:
        d = h[s]
        if not bool(d["valid"][0]):
            continue
        c, e, lat, inf = d["head_centre"][0], d["lateral_edge"][0], d["lateral"][0], d["inferior"][0]
        r = float(np.linalg.norm(e - c))
        out[s] = {"ce": (c, e), "vertical": (c, c - inf * r), "sma": (e - lat * L, e + lat * L)}
    return out


# --------------------------------------------------------------------------------------
# Plausibility gate (docs/clinical_definitions.md, "Plausibility gate")
# --------------------------------------------------------------------------------------

AI_RANGE_DEG = (0.0, 60.0)                  # a plausible AI lies in this closed range
MAX_H_LINE_TILT_DEG = 30.0                  # H-line tilt from the image horizontal, at most
TRIRADIATE_DISTANCE_RANGE = (0.15, 0.75)    # inter-triradiate distance / image width, closed range
DEFAULT_MIN_CONF = 0.25                     # detection confidence below this is low
# with a roof refiner: the refiner may move a roof point by at most this fraction of the first
# stage's roof length (triradiate point -> lateral edge); more means the two models disagree
MAX_REFINE_SHIFT = 0.25

# reason codes, in the order the gate reports them
MISSING_KEYPOINTS = "missing_keypoints"
NO_DETECTION = "no_detection"
LOW_CONFIDENCE = "low_confidence"
SIDES_SWAPPED = "sides_swapped"
TRIRADIATE_DISTANCE = "triradiate_distance"
H_LINE_TILT = "h_line_tilt"
EDGE_NOT_LATERAL = "edge_not_lateral"
AI_OUT_OF_RANGE = "ai_out_of_range"
STAGES_DISAGREE = "stages_disagree"
GATE_REASONS = (MISSING_KEYPOINTS, NO_DETECTION, LOW_CONFIDENCE, SIDES_SWAPPED,
                TRIRADIATE_DISTANCE, H_LINE_TILT, EDGE_NOT_LATERAL, AI_OUT_OF_RANGE, STAGES_DISAGREE)


def _side_detection_reasons(detected, confidences, i, min_conf) -> List[str]:
    """``no_detection`` when ``detected[i]`` is False, or when confidences are given and
    side i's is None/NaN; ``low_confidence`` when its confidence is below ``min_conf``."""
    if detected is not None and not bool(detected[i]):
        return [NO_DETECTION]
    if confidences is None:
        return []
    conf = confidences[i]
    if conf is None or not np.isfinite(float(conf)):
        return [NO_DETECTION]
    return [LOW_CONFIDENCE] if float(conf) < min_conf else []


def plausibility_gate(keypoints, image_width, layout="ihdi12", confidences=None, detected=None,
                      min_conf=DEFAULT_MIN_CONF, refine_shift=None) -> Tuple[List[str], List[str]]:
    """Reasons why each hip of one image should not be graded: ``(reasons_left, reasons_right)``.

    An empty list means the hip passes. ``keypoints`` is one image's ``(N, 2)``;
    ``confidences`` is ``(conf_left, conf_right)`` or None, ``detected`` is
    ``(bool, bool)`` or None; ``refine_shift`` is ``(left, right)`` or None, each the largest
    move of a roof point by the roof refiner as a fraction of the first stage's roof length
    (``refine_shift_fraction``; None for a side without one). Never raises on NaN keypoints: a hip whose points (or the
    other hip's triradiate point, which fixes the H-line) are missing gets
    ``missing_keypoints`` and the geometric checks that need them are skipped.
    Reason codes are listed in ``GATE_REASONS``; the checks are described in
    docs/clinical_definitions.md.
    """
    kps, single, lay = _as_batch(keypoints, layout)
    if not single:
        raise ValueError("plausibility_gate takes one image's keypoints (N, 2)")
    kps = kps[0]
    width = float(image_width)
    if not width > 0:
        raise ValueError(f"image_width must be positive, got {image_width!r}")
    reasons = {s: [] for s in SIDES}

    own_ok = {s: bool(np.all(np.isfinite(kps[lay.side_slice(s)]))) for s in SIDES}
    tri = {s: kps[lay.triradiate[s]] for s in SIDES}
    tri_ok = all(np.all(np.isfinite(tri[s])) for s in SIDES)
    for s in SIDES:
        if not (own_ok[s] and tri_ok):
            reasons[s].append(MISSING_KEYPOINTS)
        reasons[s] += _side_detection_reasons(detected, confidences, SIDES.index(s), min_conf)
    if tri_ok:                                  # checks on the whole pelvis: both hips
        h_vec = tri["right"] - tri["left"]
        span = float(np.hypot(*h_vec))
        tilt = math.degrees(math.atan2(abs(h_vec[1]), abs(h_vec[0]))) if span > _EPS else 0.0
        pelvis = []
        if not tri["left"][0] < tri["right"][0]:
            pelvis.append(SIDES_SWAPPED)
        lo, hi = TRIRADIATE_DISTANCE_RANGE
        if not lo * width <= span <= hi * width:
            pelvis.append(TRIRADIATE_DISTANCE)
        if tilt > MAX_H_LINE_TILT_DEG:
            pelvis.append(H_LINE_TILT)
        for s in SIDES:
            reasons[s] += pelvis
        if span > _EPS:
            f = _quiet_frames(kps, lay)
            for s in SIDES:
                edge = f[s]["lateral_edge"]
                if not np.all(np.isfinite(edge)):
                    continue
                if not float(np.dot(edge - tri[s], f[s]["lateral"])) > 0:
                    reasons[s].append(EDGE_NOT_LATERAL)
                ai = float(f[s]["ai_deg"])
                if np.isfinite(ai) and not AI_RANGE_DEG[0] <= ai <= AI_RANGE_DEG[1]:
                    reasons[s].append(AI_OUT_OF_RANGE)
    for s, shift in zip(SIDES, refine_shift or (None, None)):
        if shift is not None and not float(shift) <= MAX_REFINE_SHIFT:      # (NaN disagrees too)
            reasons[s].append(STAGES_DISAGREE)
    return reasons["left"], reasons["right"]


def refine_shift_fraction(first, refined, edge: int, tri: int) -> float:
    """The largest move of a point from ``first`` to ``refined`` (both (P, 2) image px, the roof
    points a refiner replaced), divided by the first stage's roof length |first[edge] - first[tri]|
    (``edge``, ``tri``: positions of the lateral edge and the triradiate point in the arrays)."""
    first, refined = np.asarray(first, float), np.asarray(refined, float)
    roof = float(np.linalg.norm(first[edge] - first[tri]))
    move = float(np.max(np.linalg.norm(refined - first, axis=1)))
    return move / roof if roof > _EPS else math.inf


def format_reasons(reasons: Sequence[str]) -> str:
    """``["a", "b"] -> "a;b"``; the empty string when the hip passes."""
    return ";".join(reasons)


def _hips(all_reasons) -> Iterable[List[str]]:
    for item in all_reasons:
        if isinstance(item, str):               # a formatted "a;b" cell
            yield [r for r in item.split(";") if r]
        elif len(item) == 2 and not isinstance(item[0], str) and not isinstance(item[1], str):
            yield from (list(item[0]), list(item[1]))   # one image's (left, right) pair
        else:
            yield list(item)


def summarize_gate(all_reasons) -> str:
    """One line: ``"3 of 20 hips ungradable: ai_out_of_range 2, no_detection 1"``.

    ``all_reasons`` holds one entry per hip (a list of reason codes, or a formatted
    ``"a;b"`` string) or per image (a ``(reasons_left, reasons_right)`` pair). A hip counts
    once in the total and once under each of its reasons; reasons are listed by count,
    then by name. With no ungradable hip the line ends after "ungradable".
    """
    hips = list(_hips(all_reasons))
    counts: Dict[str, int] = {}
    for r in hips:
        for code in dict.fromkeys(r):
            counts[code] = counts.get(code, 0) + 1
    n_bad = sum(1 for r in hips if r)
    line = f"{n_bad} of {len(hips)} hips ungradable"
    if counts:
        line += ": " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return line


# --------------------------------------------------------------------------------------
# AI uncertainty from sampled keypoint sets
# --------------------------------------------------------------------------------------

def ai_interval(samples, layout="ihdi12", level: float = 0.95) -> Tuple:
    """Percentile interval of the AI over sampled keypoint sets: ``((lo_l, hi_l), (lo_r, hi_r))``.

    ``samples`` is ``(S, N, 2)``: S keypoint sets for one image (e.g. drawn from a model's
    decoded distributions), or ``(B, S, N, 2)`` for a batch (then each bound is a (B,)
    array). Each set goes through ``acetabular_index``; the interval is the central
    ``level`` percentile range. Degenerate samples (NaN AI) are left out; a side with no
    finite sample gives (NaN, NaN).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lay = get_layout(layout)
    arr = np.asarray(samples, dtype=float)
    if arr.ndim not in (3, 4) or arr.shape[-2:] != (lay.num_points, 2):
        raise ValueError(f"samples must be (S, {lay.num_points}, 2) or (B, S, {lay.num_points}, 2) "
                         f"for {lay.name}, got {arr.shape}")
    batched = arr.ndim == 4
    if not batched:
        arr = arr[None]
    b, n_s = arr.shape[:2]
    ai_l, ai_r = acetabular_index(arr.reshape(b * n_s, lay.num_points, 2), lay)
    q = [50.0 * (1 - level), 50.0 * (1 + level)]
    out = []
    for ai in (ai_l, ai_r):
        ai = ai.reshape(b, n_s)
        lo, hi = np.full(b, np.nan), np.full(b, np.nan)
        has = np.any(np.isfinite(ai), axis=1)
        if np.any(has):
            lo[has], hi[has] = np.nanpercentile(ai[has], q, axis=1)
        out.append((lo, hi) if batched else (float(lo[0]), float(hi[0])))
    return out[0], out[1]
