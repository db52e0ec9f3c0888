"""Outlines of the phantom's structures and its exact keypoints, in the side / pelvis frames.

Every keypoint is a corner or margin of a drawn structure:

- lateral acetabular edge: the corner where the roof, lined by a bright cortical band (the
  sourcil), ends and the outline turns (by at least 30 degrees) up into the short lateral iliac
  wall, which rises steeply or flares out laterally, above which the wing fans out laterally to
  the iliac crest;
- mid acetabular roof: the middle of the roof outline (a shallow curve);
- triradiate point: the inferomedial corner of the ilium above the Y-cartilage gap;
- metaphysis corners and the middle of its superior margin (a bright, straight line), on a
  femur with a flared metaphysis, the greater trochanter bulge laterally, the concave calcar
  medially and a tapering diaphysis;
- femoral head centre (``mtddh8``): the centre of the cartilaginous head and of its ossific
  nucleus when one is drawn. The nucleus lies below the roof line (and, in located hips, medial
  to the lateral edge), never over the ilium.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional

import numpy as np

from datasets.layouts import SIDES, get_layout
from datasets.synthetic.anatomy import GRADE4_HEAD_ABOVE, MIN_EDGE_TURN_DEG, TONNIS_TAU, HipAnatomy, PelvisAnatomy

# margin (fraction of the keypoints' extent) added on each side of a hip box
BOX_MARGIN = 0.20
# the roof's sclerotic band and sourcil are painted in this many strips along the roof (T -> E)
ROOF_PARTS = 5
# the ossific nucleus keeps this distance (D) below the roof line and above the metaphysis
NUCLEUS_CLEARANCE = 0.015


def chaikin(pts, iters: int = 2, closed: bool = False) -> np.ndarray:
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


def ellipse(c, ax, ay, angle_deg=0.0, n=40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a = np.radians(angle_deg)
    x, y = ax * np.cos(t), ay * np.sin(t)
    return np.stack([c[0] + x * np.cos(a) - y * np.sin(a), c[1] + x * np.sin(a) + y * np.cos(a)], axis=1)


def bezier(p0, c, p1, n=16) -> np.ndarray:
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
    roof_band_parts: list        # the band and the sourcil cut into ROOF_PARTS strips, from T to E,
    sourcil_parts: list          # so that the painter can fade them laterally
    roof: np.ndarray
    ischium: np.ndarray
    pubis: np.ndarray
    foramen: np.ndarray
    femur: np.ndarray
    medulla: np.ndarray
    meta_band: np.ndarray
    head: np.ndarray
    nucleus: Optional[np.ndarray]


def _nucleus_fits(h: HipAnatomy, C, E, H, dlat, up_m, rn: float) -> bool:
    a = np.radians(h.ai_deg)
    n_roof = np.array([np.sin(a), np.cos(a)])              # unit normal of the roof line, inferior
    above_meta = float((C - H) @ up_m)
    return (float(C @ n_roof) >= rn + NUCLEUS_CLEARANCE                  # below the roof line
            and above_meta >= rn + NUCLEUS_CLEARANCE                     # above the metaphysis margin
            and above_meta >= 0.03 + 0.25 * abs(float((C - H) @ dlat))   # over the neck
            and (h.grade > 2 or C[0] <= E[0] - 0.005 - (0.5 * rn if h.grade == 1 else 0.0))    # in the socket
            and (h.grade < 4 or C[1] <= E[1] + TONNIS_TAU - GRADE4_HEAD_ABOVE))   # dislocated: up at the edge


def place_head(h: HipAnatomy, E, H, dlat, up_m, Rh: float):
    """Centre of the femoral head (and of its ossific nucleus) and the nucleus radius.

    The head centre sits at the sampled offset from the H-point (real films: about 0.09 D above
    it), with the nucleus shrunk (down to 45%) until it fits. Where even then the nucleus would
    reach the roof line (the line triradiate -> lateral edge) or the metaphysis, or a located
    hip's head centre would lie lateral to the lateral edge, the head moves nearer the metaphysis and, for
    located hips (grades I-II), medially into the socket; for subluxated and dislocated hips
    (III-IV) laterally, away from the ilium. A nucleus that cannot fit shrinks, or is left out.
    """
    side = -1.0 if h.grade <= 2 else 1.0                     # shift along dlat: medial / lateral
    C0 = H + np.array([h.head_dp, h.head_dq])
    scales = (1.0, 0.8, 0.6, 0.45) if h.nucleus > 0 else (0.0,)
    for scale in scales:                                     # a smaller nucleus before a moved head
        if _nucleus_fits(h, C0, E, H, dlat, up_m, h.nucleus * scale):
            return C0, h.nucleus * scale
    for scale in scales[:3]:
        rn = h.nucleus * scale
        for j in np.linspace(0.0, 0.45 * h.meta_width, 10):
            for k in np.linspace(0.85, 0.4, 10):
                C = H + k * Rh * up_m + side * j * dlat
                if _nucleus_fits(h, C, E, H, dlat, up_m, rn):
                    return C, rn
    if h.nucleus > 0:                                        # no room for a nucleus: place the head alone
        C, _ = place_head(replace(h, nucleus=0.0), E, H, dlat, up_m, Rh)
        return C, 0.0
    return C0, 0.0                                           # (a head without nucleus: as it comes)


def _ilium(h: HipAnatomy, E, T, roof, wing_w: float, wing_h: float):
    """Open outline E -> lateral wall -> wing (fanning out to the crest) -> medial border -> T,
    then the roof back to E, and the denser iliac body. The corners at E and T stay sharp."""
    ww, wh = wing_w * h.wing, wing_h
    phi = np.radians(max(h.wall_deg, h.ai_deg + MIN_EDGE_TURN_DEG))   # steep even for a steep roof
    W1 = E + h.wall_len * np.array([np.cos(phi), -np.sin(phi)])
    W2 = W1 + [0.045, -0.06]               # the wall curves out to the anterior inferior iliac spine
    lateral = np.array([E, E + 0.5 * (W1 - E), W1, W2, W2 + [0.015, -0.06],      # AIIS, then the notch
                        [max(W2[0] + 0.14, 0.45 * ww), -0.4 * wh],                # anterior superior spine
                        [0.64 * ww, -0.6 * wh], [0.7 * ww, -0.8 * wh]])
    crest = np.array([[0.62 * ww, -1.0 * wh], [0.4 * ww, -1.1 * wh], [0.12 * ww, -1.06 * wh],
                      [-0.2, -0.95 * wh]])
    b = np.radians(h.ledge_deg)
    L = T + h.ledge_len * np.array([-np.cos(b), -np.sin(b)])   # end of the inferior border medial to T
    medial = np.array([[-0.28, -0.8 * wh], [-0.27, -0.6 * wh], [-0.2, -0.42], [-0.1 + L[0], -0.22],
                       [-0.04 + L[0], -0.08 + L[1]], [-0.004 + L[0], -0.02 + L[1]], L, T])
    # sacroiliac border, the pelvic brim, then the inferior border to T
    chain = chaikin(np.concatenate([lateral, crest, medial]), iters=2)
    ilium = np.concatenate([chain, roof[1:-1]])
    body = chaikin(np.array([E, W1 - [0.006, 0.0], W2 + [0.05, -0.1], [0.35 * ww, -0.42 * wh],
                             [0.0, -0.55 * wh], [-0.22, -0.5 * wh], [-0.14 + L[0], -0.28], [-0.04 + L[0], -0.09 + L[1]],
                             [-0.002 + L[0], -0.02 + L[1]], L, T]), 2)
    return ilium, np.concatenate([body, roof[1:-1]])


def _ischium_pubis(h: HipAnatomy, k: float):
    """Ischium below the Y-cartilage gap; pubis (superior ramus to the symphysis, body, inferior
    ramus) around the obturator foramen, not yet fused to the ischium."""
    g = h.gap
    isch = np.array([[-0.06, g + 0.004], [0.02, g], [0.085, g + 0.012], [0.1, 0.12], [0.095, 0.28],
                     [0.07, 0.42], [0.02, 0.48], [-0.04, 0.45], [-0.06, 0.32], [-0.075, 0.16],
                     [-0.07, g + 0.03]])
    isch = chaikin(isch * [1, k] + [h.lower_dp, g * (1 - k)], 2, closed=True)
    pub = np.array([[-0.07, g + 0.012], [-0.2, g + 0.03], [-0.34, 0.065], [-0.44, 0.09], [-0.48, 0.18],
                    [-0.46, 0.3], [-0.37, 0.4], [-0.22, 0.46], [-0.1, 0.47], [-0.07, 0.42],
                    [-0.06, 0.2]])
    pub = chaikin(pub * [1, k] + [h.lower_dp, g * (1 - k)], 2, closed=True)
    foramen = ellipse((-0.225 + h.lower_dp, 0.25 * k + g * (1 - k)), 0.15, 0.185 * k, -25, 32)
    tilt = np.radians(-14.0)                 # the superior ramus runs down medially to the symphysis
    rot = np.array([[np.cos(tilt), np.sin(tilt)], [-np.sin(tilt), np.cos(tilt)]])
    pivot = np.array([-0.06 + h.lower_dp, g])
    return isch, (pub - pivot) @ rot + pivot, (foramen - pivot) @ rot + pivot


def _femur(h: HipAnatomy, H):
    """Proximal femur: straight metaphysis margin Lc-Mc, trochanter bulge, calcar, diaphysis."""
    w = h.meta_width
    b = np.radians(h.meta_tilt_deg)
    dlat = np.array([np.cos(b), -np.sin(b)])
    n_down = np.array([np.sin(b), np.cos(b)])
    Lc, Mc = H + 0.5 * w * dlat, H - 0.5 * w * dlat
    ph = np.radians(h.shaft_deg)
    s = np.array([-np.sin(ph), np.cos(ph)])                 # down the shaft
    pl = np.array([np.cos(ph), np.sin(ph)])                 # lateral, across the shaft
    hw = 0.5 * h.shaft_w
    S0 = H + 0.04 * w * dlat + 0.015 * pl                   # the shaft axis starts a little lateral
    tr = 0.03 * h.troch                                     # the (cartilaginous) trochanter bulge
    lat_side = [Lc, Lc + 0.035 * n_down + [0.012 + tr, 0.0], S0 + 0.12 * s + (hw + 0.06 + tr) * pl,
                S0 + 0.3 * s + (hw + 0.02) * pl, S0 + 0.55 * s + hw * 1.0 * pl,
                S0 + 1.8 * s + hw * 0.93 * pl, S0 + 4.0 * s + hw * 1.0 * pl]
    med_side = [S0 + 4.0 * s - hw * 1.0 * pl, S0 + 1.8 * s - hw * 0.93 * pl, S0 + 0.55 * s - hw * 1.0 * pl,
                S0 + 0.3 * s - (hw + 0.03) * pl, S0 + 0.14 * s - (hw + 0.075) * pl,       # the calcar
                Mc + 0.035 * n_down + [0.012, 0.0], Mc]
    femur = chaikin(np.array(lat_side + med_side), iters=3)
    ct = 0.3 * hw                                            # cortical thickness of the diaphysis
    medulla = chaikin(np.array([S0 + 0.45 * s + (hw - ct) * pl, S0 + 4.0 * s + (hw - ct) * pl,
                                S0 + 4.0 * s - (hw - ct) * pl, S0 + 0.45 * s - (hw - ct) * pl,
                                S0 + 0.3 * s]), 2, closed=True)
    meta_band = np.array([Lc, Mc, Mc + 0.025 * n_down, Lc + 0.025 * n_down])
    return femur, medulla, meta_band, Lc, Mc, dlat, -n_down


def hip_shapes(h: HipAnatomy, wing_w: float, wing_h: float, ischium: float) -> HipShapes:
    """All outlines and named points of one hip in its side frame."""
    a = np.radians(h.ai_deg)
    r = h.roof_len
    T = np.zeros(2)
    E = np.array([r * np.cos(a), -r * np.sin(a)])
    up = np.array([-np.sin(a), -np.cos(a)])              # normal of the roof chord, into the bone
    ctrl = (T + E) / 2 + 2.0 * h.roof_sag * r * up        # Bezier midpoint = chord mid + sag * r * up
    roof = bezier(T, ctrl, E)
    mid_roof = 0.25 * T + 0.5 * ctrl + 0.25 * E
    ilium, ilium_body = _ilium(h, E, T, roof, wing_w, wing_h)
    band_w = 0.028                            # sclerotic band along the roof; its densest, thin cortical
    roof_band = np.concatenate([roof, (roof + band_w * up)[::-1]])          # line (the sourcil) lines
    sourcil = np.concatenate([roof, (roof + 0.011 * up)[::-1]])            # the edge from T to E
    band_parts, sourcil_parts = roof_strips(roof, up, band_w), roof_strips(roof, up, 0.011)
    isch, pub, foramen = _ischium_pubis(h, ischium)
    H = np.array([E[0] + h.hx, h.hy])
    femur, medulla, meta_band, Lc, Mc, dlat, up_m = _femur(h, H)
    Rh = h.head_ratio * h.meta_width
    C, rn = place_head(h, E, H, dlat, up_m, Rh)
    Rh = max(Rh, 1.05 * float(np.linalg.norm(C - H)), rn + 0.02)
    head = ellipse(C, Rh, Rh * 0.97, 0, 36)
    nucleus = ellipse(C, rn, rn * 0.92, 0, 28) if rn > 0 else None
    points = {"lateral_edge": E, "mid_roof": mid_roof, "triradiate": T, "metaphysis_lateral": Lc,
              "metaphysis_mid": (Lc + Mc) / 2, "metaphysis_medial": Mc, "head_centre": C}
    return HipShapes(points, ilium, ilium_body, roof_band, sourcil, band_parts, sourcil_parts, roof, isch, pub,
                     foramen, femur, medulla, meta_band, head, nucleus)


def roof_strips(roof: np.ndarray, up: np.ndarray, width: float, parts: int = ROOF_PARTS) -> list:
    """The strip of ``width`` along the roof polyline (into the bone, direction ``up``), cut into
    ``parts`` consecutive pieces of equal arc length from T to E (neighbours share their cut)."""
    seg = np.linalg.norm(np.diff(roof, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)]) / seg.sum()
    out = []
    for i in range(parts):
        a, b = i / parts, (i + 1) / parts
        inner = s[(s > a) & (s < b)]
        ts = np.concatenate([[a], inner, [b]])
        line = np.stack([np.interp(ts, s, roof[:, 0]), np.interp(ts, s, roof[:, 1])], axis=1)
        out.append(np.concatenate([line, (line + width * up)[::-1]]))
    return out


def side_to_pelvis(anat: PelvisAnatomy):
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
