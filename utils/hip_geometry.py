"""Clinical geometry of the hip on an AP pelvis film (DESIGN.md section 4).

Pure numpy, no torch. Every function accepts keypoints of shape ``(N, 2)`` for one
image or ``(B, N, 2)`` for a batch, in image pixels (x right, y down).

- H-line (Hilgenreiner): through the two triradiate points.
- AI per hip: angle between the H-line direction pointing laterally from this
  hip's triradiate point and the line from that point to the lateral acetabular
  edge. Invariant to rotation, scale and translation.
- P-line (Perkin): through the lateral acetabular edge, perpendicular to the H-line.
- Local frame per hip: origin where P meets H; x along H (positive laterally),
  y perpendicular (positive inferiorly, toward larger image y).
- D-line: the 45 degree diagonal y = x from the origin, running inferolaterally.
- IHDI grade from the H-point (x, y): y < 0 -> IV; x <= 0 -> I; y >= x -> II; else III.

Degenerate geometry (the two triradiate points coincide, a roof line of zero
length, non-finite points) gives NaN angles and grade 0 ("ungradable") with a
warning rather than an exception.
"""
from __future__ import annotations

import warnings
from typing import Dict, Tuple

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
