"""Film geometry (pose) and attenuation painting of one phantom.

``plan_film`` places a patient's pelvis in an image (a similarity transform whose scale,
position and H-line tilt follow the fitted real statistics) and computes the exact
keypoints and boxes without painting; ``render_film`` paints the attenuation map of the
anatomy (soft tissue envelope, spine, sacrum, pelvis, femora) and passes it through the
film's photometry (``photometry.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from datasets.formats import round_keypoints
from datasets.layouts import SIDES, get_layout
from datasets.synthetic.anatomy import DEFAULT_GRADE_MIX, PelvisAnatomy, sample_anatomy
from datasets.synthetic.photometry import photometry, smooth_noise, uniform  # noqa: F401 (re-exported)
from datasets.synthetic.shapes import hip_box, hip_shapes, layout_keypoints, side_to_pelvis
from datasets.synthetic.stats import PhantomStats, load_stats
from utils.hip_geometry import acetabular_index, ihdi_grade
from datasets.synthetic.paint import draw_anatomy

# image aspect (width / height) of a phantom film
ASPECT = (0.8, 1.3)


class Painter:
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


@dataclass
class Film:
    image: Optional[np.ndarray]             # uint8 (H, W); None for a geometry-only plan
    keypoints: np.ndarray                   # (N, 2) as written (rounded)
    boxes: Dict[str, np.ndarray]            # side -> (x1, y1, x2, y2)
    pixel_spacing_mm: float
    target_grades: Tuple[int, int]
    target_ai: Tuple[float, float]
    info: Dict = field(default_factory=dict)


def sample_pose(rng, width: int, height: int, maps, side_pts: Dict[str, np.ndarray], st: PhantomStats):
    """Similarity transform pelvis frame -> image: the inter-triradiate distance (fraction of the
    width), the triradiate midpoint (fractions of width and height) and the H-line tilt are drawn
    from the real statistics; draws that leave a hip point within 3% of the border are redrawn."""
    tl, tr = maps["left"](np.zeros(2)), maps["right"](np.zeros(2))
    d_p = float(np.linalg.norm(tr - tl))
    ang_p = float(np.arctan2(tr[1] - tl[1], tr[0] - tl[0]))
    mid_p = (tl + tr) / 2
    pad = 0.03 * min(width, height)
    allp = np.concatenate([side_pts[s] for s in SIDES])
    for attempt in range(100):
        shrink = 0.97 ** max(0, attempt - 50)
        scale = st.sample("d_frac", rng) * width / d_p * shrink
        theta = np.radians(st.sample("tilt_deg", rng)) - ang_p
        R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) * scale
        mid = np.array([st.sample("hip_x", rng) * width, st.sample("hip_y", rng) * height])
        if attempt >= 80:
            mid = np.array([width / 2, height / 2])
        M = np.concatenate([R, (mid - R @ mid_p)[:, None]], axis=1)
        p = allp @ M[:, :2].T + M[:, 2]
        if p[:, 0].min() >= pad and p[:, 1].min() >= pad and p[:, 0].max() <= width - 1 - pad \
                and p[:, 1].max() <= height - 1 - pad:
            return M, scale
    raise RuntimeError("could not fit the hips inside the image")   # not reached with sane sizes


def plan_film(rng, size: int = 512, layout="ihdi12", anatomy: Optional[PelvisAnatomy] = None,
              grade_mix=DEFAULT_GRADE_MIX, grades: Optional[Sequence[int]] = None,
              stats: Optional[PhantomStats] = None):
    """Geometry of one film without painting: ``(film with image None, painting context)``."""
    st = stats if stats is not None else load_stats()
    lay = get_layout(layout)
    size = int(size)
    if anatomy is None:
        anatomy = sample_anatomy(rng, grade_mix, grades, lay, stats=st)
    aspect = uniform(rng, *ASPECT)                      # width / height
    W, H = (size, int(round(size / aspect))) if aspect >= 1 else (int(round(size * aspect)), size)
    maps = side_to_pelvis(anatomy)
    shapes = {s: hip_shapes(anatomy.hips[s], anatomy.wing_w, anatomy.wing_h, anatomy.ischium) for s in SIDES}
    named = {s: {k: maps[s](v) for k, v in shapes[s].points.items()} for s in SIDES}
    M, scale = sample_pose(rng, W, H, maps, {s: np.array(list(named[s].values())) for s in SIDES}, st)
    P = Painter(W, H, M)
    kps_img = {s: {k: P.px(v) for k, v in named[s].items()} for s in SIDES}
    keypoints = round_keypoints(layout_keypoints(kps_img, lay))
    boxes = {s: hip_box(np.array(list(kps_img[s].values())), W, H) for s in SIDES}
    film = Film(image=None, keypoints=keypoints, boxes=boxes, pixel_spacing_mm=anatomy.d_mm / scale,
                target_grades=tuple(anatomy.hips[s].grade for s in SIDES),
                target_ai=tuple(anatomy.hips[s].ai_deg for s in SIDES),
                info={"width": W, "height": H})
    return film, (P, anatomy, shapes, maps)


def render_film(rng, size: int = 512, layout="ihdi12", anatomy: Optional[PelvisAnatomy] = None,
                grade_mix=DEFAULT_GRADE_MIX, grades: Optional[Sequence[int]] = None,
                stats: Optional[PhantomStats] = None) -> Film:
    """Render one phantom film. ``anatomy`` (from ``sample_anatomy``) fixes the patient;
    otherwise one is drawn from ``rng``."""

    lay = get_layout(layout)
    film, (P, anatomy, shapes, maps) = plan_film(rng, size, lay, anatomy, grade_mix, grades, stats)
    att = draw_anatomy(rng, P, anatomy, shapes, maps)
    film.image = photometry(rng, P, att)
    film.info.update({"ai": acetabular_index(film.keypoints, lay), "grades": ihdi_grade(film.keypoints, lay)})
    return film


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
