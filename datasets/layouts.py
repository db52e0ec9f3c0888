"""Keypoint layouts as data (docs/CONVENTIONS.md, "Keypoint layouts").

A layout says how many points an image carries, which indices belong to each
(image) side, how a side's points are permuted when the side is mirrored, which
points define the acetabular index and how the H-point (the femoral point used
for the IHDI grade) is formed.

Sides are *image* sides: ``left`` is the hip drawn on the image-left, which on
an AP film is the patient's right hip.

``stage_layout(layout, stage)`` is the points a refiner predicts as a layout of their own
(docs/accuracy.md): ``roof_layout(layout)``, the acetabular roof (lateral edge, mid roof where
the layout has one, triradiate point: ``--stage roof``), and the proximal femur (ihdi12's three
metaphysis points, mtddh8's head centre and H-point: ``--stage femur``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

SIDES = ("left", "right")


@dataclass(frozen=True)
class KeypointLayout:
    name: str
    num_points: int
    # absolute indices of each side's points, in the order they are stored
    side_indices: Dict[str, Tuple[int, ...]]
    # within-side permutation applied after a horizontal mirror
    mirror_perm: Tuple[int, ...]
    # absolute index of the lateral acetabular edge and the triradiate point per side
    lateral_edge: Dict[str, int]
    triradiate: Dict[str, int]
    # absolute indices averaged to form the H-point per side (one index = that point)
    hpoint: Dict[str, Tuple[int, ...]]
    # human-readable names of a side's points in *left-side* order
    point_names: Tuple[str, ...]

    @property
    def points_per_side(self) -> int:
        return len(self.mirror_perm)

    def side_slice(self, side: str) -> np.ndarray:
        """Absolute indices of ``side``'s points (numpy array, usable for fancy indexing)."""
        return np.asarray(self.side_indices[_check_side(side)], dtype=int)

    def local(self, side: str, absolute_index: int) -> int:
        """Position of an absolute index within its side's block."""
        return self.side_indices[side].index(absolute_index)

    def side_point_names(self, side: str) -> Tuple[str, ...]:
        """Names of ``side``'s points in stored order."""
        if side == "left":
            return self.point_names
        return tuple(self.point_names[p] for p in self.mirror_perm)


def _check_side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    return side


IHDI12 = KeypointLayout(
    name="ihdi12",
    num_points=12,
    side_indices={"left": (0, 1, 2, 3, 4, 5), "right": (6, 7, 8, 9, 10, 11)},
    mirror_perm=(2, 1, 0, 5, 4, 3),
    lateral_edge={"left": 0, "right": 8},
    triradiate={"left": 2, "right": 6},
    hpoint={"left": (3, 5), "right": (9, 11)},
    point_names=(
        "lateral_edge",
        "mid_roof",
        "triradiate",
        "metaphysis_lateral",
        "metaphysis_mid",
        "metaphysis_medial",
    ),
)

MTDDH8 = KeypointLayout(
    name="mtddh8",
    num_points=8,
    side_indices={"left": (0, 1, 2, 3), "right": (4, 5, 6, 7)},
    mirror_perm=(0, 1, 2, 3),
    lateral_edge={"left": 0, "right": 4},
    triradiate={"left": 1, "right": 5},
    hpoint={"left": (3,), "right": (7,)},
    point_names=("lateral_edge", "triradiate", "head_centre", "h_point"),
)

LAYOUTS: Dict[str, KeypointLayout] = {IHDI12.name: IHDI12, MTDDH8.name: MTDDH8}


def get_layout(layout) -> KeypointLayout:
    """Return a layout given its name (``"ihdi12"``/``"mtddh8"``, or ``"ihdi12_roof"``, ``"ihdi12_femur"``
    for a refiner's ``stage_layout``) or a layout object."""
    if isinstance(layout, KeypointLayout):
        return layout
    name = str(layout)
    for stage in REFINE_STAGES:   # a refiner's layout, "<layout>_<stage>"
        base = name[: -len(stage) - 1]
        if name == f"{base}_{stage}" and base in LAYOUTS:
            return stage_layout(base, stage)
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown keypoint layout {layout!r}; known: {', '.join(LAYOUTS)}") from None


# ---------------------------------------------------------------- the refiners' point groups
ROOF_POINT_NAMES = ("lateral_edge", "mid_roof", "triradiate")
# the proximal femur: ihdi12's metaphysis line, mtddh8's head centre and H-point
FEMUR_POINT_NAMES = ("metaphysis_lateral", "metaphysis_mid", "metaphysis_medial", "head_centre", "h_point")
# a refiner's stage -> the names of the points it predicts (those the layout has)
REFINE_STAGES: Dict[str, Tuple[str, ...]] = {"roof": ROOF_POINT_NAMES, "femur": FEMUR_POINT_NAMES}


def _check_stage(stage: str) -> str:
    if stage not in REFINE_STAGES:
        raise ValueError(f"unknown refiner stage {stage!r}; known: {', '.join(REFINE_STAGES)}")
    return stage


def stage_positions(layout, side: str, stage: str) -> Tuple[int, ...]:
    """Positions, within ``side``'s block in its stored order, of the points a ``stage`` refiner
    predicts (the names in ``REFINE_STAGES[stage]`` that the layout has): roof: ihdi12 (0, 1, 2),
    mtddh8 (0, 1); femur: ihdi12 (3, 4, 5), mtddh8 (2, 3)."""
    lay = get_layout(layout)
    names = REFINE_STAGES[_check_stage(stage)]
    return tuple(j for j, n in enumerate(lay.side_point_names(_check_side(side))) if n in names)


def stage_indices(layout, side: str, stage: str) -> np.ndarray:
    """Absolute indices of ``side``'s ``stage`` points, in the side's stored order."""
    lay = get_layout(layout)
    return lay.side_slice(side)[list(stage_positions(lay, side, stage))]


def roof_positions(layout, side: str) -> Tuple[int, ...]:
    """``stage_positions`` of the acetabular roof: lateral edge, mid roof where the layout has one,
    triradiate point."""
    return stage_positions(layout, side, "roof")


def roof_indices(layout, side: str) -> np.ndarray:
    """Absolute indices of ``side``'s roof points, in the side's stored order."""
    return stage_indices(layout, side, "roof")


def stage_layout(layout, stage: str) -> KeypointLayout:
    """The points of a ``stage`` refiner as a layout (named ``<layout>_<stage>``): per side
    ``stage_positions`` of the side's block, in its stored order (left block first), with the
    mirror permutation restricted to them. Its points are those of ``stage_indices(layout,
    "left", stage)`` then ``stage_indices(layout, "right", stage)``. A roof layout keeps the
    lateral edge and the triradiate point (the AI); a femur layout has neither, and no H-point."""
    lay = get_layout(layout)
    suffix = "_" + _check_stage(stage)
    if lay.name.endswith(suffix):
        return lay
    left, right = stage_positions(lay, "left", stage), stage_positions(lay, "right", stage)
    k = len(left)
    if k < 2:
        raise ValueError(f"layout {lay.name} has {k} {stage} point(s) a side; a {stage} refiner needs two or more")
    # mirrored and permuted, a right block is left-shaped: left position a takes right position perm[a]
    perm = tuple(right.index(lay.mirror_perm[i]) for i in left)
    names = {"left": tuple(lay.side_point_names("left")[j] for j in left),
             "right": tuple(lay.side_point_names("right")[j] for j in right)}
    offset = {"left": 0, "right": k}

    def where(name):
        return {s: offset[s] + names[s].index(name) for s in SIDES} if name in names["left"] else {}

    return KeypointLayout(
        name=lay.name + suffix, num_points=2 * k,
        side_indices={"left": tuple(range(k)), "right": tuple(range(k, 2 * k))}, mirror_perm=perm,
        lateral_edge=where("lateral_edge"), triradiate=where("triradiate"), hpoint={"left": (), "right": ()},
        point_names=names["left"])


def roof_layout(layout) -> KeypointLayout:
    """``stage_layout(layout, "roof")``: the roof refiner's points (``--stage roof``)."""
    return stage_layout(layout, "roof")


def layout_for_num_points(n: int) -> KeypointLayout:
    """The layout with ``n`` points in total (12 -> ihdi12, 8 -> mtddh8)."""
    for lay in LAYOUTS.values():
        if lay.num_points == n:
            return lay
    raise ValueError(f"no keypoint layout has {n} points (known: "
                     + ", ".join(f"{l.name}={l.num_points}" for l in LAYOUTS.values()) + ")")


def mirror_x(x, width):
    """Horizontal mirror of x coordinates in an image ``width`` pixels wide (pixel centres on integers)."""
    return (width - 1) - np.asarray(x, dtype=float)


def mirror_side_keypoints(side_kps, width: float, layout="ihdi12") -> np.ndarray:
    """Mirror one side's keypoints horizontally and permute them.

    ``side_kps`` is ``(..., P, 2)`` with P the layout's points per side, in the stored
    order of either side. The result has x -> (W - 1) - x and the points reordered by
    the mirror permutation, so a right-side block becomes left-side shaped and vice
    versa. Applying it twice returns the input.
    """
    lay = get_layout(layout)
    kps = np.array(side_kps, dtype=float, copy=True)
    if kps.shape[-2] != lay.points_per_side or kps.shape[-1] != 2:
        raise ValueError(f"expected (..., {lay.points_per_side}, 2) side keypoints for {lay.name}, got {kps.shape}")
    kps[..., 0] = mirror_x(kps[..., 0], width)
    return kps[..., list(lay.mirror_perm), :]


def mirror_image_keypoints(kps, width: float, layout="ihdi12") -> np.ndarray:
    """Mirror a full image's keypoints: the two sides swap blocks (mirrored + permuted)."""
    lay = get_layout(layout)
    kps = np.asarray(kps, dtype=float)
    out = np.empty_like(kps)
    left, right = lay.side_slice("left"), lay.side_slice("right")
    out[..., left, :] = mirror_side_keypoints(kps[..., right, :], width, lay)
    out[..., right, :] = mirror_side_keypoints(kps[..., left, :], width, lay)
    return out
