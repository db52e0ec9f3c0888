"""Square crops around hip boxes and exact mapping between image and crop pixels.

Conventions (docs/CONVENTIONS.md, "Coordinates and sides"): pixel centres lie on integer coordinates, so an
image W pixels wide spans x in [-0.5, W - 0.5]. A crop is described by a 3x3 affine
matrix ``M`` mapping image coordinates to crop coordinates; ``cv2.warpAffine`` with
``M[:2]`` uses the same pixel-centre convention, so warping the image and mapping
points with ``M`` agree exactly. Going back is ``inv(M)``.
"""
from __future__ import annotations

import cv2
import numpy as np
from datasets.layouts import get_layout


def normalize_box(box) -> np.ndarray:
    """Any two opposite corners -> (x1, y1, x2, y2) with x1 <= x2, y1 <= y2."""
    b = np.asarray(box, dtype=float).reshape(-1)
    if b.size != 4:
        raise ValueError(f"a box needs 4 numbers, got {b.size}")
    return np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])])


def square_box(box, expand: float = 0.10) -> np.ndarray:
    """Square box (x1, y1, x2, y2) centred on ``box``, side = max(w, h) * (1 + 2 * expand).

    ``expand`` is the margin added on each side, as a fraction of the box's longer side.
    The square may reach outside the image; cropping pads with black there, so the
    crop stays square and the mapping stays exact.
    """
    x1, y1, x2, y2 = normalize_box(box)
    side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * expand)
    if side <= 0:
        raise ValueError("zero-size box")
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def box_to_crop_matrix(sq_box, out_size: int) -> np.ndarray:
    """3x3 matrix mapping image pixels to the pixels of a crop of ``sq_box`` resized to out_size.

    The box's edges are in pixel-centre coordinates of the image: its extent
    [x1, x2] is resampled onto the crop's extent [-0.5, out_size - 0.5].
    """
    x1, y1, x2, y2 = np.asarray(sq_box, dtype=float)
    sx = out_size / (x2 - x1)
    sy = out_size / (y2 - y1)
    return np.array([[sx, 0.0, -0.5 - x1 * sx],
                     [0.0, sy, -0.5 - y1 * sy],
                     [0.0, 0.0, 1.0]])


def mirror_matrix(width: float) -> np.ndarray:
    """3x3 matrix of a horizontal mirror x -> (W - 1) - x."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def rotation_matrix(angle_deg: float, center, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """3x3 matrix rotating by ``angle_deg`` (counter-clockwise on screen) about ``center``,
    scaling by ``scale`` and then translating by ``shift``."""
    m = np.eye(3)
    m[:2] = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), float(angle_deg), float(scale))
    m[0, 2] += shift[0]
    m[1, 2] += shift[1]
    return m


def apply_matrix(M, pts) -> np.ndarray:
    """Apply a 3x3 affine matrix to points (..., 2)."""
    pts = np.asarray(pts, dtype=float)
    return pts @ M[:2, :2].T + M[:2, 2]


def warp(image: np.ndarray, M, out_size: int, interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    """Warp ``image`` by 3x3 matrix ``M`` into an out_size x out_size crop (black padding)."""
    return cv2.warpAffine(image, np.asarray(M, dtype=np.float64)[:2], (int(out_size), int(out_size)),
                          flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_square(image: np.ndarray, box, out_size: int, expand: float = 0.10, mirror: bool = False):
    """Crop the expanded square around ``box``, resized to ``out_size``; optionally mirrored.

    Returns ``(crop, M)`` where ``M`` maps image points to crop points
    (``apply_matrix(M, pts)``); ``np.linalg.inv(M)`` maps crop predictions back.
    """
    M = box_to_crop_matrix(square_box(box, expand), out_size)
    if mirror:
        M = mirror_matrix(out_size) @ M
    return warp(image, M, out_size), M


def crop_to_image(M, pts) -> np.ndarray:
    """Map crop points back to image pixels with the inverse of ``M``."""
    return apply_matrix(np.linalg.inv(M), pts)


# ------------------------------------------------------------------ one hip side
def side_crop_matrix(box, out_size: int, expand: float, mirrored: bool) -> np.ndarray:
    """Matrix image -> crop for one hip side; ``mirrored`` flips the crop horizontally
    (a right hip made left-shaped for a left-side model)."""
    M = box_to_crop_matrix(square_box(box, expand), out_size)
    return mirror_matrix(out_size) @ M if mirrored else M


def side_points_to_crop(side_kps, M, mirrored: bool, layout) -> np.ndarray:
    """A side's image keypoints (P, 2), stored order -> crop points in the model's order
    (permuted by the layout's mirror permutation when ``mirrored``)."""
    pts = apply_matrix(M, side_kps)
    return pts[..., list(get_layout(layout).mirror_perm), :] if mirrored else pts


def crop_points_to_side(crop_kps, M, mirrored: bool, layout) -> np.ndarray:
    """Inverse of ``side_points_to_crop``: model output on the crop -> the side's image
    keypoints in stored order. The mirror permutation is its own inverse."""
    pts = crop_to_image(M, crop_kps)
    return pts[..., list(get_layout(layout).mirror_perm), :] if mirrored else pts


# ------------------------------------------------------------------ the acetabular roof (roof refiner)
def roof_box(roof_kps) -> np.ndarray:
    """The box (x1, y1, x2, y2) of one side's roof points (P_r, 2), image pixels: what a roof
    crop is cut around. ``side_crop_matrix(roof_box(pts), size, margin, mirrored)`` is the roof
    crop's matrix: the hip crop's square maths, so points map back exactly with its inverse."""
    pts = np.asarray(roof_kps, dtype=float).reshape(-1, 2)
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])


def roof_crop_matrix(roof_kps, out_size: int, margin: float, mirrored: bool) -> np.ndarray:
    """Matrix image -> roof crop: the square around ``roof_box(roof_kps)``, ``margin`` of its
    longer side added on each side, resized to ``out_size`` (mirrored for the other side's model)."""
    return side_crop_matrix(roof_box(roof_kps), out_size, margin, mirrored)


# ------------------------------------------------------------------ the whole film (single-stage model)
def letterbox_box(width: float, height: float) -> np.ndarray:
    """The square (x1, y1, x2, y2) that holds a whole ``width`` x ``height`` image, centred: the
    image's extent [-0.5, W - 0.5] x [-0.5, H - 0.5] padded on the shorter axis, half on each side."""
    side = float(max(width, height))
    x1, y1 = -0.5 - (side - width) / 2.0, -0.5 - (side - height) / 2.0
    return np.array([x1, y1, x1 + side, y1 + side])


def letterbox_matrix(width: float, height: float, out_size: int) -> np.ndarray:
    """3x3 matrix image -> letterboxed square of ``out_size`` (a square crop of the padded image,
    so ``crop_to_image`` maps model outputs back exactly)."""
    return box_to_crop_matrix(letterbox_box(width, height), out_size)
