"""The phantom's patient: sampled hip and pelvis anatomy, in units of D.

D is the distance between the two triradiate points. Each hip lives in its *side frame*:
origin at its triradiate point, p lateral along the H-line, q inferior (the frame of
``utils.hip_geometry``). The IHDI grade of a hip is chosen first (from the requested grade
mix) and its H-point is placed inside the grade's region of the IHDI local frame, away from
the region's borders, so the labels are exact and unambiguous. The AI, roof length, H-point
of IHDI-I hips and the head centre come from the fitted real statistics (``stats.py``),
drawn jointly.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from datasets.layouts import SIDES, get_layout
from datasets.synthetic.stats import PhantomStats, load_stats
from utils.errors import UserError

DEFAULT_GRADE_MIX = (0.55, 0.20, 0.15, 0.10)
# distance (D) kept between an H-point and the borders of its IHDI region (H-line, P-line, D-line)
GRADE_MARGIN = 0.02
# AI limits (degrees) of every phantom hip
AI_RANGE = (4.0, 50.0)
# lateral acetabular edge: the lateral iliac wall leaves the edge at WALL_DEG (degrees up from the
# lateral H-line direction; 90 = straight up, > 90 leaning medially, 45 flaring out laterally as the
# outline above the roof of a young child's hip often does), turning at least MIN_EDGE_TURN_DEG away
# from the roof, and runs straight for WALL_LEN (D) before flaring into the wing
WALL_DEG = (45.0, 96.0)
MIN_EDGE_TURN_DEG = 30.0
WALL_LEN = (0.08, 0.12)
# depth of the roof curve (fraction of the roof length; halved for grades III-IV)
ROOF_SAG = (0.0, 0.16)
# triradiate point: the inferomedial corner of the ilium. Medial to it the ilium's inferior border
# runs on for LEDGE_LEN (D), LEDGE_DEG up from the medial H-line direction, before it rises along the
# pelvic brim, so that the corner may turn by little more than the AI, as on real films; below it the
# Y-cartilage gap (GAP, D, less in older children) and the ischium and pubis, moved laterally by
# LOWER_DP (D), so that neither the gap's shape nor the bone below it says where the corner is
GAP = (0.025, 0.08)
LEDGE_LEN = (0.0, 0.07)
LEDGE_DEG = (-5.0, 25.0)
LOWER_DP = (-0.04, 0.04)
# a grade-IV metaphysis (both corners) lies at least this far (D) below the roof line (the line
# triradiate -> lateral edge), so that it does not project over the roof and its lateral edge
GRADE4_BELOW_ROOF = 0.03
# a grade-IV head centre lies at least this far (D) above the lower Toennis-III bound (0.03 D below
# the SMA line through the lateral edge): a dislocated head is at or above the roof edge, Toennis
# III-IV, never a located Toennis I-II head under an IHDI-IV metaphysis
GRADE4_HEAD_ABOVE = 0.015
TONNIS_TAU = 0.03        # utils.hip_geometry's Toennis III band, in units of the inter-triradiate distance
# age range of the phantom patients (months); ``maturity`` 0..1 spans it
AGE_MONTHS = (3.0, 48.0)


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
    shaft_deg: float        # femoral shaft inclination (> 0 converging medially downwards, < 0 abducted)
    head_ratio: float       # cartilaginous head radius / metaphysis width
    nucleus: float          # ossific nucleus radius (0: none)
    gap: float              # height of the triradiate cartilage gap
    wing: float             # iliac wing size factor (per side, small asymmetry)
    wall_deg: float = 90.0  # direction of the lateral iliac wall above the lateral edge
    wall_len: float = 0.1   # length of its straight part
    head_dp: float = -0.02  # femoral head centre minus H-point (p lateral, q inferior)
    head_dq: float = -0.09
    shaft_w: float = 0.26   # width of the femoral diaphysis
    troch: float = 1.0      # size factor of the greater trochanter bulge
    ledge_len: float = 0.0  # the ilium's inferior border medial to the triradiate point, before it rises
    ledge_deg: float = 0.0  # ... its direction (degrees up from the medial H-line direction)
    lower_dp: float = 0.0   # lateral offset of the ischium and pubis below the gap


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
    maturity: float         # 0: youngest (3 months) .. 1: oldest (4 years)


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
    """H-point (x lateral, y inferior) in the hip's local frame, inside ``grade``'s region
    (the generic sampler; IHDI-I hips of ``sample_anatomy`` follow the real statistics)."""
    m = margin
    if grade == 1:
        return _uniform(rng, -0.12, -m), _uniform(rng, 0.12, 0.24)
    if grade == 2:
        x = _uniform(rng, m, 0.11)
        return x, _uniform(rng, x + m, max(x + m + 0.05, 0.24))
    if grade == 3:
        x = _uniform(rng, 0.08, 0.26)
        return x, _uniform(rng, m, x - m)
    if grade == 4:
        return _uniform(rng, -0.05, 0.25), _uniform(rng, -0.16, -m)
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


def below_roof(pt, ai_deg: float, roof_len: float) -> float:
    """Signed distance (D) of a local-frame point (x from the P-line, y from the H-line) below the
    roof line, the line through the triradiate point and the lateral edge (positive: inferior)."""
    a = np.radians(ai_deg)
    p = roof_len * np.cos(a) + pt[0]                       # side-frame p (origin at the triradiate point)
    return float(p * np.sin(a) + pt[1] * np.cos(a))


def _sample_hip_geometry(rng, grade: int, width: float, tilt: float, st: PhantomStats):
    """AI, roof length, local H-point and head offset of one hip. A joint draw from the real
    IHDI-I hips (rejected until the AI is inside AI_RANGE and, for grade I, the H-point inside
    the grade's region); grades II-IV add the grade's AI shift and take the H-point from
    ``sample_hpoint``."""
    shift = 0.0 if grade == 1 else st.ai_shift.get(grade, 0.0)
    for _ in range(1000):
        g = st.sample_hip(rng)
        ai = g["ai_deg"] + shift + (float(rng.normal(0, 2.0)) if grade > 1 else 0.0)
        x = g["hpoint_p"] - g["roof_len"] * np.cos(np.radians(ai))
        if AI_RANGE[0] <= ai <= AI_RANGE[1] and (grade > 1 or (x <= -GRADE_MARGIN and g["hpoint_q"] >= GRADE_MARGIN)):
            break
    else:
        ai = float(np.clip(ai, *AI_RANGE))
    roof_len = g["roof_len"]
    if grade == 1:
        hx, hy = clip_to_grade(x, g["hpoint_q"], 1)
    else:
        hx, hy = sample_hpoint(rng, grade)
    if grade == 4:       # a dislocated femur rides up lateral to the acetabulum, not over its roof
        b = np.radians(tilt)
        half = 0.5 * width * np.array([np.cos(b), -np.sin(b)])      # H-point -> lateral metaphysis corner
        for _ in range(1000):
            if min(below_roof(np.add((hx, hy), half), ai, roof_len),
                   below_roof(np.subtract((hx, hy), half), ai, roof_len)) >= GRADE4_BELOW_ROOF:
                break
            hx, hy = sample_hpoint(rng, grade)
        else:                                             # (not reached in practice)
            hx, hy = 0.3, -GRADE_MARGIN - 0.01
    head_dq = g["head_dq"]
    if grade == 4:       # the head centre no lower than the roof edge's level (less the Toennis III band)
        edge_q = -roof_len * np.sin(np.radians(ai))
        head_dq = min(head_dq, edge_q + TONNIS_TAU - GRADE4_HEAD_ABOVE - hy)
    return ai, roof_len, hx, hy, g["head_dp"], head_dq


def _sample_hip(rng, grade: int, maturity: float, layout_name: str, st: PhantomStats) -> HipAnatomy:
    width = _uniform(rng, 0.34, 0.44) * (0.92 + 0.12 * maturity)
    tilt = _uniform(rng, -4.0, 14.0)
    ai, roof_len, hx, hy, head_dp, head_dq = _sample_hip_geometry(rng, grade, width, tilt, st)
    # the ossific nucleus appears from about 4-6 months on; later in dysplastic hips
    p_nucleus = float(np.clip((maturity - 0.02) / 0.12, 0.0, 0.95)) * (0.7 if grade >= 3 else 1.0)
    if layout_name == "mtddh8":          # the head centre is a keypoint: make it visible more often
        p_nucleus = max(p_nucleus, 0.85)
    nucleus = 0.0
    if rng.random() < p_nucleus:
        nucleus = (0.025 + 0.055 * maturity) * _uniform(rng, 0.8, 1.15) * (0.75 if grade >= 3 else 1.0)
    return HipAnatomy(
        grade=grade, ai_deg=ai, roof_len=roof_len,
        roof_sag=_uniform(rng, *ROOF_SAG) * (0.5 if grade >= 3 else 1.0),
        hx=hx, hy=hy, meta_width=width, meta_tilt_deg=tilt,
        shaft_deg=_uniform(rng, -11.0, -2.0) + (3.0 if grade >= 3 else 0.0),
        head_ratio=_uniform(rng, 0.42, 0.55), nucleus=nucleus,
        gap=_uniform(rng, *GAP) - 0.015 * maturity,
        ledge_len=_uniform(rng, *LEDGE_LEN), ledge_deg=_uniform(rng, *LEDGE_DEG), lower_dp=_uniform(rng, *LOWER_DP),
        wing=_uniform(rng, 0.96, 1.04),
        wall_deg=_uniform(rng, *WALL_DEG), wall_len=_uniform(rng, *WALL_LEN),
        head_dp=head_dp, head_dq=head_dq,
        shaft_w=width * _uniform(rng, 0.55, 0.66), troch=_uniform(rng, 0.7, 1.3),
    )


def sample_anatomy(rng, grade_mix=DEFAULT_GRADE_MIX, grades: Optional[Sequence[int]] = None,
                   layout="ihdi12", stats: Optional[PhantomStats] = None) -> PelvisAnatomy:
    """A patient's pelvis. ``grades`` = (left, right) forces the IHDI grades; otherwise each
    hip draws its grade independently from ``grade_mix`` (probabilities of I-IV). ``stats``
    (default: ``load_stats()``) holds the fitted real-film distributions."""
    st = stats if stats is not None else load_stats()
    lay = get_layout(layout)
    mix = np.asarray(parse_grade_mix(grade_mix), dtype=float)
    maturity = _uniform(rng, 0.0, 1.0)
    if grades is None:
        grades = [int(rng.choice(4, p=mix)) + 1 for _ in SIDES]
    hips = {s: _sample_hip(rng, int(g), maturity, lay.name, st) for s, g in zip(SIDES, grades)}
    return PelvisAnatomy(
        hips=hips,
        tri_offset=(0.0, float(rng.normal(0.0, 0.008)), 0.0, float(rng.normal(0.0, 0.008))),
        wing_w=_uniform(rng, 0.88, 1.1), wing_h=_uniform(rng, 0.88, 1.08),
        ischium=_uniform(rng, 0.9, 1.1), sacrum_w=_uniform(rng, 0.9, 1.1),
        body_w=_uniform(rng, 0.9, 1.15),
        d_mm=_uniform(rng, 50.0, 64.0) + 22.0 * maturity, maturity=maturity,
    )


def jitter_anatomy(rng, anat: PelvisAnatomy) -> PelvisAnatomy:
    """The same patient on another film: small changes of AI and H-point, same grades."""
    hips = {}
    for s, h in anat.hips.items():
        x, y = clip_to_grade(h.hx + rng.normal(0, 0.01), h.hy + rng.normal(0, 0.01), h.grade)
        hips[s] = replace(h, ai_deg=float(np.clip(h.ai_deg + rng.normal(0, 1.0), *AI_RANGE)), hx=x, hy=y,
                          meta_tilt_deg=h.meta_tilt_deg + float(rng.normal(0, 2.0)))
    return replace(anat, hips=hips)
