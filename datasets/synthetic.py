"""Synthetic pediatric AP pelvis films ("phantoms") with exact hip keypoints.

Each phantom is drawn from a small anatomical model of an infant pelvis: iliac wings
with the acetabular roof, the triradiate (Y) cartilage as a radiolucent gap, the
ischium and pubis around the obturator foramina, sacrum and lumbar spine, femoral
shafts ending in the proximal metaphyses, the cartilaginous femoral heads with an
optional ossific nucleus, soft tissue and bowel gas. Every keypoint is a corner or
margin of a drawn structure (DESIGN.md section 3):

- lateral acetabular edge: the corner where the roof, lined by a bright cortical band (the
  sourcil), ends and the outline turns sharply (at least 55 degrees) up into the lateral iliac
  wall, which rises about vertically before it flares into the wing;
- mid acetabular roof: the middle of the roof outline (a shallow curve);
- triradiate point: the inferomedial corner of the ilium above the Y-cartilage gap;
- metaphysis corners and the middle of its superior margin (a bright, straight line);
- femoral head centre (``mtddh8``): the centre of the cartilaginous head and of its
  ossific nucleus when one is drawn. The nucleus lies below the roof line (and, in located
  hips, medial to the lateral edge), never over the ilium.

Geometry is built in a *pelvis frame* whose unit is the distance between the two
triradiate points (D); each hip also has a *side frame* (origin at its triradiate
point, p lateral along the H-line, q inferior), the same frame as
``utils.hip_geometry``. The IHDI grade of each hip is chosen first and the H-point is
placed in the grade's region of the local frame, away from its borders, so the
labels are unambiguous. A similarity transform (tilt, scale, shift) then places the
pelvis in an image of random aspect; AI and IHDI are invariant to it. The metadata
is computed by ``utils.hip_geometry`` from the keypoints exactly as written.

Public API:

- ``render_phantom(rng, size, layout) -> (image uint8 (H, W), keypoints (N, 2), boxes)``
- ``generate_dataset(out, n, seed=0, size=512, layout="ihdi12", ...) -> Path``
- ``contact_sheet(dataset_dir, out_png, n=16, draw_keypoints=True) -> Path``

``python -m datasets.synthetic --contact_sheet out.png DATASET`` writes a contact sheet.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from datasets.formats import (round_keypoints, write_annotation, write_classes, write_detection,
                              write_metadata, write_yolo_label)
from datasets.layouts import SIDES, get_layout
from utils.errors import UserError
from utils.hip_geometry import acetabular_index, ihdi_grade

log = logging.getLogger("hipkp")

DEFAULT_GRADE_MIX = (0.55, 0.20, 0.15, 0.10)
# margin (fraction of the keypoints' extent) added on each side of a hip box
BOX_MARGIN = 0.20
# distance (in D, the inter-triradiate distance) kept between an H-point and the
# borders of its IHDI region (H-line, P-line, D-line)
GRADE_MARGIN = 0.02
# AI (degrees) per IHDI grade: mean, sd, low, high (dysplastic hips have higher AI)
AI_BY_GRADE = {1: (21.0, 4.5, 10.0, 33.0), 2: (27.0, 5.0, 13.0, 40.0),
               3: (31.0, 5.5, 16.0, 45.0), 4: (35.0, 5.5, 18.0, 45.0)}
# lateral acetabular edge: the lateral iliac wall leaves the edge at WALL_DEG (degrees up from the
# lateral H-line direction; 90 = straight up, > 90 leaning medially), turning at least
# MIN_EDGE_TURN_DEG away from the roof, and runs straight for WALL_LEN (D) before flaring into the wing
WALL_DEG = (72.0, 96.0)
MIN_EDGE_TURN_DEG = 55.0
WALL_LEN = (0.09, 0.15)
# a grade-IV metaphysis (both corners) lies at least this far (D) below the roof line (the line
# triradiate -> lateral edge), so that it does not project over the roof and its lateral edge
GRADE4_BELOW_ROOF = 0.03
# the ossific nucleus keeps this distance (D) below the roof line and above the metaphysis
NUCLEUS_CLEARANCE = 0.015
METADATA_COLUMNS = ("stem", "patient_id", "pixel_spacing_mm", "ai_left", "ai_right",
                    "ihdi_left", "ihdi_right", "width", "height")
_SUBDIRS = ("images", "annotations", "detections", "yolo_labels")


# ============================================================== anatomy (sampled)
@dataclass(frozen=True)
class HipAnatomy:
    """One hip, in its side frame (units of D; p lateral, q inferior; origin at the triradiate point)."""
    grade: int              # target IHDI grade 1-4
    ai_deg: float           # acetabular index
    roof_len: float         # triradiate point -> lateral edge
    roof_sag: float         # depth of the roof curve (fraction of roof_len)
    hx: float               # H-point in the local frame (x lateral from the P-line)
    hy: float               # ... (y inferior from the H-line)
    meta_width: float       # metaphysis width
    meta_tilt_deg: float    # superior margin slope, medial corner lower when > 0
    shaft_deg: float        # femoral shaft inclination (converging medially downwards)
    head_ratio: float       # cartilaginous head radius / metaphysis width
    nucleus: float          # ossific nucleus radius (0: none)
    gap: float              # height of the triradiate cartilage gap
    wing: float             # iliac wing size factor (per side, small asymmetry)
    wall_deg: float = 90.0  # direction of the lateral iliac wall above the lateral edge (degrees
    #                         from the lateral H-line direction, upwards; > 90 leans medially)
    wall_len: float = 0.12  # length of its straight part


@dataclass(frozen=True)
class PelvisAnatomy:
    """Everything that belongs to the patient, not to one film."""
    hips: Dict[str, HipAnatomy]
    tri_offset: Tuple[float, float, float, float]   # jitter of (left p, left q, right p, right q)
    wing_w: float
    wing_h: float
    ischium: float
    sacrum_w: float
    body_w: float
    d_mm: float             # physical inter-triradiate distance (sets pixel spacing)
    maturity: float         # 0 newborn .. 1 about a year


def parse_grade_mix(text) -> Tuple[float, float, float, float]:
    """``"0.55,0.2,0.15,0.1"`` (or a 4-sequence) -> normalised probabilities of IHDI I-IV."""
    try:
        vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise UserError(f"--grade_mix must be 4 comma-separated numbers, got {text!r}") from None
    if len(vals) != 4 or not all(np.isfinite(vals)) or min(vals) < 0 or sum(vals) <= 0:
        raise UserError(f"--grade_mix must be 4 non-negative numbers with a positive sum, got {text!r}")
    s = sum(vals)
    return tuple(v / s for v in vals)


def _uniform(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def sample_hpoint(rng, grade: int, margin: float = GRADE_MARGIN) -> Tuple[float, float]:
    """H-point (x lateral, y inferior) in the hip's local frame, inside ``grade``'s region."""
    m = margin
    if grade == 1:
        return _uniform(rng, -0.14, -m), _uniform(rng, 0.14, 0.34)
    if grade == 2:
        x = _uniform(rng, m, 0.13)
        return x, _uniform(rng, x + m, max(x + m + 0.06, 0.32))
    if grade == 3:
        x = _uniform(rng, 0.08, 0.30)
        return x, _uniform(rng, m, x - m)
    if grade == 4:
        return _uniform(rng, -0.05, 0.3), _uniform(rng, -0.2, -m)
    raise ValueError(f"IHDI grade must be 1-4, got {grade}")


def clip_to_grade(x: float, y: float, grade: int, margin: float = GRADE_MARGIN) -> Tuple[float, float]:
    """Move a local H-point into ``grade``'s region (at least ``margin`` from its borders)."""
    m = margin
    if grade == 1:
        return min(x, -m), max(y, m)
    if grade == 2:
        x = max(x, m)
        return x, max(y, x + m)
    if grade == 3:
        y = max(y, m)
        return max(x, y + m), y
    return x, min(y, -m)


def _below_roof(pt, ai_deg: float, roof_len: float) -> float:
    """Signed distance (D) of a local-frame point (x from the P-line, y from the H-line) below the
    roof line, the line through the triradiate point and the lateral edge (positive: inferior)."""
    a = np.radians(ai_deg)
    p = roof_len * np.cos(a) + pt[0]                       # side-frame p (origin at the triradiate point)
    return float(p * np.sin(a) + pt[1] * np.cos(a))


def _sample_hip(rng, grade: int, maturity: float, layout_name: str) -> HipAnatomy:
    mean, sd, lo, hi = AI_BY_GRADE[grade]
    ai = float(rng.normal(mean, sd))
    while not lo <= ai <= hi:                             # truncated normal (no pile-up at the limits)
        ai = float(rng.normal(mean, sd))
    roof_len = _uniform(rng, 0.27, 0.38)
    width = _uniform(rng, 0.34, 0.46)
    tilt = _uniform(rng, -4.0, 16.0)
    hx, hy = sample_hpoint(rng, grade)
    if grade == 4:       # a dislocated femur rides up lateral to the acetabulum, not over its roof
        b = np.radians(tilt)
        half = 0.5 * width * np.array([np.cos(b), -np.sin(b)])      # H-point -> lateral metaphysis corner
        for _ in range(1000):
            if min(_below_roof(np.add((hx, hy), half), ai, roof_len),
                   _below_roof(np.subtract((hx, hy), half), ai, roof_len)) >= GRADE4_BELOW_ROOF:
                break
            hx, hy = sample_hpoint(rng, grade)
        else:                                             # (not reached in practice)
            hx, hy = 0.3, -GRADE_MARGIN - 0.01
    p_nucleus = float(np.clip(0.15 + 0.9 * maturity, 0.1, 0.95)) * (0.6 if grade >= 3 else 1.0)
    if layout_name == "mtddh8":          # the head centre is a keypoint: make it visible more often
        p_nucleus = max(p_nucleus, 0.85)
    nucleus = 0.0
    if rng.random() < p_nucleus:
        nucleus = (0.025 + 0.06 * maturity) * _uniform(rng, 0.7, 1.2) * (0.75 if grade >= 3 else 1.0)
    return HipAnatomy(
        grade=grade, ai_deg=ai,
        roof_len=roof_len,
        roof_sag=_uniform(rng, 0.0, 0.10) * (0.5 if grade >= 3 else 1.0),
        hx=hx, hy=hy, meta_width=width,
        meta_tilt_deg=tilt,
        shaft_deg=_uniform(rng, 1.0, 11.0) + (3.0 if grade >= 3 else 0.0),
        head_ratio=_uniform(rng, 0.42, 0.55),
        nucleus=nucleus,
        gap=_uniform(rng, 0.035, 0.065) - 0.02 * maturity,
        wing=_uniform(rng, 0.95, 1.05),
        wall_deg=_uniform(rng, *WALL_DEG), wall_len=_uniform(rng, *WALL_LEN),
    )


def sample_anatomy(rng, grade_mix=DEFAULT_GRADE_MIX, grades: Optional[Sequence[int]] = None,
                   layout="ihdi12") -> PelvisAnatomy:
    """A patient's pelvis. ``grades`` = (left, right) forces the IHDI grades; otherwise each
    hip draws its grade independently from ``grade_mix`` (probabilities of I-IV)."""
    lay = get_layout(layout)
    mix = np.asarray(parse_grade_mix(grade_mix), dtype=float)
    maturity = _uniform(rng, 0.0, 1.0)
    if grades is None:
        grades = [int(rng.choice(4, p=mix)) + 1 for _ in SIDES]
    hips = {s: _sample_hip(rng, int(g), maturity, lay.name) for s, g in zip(SIDES, grades)}
    return PelvisAnatomy(
        hips=hips,
        tri_offset=tuple(float(v) for v in rng.normal(0.0, 0.008, 4)),
        wing_w=_uniform(rng, 0.85, 1.12), wing_h=_uniform(rng, 0.85, 1.1),
        ischium=_uniform(rng, 0.9, 1.1), sacrum_w=_uniform(rng, 0.9, 1.1),
        body_w=_uniform(rng, 0.85, 1.15),
        d_mm=_uniform(rng, 52.0, 72.0), maturity=maturity,
    )


def jitter_anatomy(rng, anat: PelvisAnatomy) -> PelvisAnatomy:
    """The same patient on another film: small changes of AI and H-point, same grades."""
    hips = {}
    for s, h in anat.hips.items():
        _, _, lo, hi = AI_BY_GRADE[h.grade]
        x, y = clip_to_grade(h.hx + rng.normal(0, 0.01), h.hy + rng.normal(0, 0.01), h.grade)
        hips[s] = replace(h, ai_deg=float(np.clip(h.ai_deg + rng.normal(0, 1.0), lo, hi)), hx=x, hy=y,
                          meta_tilt_deg=h.meta_tilt_deg + float(rng.normal(0, 2.0)))
    return replace(anat, hips=hips)


# ============================================================== geometry
def _chaikin(pts, iters: int = 2, closed: bool = False) -> np.ndarray:
    """Corner-cutting smoothing; an open chain keeps its two end points (sharp corners there)."""
    p = np.asarray(pts, dtype=float)
    for _ in range(iters):
        if closed:
            nxt = np.roll(p, -1, axis=0)
            q, r = 0.75 * p + 0.25 * nxt, 0.25 * p + 0.75 * nxt
            p = np.stack([q, r], axis=1).reshape(-1, 2)
        else:
            q, r = 0.75 * p[:-1] + 0.25 * p[1:], 0.25 * p[:-1] + 0.75 * p[1:]
            p = np.concatenate([p[:1], np.stack([q, r], axis=1).reshape(-1, 2), p[-1:]])
    return p


def _ellipse(c, ax, ay, angle_deg=0.0, n=40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a = np.radians(angle_deg)
    x, y = ax * np.cos(t), ay * np.sin(t)
    return np.stack([c[0] + x * np.cos(a) - y * np.sin(a), c[1] + x * np.sin(a) + y * np.cos(a)], axis=1)


def _bezier(p0, c, p1, n=16) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * t * (1 - t) * np.asarray(c) + t ** 2 * np.asarray(p1)


@dataclass
class HipShapes:
    """One hip's keypoints and outlines in its side frame (p lateral, q inferior)."""
    points: Dict[str, np.ndarray]
    ilium: np.ndarray
    ilium_body: np.ndarray
    roof_band: np.ndarray
    sourcil: np.ndarray
    roof: np.ndarray
    ischium: np.ndarray
    pubis: np.ndarray
    foramen: np.ndarray
    femur: np.ndarray
    medulla: np.ndarray
    meta_band: np.ndarray
    head: np.ndarray
    nucleus: Optional[np.ndarray]


def _place_head(h: HipAnatomy, E, H, dlat, up_m, Rh: float):
    """Centre of the femoral head (and of its ossific nucleus) and the nucleus radius.

    The head sits on the metaphysis, 0.85 head radii above the H-point, unless that puts the
    nucleus at or above the roof line (the line triradiate -> lateral edge): then it comes down
    towards the metaphysis and, for located hips (grades I-II), medially into the socket; for
    subluxated and dislocated hips (III-IV) laterally, away from the ilium. The nucleus always
    lies wholly below the roof line and above the metaphysis, and for grades I-II its centre is
    medial to the lateral edge. A nucleus that cannot fit shrinks, or is left out.
    """
    a = np.radians(h.ai_deg)
    n_roof = np.array([np.sin(a), np.cos(a)])              # unit normal of the roof line, inferior
    side = -1.0 if h.grade <= 2 else 1.0                     # shift along dlat: medial / lateral
    gap = NUCLEUS_CLEARANCE
    for scale in ((1.0, 0.8, 0.6) if h.nucleus > 0 else (0.0,)):
        rn = h.nucleus * scale
        for j in np.linspace(0.0, 0.45 * h.meta_width, 10):
            for k in np.linspace(0.85, 0.4, 10):
                C = H + k * Rh * up_m + side * j * dlat
                above_meta = float((C - H) @ up_m)
                ok = (float(C @ n_roof) >= rn + gap                 # below the roof line
                      and above_meta >= rn + gap                     # above the metaphysis margin
                      and above_meta >= 0.03 + 0.25 * abs(float((C - H) @ dlat))   # over the neck
                      and (h.grade > 2 or C[0] <= E[0] - 0.01 - 0.5 * rn))        # in the socket
                if ok:
                    return C, rn
    if h.nucleus > 0:                                        # no room for a nucleus: place the head alone
        C, _ = _place_head(replace(h, nucleus=0.0), E, H, dlat, up_m, Rh)
        return C, 0.0
    return H + 0.85 * Rh * up_m, 0.0                         # (a head without nucleus: as it comes)


def hip_shapes(h: HipAnatomy, wing_w: float, wing_h: float, ischium: float) -> HipShapes:
    a = np.radians(h.ai_deg)
    r = h.roof_len
    T = np.zeros(2)
    E = np.array([r * np.cos(a), -r * np.sin(a)])
    up = np.array([-np.sin(a), -np.cos(a)])              # normal of the roof chord, into the bone
    ctrl = (T + E) / 2 + 2.0 * h.roof_sag * r * up        # Bezier midpoint = chord mid + sag * r * up
    roof = _bezier(T, ctrl, E)
    mid_roof = 0.25 * T + 0.5 * ctrl + 0.25 * E

    # ilium: open chain E -> lateral wall -> wing (an oval leaning laterally) -> medial border -> T,
    # then the roof back to E. The corners at E and T stay sharp. At E the outline turns from the
    # roof (rising laterally at the AI) into the lateral wall, which runs about straight up for
    # wall_len before flaring laterally into the wing: the lateral edge is a visible corner.
    ww, wh = wing_w * h.wing, wing_h
    cx, cy, rx, ry = 0.33 * ww, -0.52 * wh, 0.47 * ww, 0.5 * wh
    phi = np.radians(max(h.wall_deg, h.ai_deg + MIN_EDGE_TURN_DEG))   # steep even for a steep roof
    W1 = E + h.wall_len * np.array([np.cos(phi), -np.sin(phi)])
    W2 = W1 + [0.045, -0.06]                  # the wall curves out to the anterior inferior iliac spine
    # the wing's rim starts above W2, its lateral half not medial to W2
    t0 = np.arcsin(np.clip((cy - W2[1] + 0.04) / ry, 0.0, 0.95))
    t = np.linspace(t0, np.radians(200), 13)
    wing = np.stack([cx + rx * np.cos(t), cy - ry * np.sin(t)], axis=1)
    wing[:, 0] = np.maximum(wing[:, 0], np.where(t < np.pi / 2, W2[0] + 0.02, -np.inf))
    lateral = np.array([E, E + 0.5 * (W1 - E), W1, W2])
    medial = np.array([[-0.03, -0.2], [-0.01, -0.07], [-0.002, -0.02], T])
    chain = _chaikin(np.concatenate([lateral, wing, medial]), iters=2)
    ilium = np.concatenate([chain, roof[1:-1]])
    body_top = min(W1[1] - 0.1, -0.3)
    ilium_body = np.concatenate([_chaikin(np.array([E, W1 - [0.006, 0.0], W1 + [0.02, -0.07],
                                                    [-0.04, body_top - 0.05], [-0.03, -0.2], [-0.01, -0.07],
                                                    [-0.002, -0.02], T]),
                                          2), roof[1:-1]])
    band_w = 0.03                             # sclerotic band along the roof; its densest, thin cortical
    roof_band = np.concatenate([roof, (roof + band_w * up)[::-1]])          # line (the sourcil) lines
    sourcil = np.concatenate([roof, (roof + 0.012 * up)[::-1]])            # the edge from T to E

    # ischium: a vertical bar below the Y-cartilage gap; pubis: superior ramus, body and inferior
    # ramus around the obturator foramen, not yet fused to the ischium (ischiopubic synchondrosis)
    g, k = h.gap, ischium
    isch = np.array([[-0.06, g + 0.004], [0.02, g], [0.085, g + 0.012], [0.105, 0.14], [0.1, 0.32],
                     [0.075, 0.48], [0.025, 0.54], [-0.03, 0.5], [-0.05, 0.36], [-0.07, 0.18],
                     [-0.07, g + 0.03]])
    isch = _chaikin(isch * [1, k] + [0, g * (1 - k)], 2, closed=True)
    pub = np.array([[-0.07, g + 0.012], [-0.2, g + 0.035], [-0.33, 0.075], [-0.42, 0.1], [-0.46, 0.2],
                    [-0.44, 0.32], [-0.35, 0.43], [-0.2, 0.5], [-0.09, 0.52], [-0.06, 0.47],
                    [-0.055, 0.2]])
    pub = _chaikin(pub * [1, k] + [0, g * (1 - k)], 2, closed=True)
    foramen = _ellipse((-0.21, 0.29 * k + g * (1 - k)), 0.13, 0.18 * k, -30, 32)
    # the superior ramus runs down medially to the symphysis
    tilt = np.radians(-18.0)
    rot = np.array([[np.cos(tilt), np.sin(tilt)], [-np.sin(tilt), np.cos(tilt)]])
    pivot = np.array([-0.06, g])
    pub, foramen = (pub - pivot) @ rot + pivot, (foramen - pivot) @ rot + pivot

    # femur: metaphysis (straight, bright superior margin), neck/calcar, shaft
    O = np.array([E[0], 0.0])
    H = O + [h.hx, h.hy]
    w = h.meta_width
    b = np.radians(h.meta_tilt_deg)
    dlat = np.array([np.cos(b), -np.sin(b)])
    n_down = np.array([np.sin(b), np.cos(b)])
    Lc, Mc = H + 0.5 * w * dlat, H - 0.5 * w * dlat
    ph = np.radians(h.shaft_deg)
    s = np.array([-np.sin(ph), np.cos(ph)])
    pl = np.array([np.cos(ph), np.sin(ph)])
    hw = 0.31 * w
    S0 = H + 0.12 * w * dlat
    lat_side = [Lc, Lc + 0.05 * n_down + [0.012, 0.0], S0 + 0.3 * s + hw * 1.12 * pl,
                S0 + 0.7 * s + hw * 1.02 * pl, S0 + 1.6 * s + hw * 0.95 * pl, S0 + 3.5 * s + hw * 0.9 * pl]
    med_side = [S0 + 3.5 * s - hw * 0.9 * pl, S0 + 1.6 * s - hw * 0.95 * pl, S0 + 0.55 * s - hw * 1.0 * pl,
                S0 + 0.36 * s - (hw + 0.02) * pl, S0 + 0.22 * s - (hw + 0.04) * pl,
                Mc + 0.045 * n_down + [0.012, 0.0], Mc]
    femur = _chaikin(np.array(lat_side + med_side), iters=3)
    ct = 0.28 * hw
    medulla = _chaikin(np.array([S0 + 0.33 * s + (hw - ct) * pl, S0 + 3.5 * s + (hw * 0.9 - ct) * pl,
                                 S0 + 3.5 * s - (hw * 0.9 - ct) * pl, S0 + 0.33 * s - (hw - ct) * pl,
                                 S0 + 0.22 * s]), 2, closed=True)
    meta_band = np.array([Lc, Mc, Mc + 0.028 * n_down, Lc + 0.028 * n_down])
    up_m = -n_down
    Rh = h.head_ratio * w
    C, rn = _place_head(h, E, H, dlat, up_m, Rh)
    head = _ellipse(C, Rh, Rh * 0.97, 0, 36)
    nucleus = _ellipse(C, rn, rn * 0.92, 0, 28) if rn > 0 else None
    points = {"lateral_edge": E, "mid_roof": mid_roof, "triradiate": T, "metaphysis_lateral": Lc,
              "metaphysis_mid": (Lc + Mc) / 2, "metaphysis_medial": Mc, "head_centre": C}
    return HipShapes(points, ilium, ilium_body, roof_band, sourcil, roof, isch, pub, foramen,
                     femur, medulla, meta_band, head, nucleus)


def _side_to_pelvis(anat: PelvisAnatomy):
    """Per side: a function mapping side-frame points (p, q) to pelvis-frame points."""
    o = anat.tri_offset
    tri = {"left": np.array([-0.5 - o[0], o[1]]), "right": np.array([0.5 + o[2], o[3]])}
    hv = tri["right"] - tri["left"]
    hv = hv / np.linalg.norm(hv)
    inferior = np.array([-hv[1], hv[0]])
    maps = {}
    for s in SIDES:
        lateral = -hv if s == "left" else hv
        maps[s] = (lambda pts, T=tri[s], L=lateral, N=inferior:
                   T + np.asarray(pts)[..., :1] * L + np.asarray(pts)[..., 1:2] * N)
    return maps


def layout_keypoints(points: Dict[str, Dict[str, np.ndarray]], layout) -> np.ndarray:
    """Per-side named points -> the layout's (N, 2) array (each side ordered image-left to right)."""
    lay = get_layout(layout)
    if lay.name == "ihdi12":
        names = lay.point_names
    else:
        names = ("lateral_edge", "triradiate", "head_centre", "metaphysis_mid")
    kps = np.zeros((lay.num_points, 2))
    for s in SIDES:
        order = names if (s == "left" or lay.name != "ihdi12") else tuple(names[p] for p in lay.mirror_perm)
        for idx, name in zip(lay.side_indices[s], order):
            kps[idx] = points[s][name]
    return kps


def hip_box(points: np.ndarray, width: int, height: int, margin: float = BOX_MARGIN) -> np.ndarray:
    """Roughly square hip box around a side's anatomical points, ``margin`` added on each side,
    clipped to the image: (x1, y1, x2, y2)."""
    pts = np.asarray(points, dtype=float)
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    bw, bh = x1 - x0, y1 - y0
    sw = max(bw, 0.9 * bh) * (1 + 2 * margin)
    sh = max(bh, 0.9 * bw) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = np.array([cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2])
    return np.clip(box, 0, [width - 1, height - 1, width - 1, height - 1])


# ============================================================== rendering
class _Painter:
    """Accumulates attenuation in image pixels from polygons given in pelvis-frame units."""

    def __init__(self, width: int, height: int, M: np.ndarray):
        self.W, self.H, self.M = width, height, M
        self.scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))     # pixels per D
        self._buf = np.zeros((height, width), np.uint8)

    def px(self, pts) -> np.ndarray:
        return np.asarray(pts, dtype=float) @ self.M[:, :2].T + self.M[:, 2]

    def _fixed(self, pts):
        return np.round(self.px(pts) * 16).astype(np.int32).reshape(-1, 1, 2)

    def mask(self, polys=(), holes=(), lines=(), line_w: float = 0.0, closed_lines=False) -> np.ndarray:
        """Float mask in [0, 1] of filled ``polys`` minus ``holes`` plus stroked ``lines``
        (``line_w`` in D units)."""
        buf = self._buf
        buf[:] = 0
        for p in polys:                          # one call each: fillPoly XORs overlapping polygons
            cv2.fillPoly(buf, [self._fixed(p)], 255, cv2.LINE_AA, 4)
        if lines:
            t = max(1, int(round(line_w * self.scale)))
            cv2.polylines(buf, [self._fixed(p) for p in lines], closed_lines, 255, t, cv2.LINE_AA, 4)
        for p in holes:
            cv2.fillPoly(buf, [self._fixed(p)], 0, cv2.LINE_AA, 4)
        return buf.astype(np.float32) * np.float32(1 / 255)

    def blur(self, img, sigma_d: float):
        """Gaussian blur with sigma in D units (wide blurs run on a downsampled copy)."""
        s = sigma_d * self.scale
        if s <= 0.3:
            return img
        k = int(s // 3)
        if k < 2:
            return cv2.GaussianBlur(img, (0, 0), s)
        h, w = img.shape
        small = cv2.resize(img, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), s / k)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _smooth_noise(rng, h: int, w: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise with about ``cells`` blobs across the longer side."""
    ch = max(2, int(round(cells * h / max(h, w))))
    cw = max(2, int(round(cells * w / max(h, w))))
    small = rng.standard_normal((ch, cw)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@dataclass
class Film:
    image: np.ndarray                       # uint8 (H, W)
    keypoints: np.ndarray                   # (N, 2) as written (rounded)
    boxes: Dict[str, np.ndarray]            # side -> (x1, y1, x2, y2)
    pixel_spacing_mm: float
    target_grades: Tuple[int, int]
    target_ai: Tuple[float, float]
    info: Dict = field(default_factory=dict)


def _pose(rng, width: int, height: int, side_pts: Dict[str, np.ndarray], top: float = 1.15):
    """Similarity transform pelvis frame -> image keeping all side points well inside and the
    iliac crests (``top`` D above the H-line) about at or below the upper edge."""
    short = min(width, height)
    pad = 0.05 * short
    allp = np.concatenate([side_pts[s] for s in SIDES])
    for attempt in range(60):
        shrink = 0.97 ** max(0, attempt - 20)
        scale = min(_uniform(rng, 0.3, 0.38) * width, 0.42 * height) * shrink
        theta = np.radians(_uniform(rng, -10.0, 10.0))
        c = np.array([width * (0.5 + _uniform(rng, -0.05, 0.05)), height * _uniform(rng, 0.38, 0.5)])
        c[1] = max(c[1], top * scale + 0.01 * height)
        if attempt >= 40:
            c = np.array([width / 2, height / 2])
        R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) * scale
        M = np.concatenate([R, c[:, None]], axis=1)
        p = allp @ M[:, :2].T + M[:, 2]
        if p[:, 0].min() >= pad and p[:, 1].min() >= pad and p[:, 0].max() <= width - 1 - pad \
                and p[:, 1].max() <= height - 1 - pad:
            return M, scale
    raise RuntimeError("could not fit the hips inside the image")   # not reached with sane sizes


def render_film(rng, size: int = 512, layout="ihdi12", anatomy: Optional[PelvisAnatomy] = None,
                grade_mix=DEFAULT_GRADE_MIX, grades: Optional[Sequence[int]] = None) -> Film:
    """Render one phantom film. ``anatomy`` (from ``sample_anatomy``) fixes the patient;
    otherwise one is drawn from ``rng``."""
    lay = get_layout(layout)
    size = int(size)
    if anatomy is None:
        anatomy = sample_anatomy(rng, grade_mix, grades, lay)
    aspect = _uniform(rng, 0.8, 1.3)                      # width / height
    if aspect >= 1:
        W, H = size, int(round(size / aspect))
    else:
        W, H = int(round(size * aspect)), size

    maps = _side_to_pelvis(anatomy)
    shapes = {s: hip_shapes(anatomy.hips[s], anatomy.wing_w, anatomy.wing_h, anatomy.ischium) for s in SIDES}
    named = {s: {k: maps[s](v) for k, v in shapes[s].points.items()} for s in SIDES}
    M, scale = _pose(rng, W, H, {s: np.array(list(named[s].values())) for s in SIDES}, top=1.1 * anatomy.wing_h)
    P = _Painter(W, H, M)
    to_img = P.px

    # keypoints as written; boxes around each side's anatomical points (both layouts alike)
    kps_img = {s: {k: to_img(v) for k, v in named[s].items()} for s in SIDES}
    keypoints = round_keypoints(layout_keypoints(kps_img, lay))
    boxes = {s: hip_box(np.array(list(kps_img[s].values())), W, H) for s in SIDES}

    att = _draw_anatomy(rng, P, anatomy, shapes, maps)
    image = _photometry(rng, P, att)
    ai = acetabular_index(keypoints, lay)
    return Film(image=image, keypoints=keypoints, boxes=boxes,
                pixel_spacing_mm=anatomy.d_mm / scale,
                target_grades=tuple(anatomy.hips[s].grade for s in SIDES),
                target_ai=tuple(anatomy.hips[s].ai_deg for s in SIDES),
                info={"ai": ai, "grades": ihdi_grade(keypoints, lay), "width": W, "height": H})


def _draw_anatomy(rng, P: _Painter, anat: PelvisAnatomy, shapes, maps) -> np.ndarray:
    W, H = P.W, P.H
    to_p = maps

    # ---------------------------------------------------------- soft tissue
    bw = 1.0 * anat.body_w
    half = np.array([[-1.7 * bw, -3.5], [-1.65 * bw, -1.0], [-1.78 * bw, -0.25], [-1.72 * bw, 0.35],
                     [-1.5 * bw, 1.4], [-1.25 * bw, 3.5], [-0.3, 3.5], [-0.14, 1.9], [-0.07, 1.4],
                     [-0.02, 1.2]])
    body = _chaikin(np.concatenate([half, (half * [-1, 1])[::-1]]), 2, closed=True)
    m_body = P.mask([body])
    dist = cv2.distanceTransform((m_body > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    soft = np.sqrt(np.minimum(dist / (0.6 * P.scale), 1.0)).astype(np.float32)
    soft = P.blur(soft * m_body, 0.02)
    glutes = [_ellipse((sx * 0.8, 0.6), 0.85, 0.5, sx * 15, 32) for sx in (-1, 1)]
    soft += 0.18 * P.blur(P.mask(glutes), 0.08)
    soft += 0.2 * P.blur(P.mask([_ellipse((0, 1.15), 0.22, 0.3, 0, 24)]), 0.05)
    # thigh muscles along the femora, the (darker) true pelvis
    thighs = [_ellipse((sx * _uniform(rng, 0.75, 0.95), 1.5), 0.42, 1.1, -sx * 6, 32) for sx in (-1, 1)]
    soft += 0.12 * P.blur(P.mask(thighs), 0.12)
    soft -= np.float32(_uniform(rng, 0.06, 0.15)) * P.blur(P.mask([_ellipse((0, -0.3), 0.45, 0.42, 0, 32)]), 0.1)
    soft *= 1.0 + 0.08 * _smooth_noise(rng, H, W, 6)
    soft *= np.float32(_uniform(rng, 0.3, 0.45))
    # bowel gas in the abdomen and true pelvis
    n_gas = int(rng.integers(3, 12))
    gas = [_ellipse((_uniform(rng, -0.9, 0.9), _uniform(rng, -1.6, -0.35)), _uniform(rng, 0.03, 0.14),
                    _uniform(rng, 0.03, 0.1), _uniform(rng, 0, 180), 20) for _ in range(n_gas)]
    soft -= np.float32(_uniform(rng, 0.05, 0.15)) * P.blur(P.mask(gas), 0.015)
    # mottled bowel content over the abdomen and the true pelvis
    belly = P.blur(P.mask([_ellipse((0, -1.1), 0.95, 0.85, 0, 32)]), 0.15)
    mottle = np.clip(_smooth_noise(rng, H, W, int(rng.integers(25, 45))) - 0.6, 0, None)
    soft -= np.float32(_uniform(rng, 0.08, 0.2)) * belly * mottle

    # ---------------------------------------------------------- spine and sacrum
    bone = np.zeros((H, W), np.float32)
    sw = anat.sacrum_w
    s_half = np.array([[-0.26, -0.86], [-0.36, -0.78], [-0.33, -0.6], [-0.25, -0.42], [-0.15, -0.27],
                       [-0.08, -0.14], [-0.03, -0.06]]) * [sw, 1]
    sacrum = _chaikin(np.concatenate([s_half, (s_half * [-1, 1])[::-1]]), 2, closed=True)
    seg_lines = [np.array([[-0.4 * sw * f, y], [0.4 * sw * f, y]])
                 for y, f in ((-0.7, 0.9), (-0.56, 0.75), (-0.43, 0.55), (-0.32, 0.4), (-0.22, 0.25))]
    foramina = [_ellipse((sx * 0.15 * sw * f, y), 0.032 * f, 0.028, 0, 14)
                for y, f in ((-0.63, 1.0), (-0.5, 0.85), (-0.38, 0.65)) for sx in (-1, 1)]
    spine = 0.2 * P.blur(P.mask([sacrum], holes=foramina), 0.02) * (1.0 - 0.4 * P.mask(lines=seg_lines,
                                                                                      line_w=0.025))
    bodies, pedicles, procs = [], [], []
    y = -0.9
    while y > -4.0:
        hgt = 0.16
        bodies.append(_chaikin(np.array([[-0.2, y], [0.2, y], [0.21, y - hgt], [-0.21, y - hgt]]), 2, True))
        pedicles += [_ellipse((sx * 0.13, y - hgt / 2), 0.035, 0.05, 0, 16) for sx in (-1, 1)]
        procs += [np.array([[sx * 0.2, y - hgt * 0.45], [sx * 0.38, y - hgt * 0.6],
                            [sx * 0.38, y - hgt * 0.35], [sx * 0.2, y - hgt * 0.2]]) for sx in (-1, 1)]
        y -= hgt + 0.07
    spine += 0.32 * P.mask(bodies) + 0.14 * P.mask(procs) + 0.22 * P.mask(lines=pedicles, line_w=0.02,
                                                                        closed_lines=True)
    bone += 0.6 * P.blur(spine, 0.02)

    # ---------------------------------------------------------- hips
    def both(attr):
        return [to_p[s](getattr(shapes[s], attr)) for s in SIDES]

    ilium = P.blur(P.mask(both("ilium")), 0.004)
    # thin wing bone: brighter towards its rim (crest) than in the middle
    dist = cv2.distanceTransform((ilium > 0.5).astype(np.uint8), cv2.DIST_L2, 3) / P.scale
    rim = np.exp(-dist / 0.07).astype(np.float32)
    bone += (0.24 + 0.16 * rim) * ilium * (1.0 + 0.3 * _smooth_noise(rng, H, W, 10))
    bone += 0.22 * P.blur(P.mask(both("ilium_body")), 0.04) * ilium
    bone += 0.12 * P.mask(lines=both("ilium"), line_w=0.014, closed_lines=True) * ilium
    bone += 0.25 * P.mask(both("roof_band")) + 0.25 * P.mask(both("sourcil"))
    bone += P.blur(0.4 * P.mask(both("ischium")) + 0.3 * P.mask(both("pubis"), holes=both("foramen")
                                                                  + both("ischium")), 0.008)
    femur = P.mask(both("femur"))
    femur = P.blur(femur, 0.003)
    bone += 0.75 * femur - 0.42 * P.blur(P.mask(both("medulla")), 0.02) * femur
    bone += 0.35 * P.mask(both("meta_band"))
    soft += 0.1 * P.blur(P.mask(both("head")), 0.01)        # cartilaginous heads: barely denser
    nuclei = [to_p[s](shapes[s].nucleus) for s in SIDES if shapes[s].nucleus is not None]
    if nuclei:
        bone += 0.65 * P.blur(P.mask(nuclei), 0.006)

    tex = 1.0 + 0.12 * _smooth_noise(rng, H, W, 40) + 0.06 * _smooth_noise(rng, H, W, 120)
    bone *= tex
    return P.blur(np.maximum(soft, 0) + bone, 0.003)


def _photometry(rng, P: _Painter, att: np.ndarray) -> np.ndarray:
    H, W = att.shape
    val = 1.0 - np.exp(-_uniform(rng, 1.0, 1.5) * att)
    sig = _uniform(rng, 0.4, 1.1) * max(H, W) / 512      # modest: the roof and its corner stay crisp
    if sig > 0.3:
        val = cv2.GaussianBlur(val, (0, 0), sig)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy = W * _uniform(rng, 0.35, 0.65), H * _uniform(rng, 0.35, 0.65)
    r2 = ((xx - cx) / W) ** 2 + ((yy - cy) / H) ** 2
    val *= (1.0 - _uniform(rng, 0.0, 0.6) * r2) * (1.0 + _uniform(rng, -0.15, 0.15) * (yy / H - 0.5))
    lo, hi = _uniform(rng, 0.01, 0.07), _uniform(rng, 0.55, 0.88)
    gamma = float(np.exp(rng.normal(0.0, 0.2)))
    val = lo + (hi - lo) * np.clip(val, 0, 1) ** gamma
    noise = rng.standard_normal((H, W)).astype(np.float32)
    grain = cv2.GaussianBlur(noise, (0, 0), 0.8)
    val += (_uniform(rng, 0.003, 0.02) * noise + _uniform(rng, 0.01, 0.04) * grain) * np.sqrt(val + 0.05)
    overlay = np.zeros((H, W), np.uint8)                    # line artefact and side marker
    if rng.random() < 0.3:                                  # a thin line across the film
        y0 = _uniform(rng, 0.03, 0.97) * H
        t = max(1, int(round(H / 300)))
        cv2.line(overlay, (0, int(y0)), (W - 1, int(y0 + _uniform(rng, -0.02, 0.02) * H)),
                 int(_uniform(rng, 120, 230)), t, cv2.LINE_AA)
    if rng.random() < 0.35:                                 # collimation: a darker strip at the edges
        for edge in range(4):
            if rng.random() < 0.5:
                k = int(_uniform(rng, 0.0, 0.035) * (W if edge < 2 else H))
                if k:
                    sl = [np.s_[:, :k], np.s_[:, W - k:], np.s_[:k, :], np.s_[H - k:, :]][edge]
                    val[sl] *= 0.35
    if rng.random() < 0.4:                                  # side marker
        fs = min(H, W) / 400
        org = (int(_uniform(rng, 0.03, 0.12) * W), int(_uniform(rng, 0.06, 0.14) * H))
        if rng.random() < 0.5:
            org = (W - org[0] - int(20 * fs), org[1])
        cv2.putText(overlay, "R" if rng.random() < 0.5 else "L", org, cv2.FONT_HERSHEY_SIMPLEX, fs,
                    int(_uniform(rng, 200, 255)), max(1, int(2 * fs)), cv2.LINE_AA)
    val = np.maximum(val, overlay.astype(np.float32) * np.float32(1 / 255))
    return np.clip(val * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_phantom(rng, size: int = 512, layout="ihdi12", grade_mix=DEFAULT_GRADE_MIX,
                   grades: Optional[Sequence[int]] = None, anatomy: Optional[PelvisAnatomy] = None,
                   return_film: bool = False):
    """One phantom in memory: ``(image uint8 (H, W), keypoints (N, 2), boxes {"left", "right"})``.

    ``rng`` is a ``numpy.random.Generator`` (or a seed). The keypoints are rounded exactly as
    ``write_annotation`` stores them, so geometry computed on them equals what is computed
    from a written annotation. ``grades=(left, right)`` forces the IHDI grades. With
    ``return_film=True`` the ``Film`` (targets, pixel spacing) is returned instead.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    film = render_film(rng, size, layout, anatomy=anatomy, grade_mix=grade_mix, grades=grades)
    if return_film:
        return film
    return film.image, film.keypoints, film.boxes


# ============================================================== dataset folder
def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"output folder {out} is not empty (use --overwrite to replace the dataset in it)")
        for sub in _SUBDIRS:
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)
        for f in ("metadata.csv", "synthetic_config.json"):
            if (out / f).is_file():
                (out / f).unlink()
    out.mkdir(parents=True, exist_ok=True)
    for sub in _SUBDIRS:
        (out / sub).mkdir(exist_ok=True)


def generate_dataset(out, n: int, seed: int = 0, size: int = 512, layout: str = "ihdi12",
                     grade_mix=DEFAULT_GRADE_MIX, overwrite: bool = False, patients: Optional[int] = None,
                     progress: bool = True) -> Path:
    """Write ``n`` phantoms as a dataset folder (DESIGN.md section 5) and return its path.

    Image ``i`` depends only on ``(seed, i)`` (and its patient), so the same seed gives
    byte-identical files and a larger ``n`` extends a smaller set. ``patients=N`` (N <= n)
    spreads the films over N patients: films of one patient share the anatomy (same IHDI
    grades, AI within a degree or two) and differ in pose and exposure.
    """
    from tqdm import tqdm

    out = Path(out)
    n, size = int(n), int(size)
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if size < 64:
        raise UserError(f"--size must be at least 64 pixels, got {size}")
    try:
        lay = get_layout(layout)
    except ValueError as e:
        raise UserError(str(e)) from None
    mix = parse_grade_mix(grade_mix)
    if patients is not None and not 1 <= int(patients) <= n:
        raise UserError(f"--patients must be between 1 and --n ({n}), got {patients}")
    _prepare_out(out, overwrite)

    if patients is None:
        patient_of = np.arange(n)
    else:
        k = int(patients)
        prng = np.random.default_rng([seed, 2, k])
        patient_of = np.concatenate([np.arange(k), prng.integers(0, k, n - k)])
        prng.shuffle(patient_of)
    anatomies: Dict[int, PelvisAnatomy] = {}
    film_count: Dict[int, int] = {}
    rows = []
    write_classes(out / "yolo_labels")
    for i in tqdm(range(n), desc="phantoms", unit="img", disable=not progress):
        pid = int(patient_of[i])
        if pid not in anatomies:
            anatomies[pid] = sample_anatomy(np.random.default_rng([seed, 0, pid]), mix, layout=lay)
        anat = anatomies[pid]
        rng = np.random.default_rng([seed, 1, i])
        if film_count.get(pid, 0) > 0:
            anat = jitter_anatomy(rng, anat)
        film_count[pid] = film_count.get(pid, 0) + 1
        film = render_film(rng, size, lay, anatomy=anat)
        stem = f"synth_{i:05d}"
        H, W = film.image.shape
        if not cv2.imwrite(str(out / "images" / f"{stem}.png"), film.image):
            raise UserError(f"cannot write {out / 'images' / (stem + '.png')}")
        write_annotation(out / "annotations" / f"{stem}.csv", film.keypoints)
        write_detection(out / "detections" / f"{stem}.json", film.boxes, f"{stem}.png")
        write_yolo_label(out / "yolo_labels" / f"{stem}.txt", film.boxes, W, H)
        # ground truth from the keypoints exactly as written
        ai_l, ai_r = acetabular_index(film.keypoints, lay)
        g_l, g_r = ihdi_grade(film.keypoints, lay)
        rows.append({"stem": stem, "patient_id": f"P{pid:05d}",
                     "pixel_spacing_mm": round(film.pixel_spacing_mm, 6),
                     "ai_left": ai_l, "ai_right": ai_r, "ihdi_left": g_l, "ihdi_right": g_r,
                     "width": W, "height": H})
    write_metadata(out, rows)
    (out / "synthetic_config.json").write_text(json.dumps(
        {"generator": "datasets.synthetic", "n": n, "seed": seed, "size": size, "layout": lay.name,
         "grade_mix": list(mix), "patients": patients}, indent=1) + "\n")
    grades = np.array([[r["ihdi_left"], r["ihdi_right"]] for r in rows]).ravel()
    ais = np.array([[r["ai_left"], r["ai_right"]] for r in rows]).ravel()
    log.info("wrote %d phantoms to %s: IHDI I/II/III/IV hips = %s, AI %.1f-%.1f deg", n, out,
             "/".join(str(int((grades == g).sum())) for g in (1, 2, 3, 4)), ais.min(), ais.max())
    return out


# ============================================================== contact sheet
_SIDE_COLOURS = {"left": (60, 200, 255), "right": (255, 160, 60)}


def draw_annotations(gray: np.ndarray, keypoints=None, boxes=None, layout=None, text: str = "") -> np.ndarray:
    """BGR overlay of keypoints (numbered), H-line and boxes on a gray image."""
    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    t = max(1, int(round(max(gray.shape) / 400)))
    if boxes:
        for s in SIDES:
            if s in boxes and boxes[s] is not None:
                x1, y1, x2, y2 = [int(round(v)) for v in boxes[s]]
                cv2.rectangle(img, (x1, y1), (x2, y2), _SIDE_COLOURS[s], t)
    if keypoints is not None:
        lay = get_layout(layout) if layout else get_layout({12: "ihdi12", 8: "mtddh8"}[len(keypoints)])
        tl, tr = keypoints[lay.triradiate["left"]], keypoints[lay.triradiate["right"]]
        cv2.line(img, tuple(int(round(v)) for v in tl), tuple(int(round(v)) for v in tr), (0, 255, 0), 1,
                 cv2.LINE_AA)
        for s in SIDES:
            for idx in lay.side_indices[s]:
                x, y = keypoints[idx]
                cv2.circle(img, (int(round(x)), int(round(y))), 2 * t, _SIDE_COLOURS[s], -1, cv2.LINE_AA)
                cv2.putText(img, str(idx), (int(x) + 3 * t, int(y) - 2 * t), cv2.FONT_HERSHEY_SIMPLEX,
                            0.3 * t, (0, 255, 255), 1, cv2.LINE_AA)
    if text:
        cv2.putText(img, text, (4, 14 * t), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * t, (0, 255, 0), t, cv2.LINE_AA)
    return img


def _tile(images: List[np.ndarray], cell: int, cols: int) -> np.ndarray:
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * cell, cols * cell, 3), 32, np.uint8)
    for k, im in enumerate(images):
        h, w = im.shape[:2]
        f = cell / max(h, w)
        im = cv2.resize(im, (max(1, int(round(w * f))), max(1, int(round(h * f)))), interpolation=cv2.INTER_AREA)
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
        r, c = divmod(k, cols)
        y0, x0 = r * cell + (cell - im.shape[0]) // 2, c * cell + (cell - im.shape[1]) // 2
        sheet[y0:y0 + im.shape[0], x0:x0 + im.shape[1]] = im
    return sheet


def contact_sheet(dataset_dir, out_png, n: int = 16, draw_keypoints: bool = True, cell: int = 320,
                  cols: int = 4, real_dir=None) -> Path:
    """Tile the first ``n`` images of a dataset folder (keypoints, H-line, boxes and the
    metadata's AI/IHDI drawn when ``draw_keypoints``). ``real_dir`` appends a row of real
    films (any images in that folder) for comparison."""
    from datasets.formats import list_images, load_dataset
    from datasets.image_io import read_image

    records = load_dataset(dataset_dir)[:max(1, int(n))]
    tiles = []
    for rec in records:
        gray, _ = read_image(rec.image_path)
        if draw_keypoints:
            m = rec.meta
            text = ""
            if m.get("ai_left"):
                gl, gr = int(m["ihdi_left"]), int(m["ihdi_right"])
                text = f"L {float(m['ai_left']):.0f}d {'I II III IV'.split()[gl - 1]}  " \
                       f"R {float(m['ai_right']):.0f}d {'I II III IV'.split()[gr - 1]}"
            tiles.append(draw_annotations(gray, rec.keypoints, rec.boxes, text=text))
        else:
            tiles.append(gray)
    if real_dir is not None:
        real = [read_image(p)[0] for p in list_images(real_dir)[:cols]]
        while len(tiles) % cols:
            tiles.append(np.zeros((8, 8), np.uint8))
        tiles += real
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), _tile(tiles, cell, cols))
    return out_png


def _main(argv=None):
    from utils.errors import cli

    @cli
    def run():
        ap = argparse.ArgumentParser(prog="python -m datasets.synthetic",
                                     description="Contact sheet of a (synthetic) dataset folder.")
        ap.add_argument("--contact_sheet", required=True, metavar="OUT_PNG", help="PNG to write")
        ap.add_argument("dataset", help="dataset folder (images/, annotations/, detections/)")
        ap.add_argument("--n", type=int, default=16, help="number of images (default 16)")
        ap.add_argument("--no_keypoints", action="store_true", help="images only")
        ap.add_argument("--real", default=None, help="folder of real films to add as a last row")
        a = ap.parse_args(argv)
        p = contact_sheet(a.dataset, a.contact_sheet, n=a.n, draw_keypoints=not a.no_keypoints, real_dir=a.real)
        print(f"wrote {p}")

    run()


if __name__ == "__main__":
    _main()
