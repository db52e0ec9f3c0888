"""Photometric domain randomisation of gray crops (numpy / OpenCV only).

Every function takes ``(img, rng, strength)`` and returns an image of the same shape and
dtype: uint8 stays uint8; a float image is read as intensities in [0, 1] and comes back as
the same float dtype in [0, 1]. ``strength`` is in [0, 1] (larger values are clipped to 1);
0 returns the input unchanged (a copy) and draws nothing from ``rng``. The random amount of
each operation is drawn from ``rng`` (a ``numpy.random.Generator``), so a seeded generator
gives the same result. None of them moves pixels, so keypoints are untouched; geometric
augmentation (scale, rotation, shift) happens before, in ``datasets.crops``.

- ``contrast_gamma``: a gray-level mapping: contrast about mid-gray by a factor in [1 - 0.5 s, 1 + 0.5 s] and a
  gamma in [exp(-0.5 s), exp(0.5 s)];
- ``equalize``: with probability s, CLAHE (clip limit 1-4, 2-8 tiles) or plain histogram
  equalisation (half each), blended in with weight s;
- ``gaussian_blur``: sigma up to 2 s pixels;
- ``noise``: Gaussian noise with sd up to 0.05 s (of the full range), half of it fine grain;
- ``jpeg``: JPEG compression at a quality down to 100 - 75 s;
- ``random_erase``: with probability s, one rectangle (2-20% of the area) filled with noise
  around a random gray.

``PhotometricAug`` chains them in that order with one strength each.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np


def _strength(s: float) -> float:
    s = float(s)
    if not np.isfinite(s) or s < 0:
        raise ValueError(f"strength must be a finite number >= 0, got {s}")
    return min(s, 1.0)


def _to_float(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"expected a gray image (H, W), got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"expected uint8 or float, got {img.dtype}")
    return img.astype(np.float32)


def _like(f: np.ndarray, ref: np.ndarray) -> np.ndarray:
    f = np.clip(f, 0.0, 1.0)
    if ref.dtype == np.uint8:
        return (f * 255.0 + 0.5).astype(np.uint8)
    return f.astype(ref.dtype)


def _as_uint8(img: np.ndarray) -> np.ndarray:
    return img if img.dtype == np.uint8 else (np.clip(_to_float(img), 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _from_uint8(u8: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return u8 if ref.dtype == np.uint8 else (u8.astype(np.float32) / 255.0).astype(ref.dtype)


def contrast_gamma(img: np.ndarray, rng, strength: float = 0.3) -> np.ndarray:
    s = _strength(strength)
    if s == 0:
        return np.array(img, copy=True)
    f = _to_float(img)
    c = 1.0 + rng.uniform(-0.5, 0.5) * s
    g = float(np.exp(rng.uniform(-0.5, 0.5) * s))
    f = np.clip((f - 0.5) * c + 0.5, 0.0, 1.0) ** g
    return _like(f, img)


def equalize(img: np.ndarray, rng, strength: float = 0.3) -> np.ndarray:
    s = _strength(strength)
    if s == 0 or rng.random() >= s:
        return np.array(img, copy=True)
    u8 = np.ascontiguousarray(_as_uint8(img))
    if rng.random() < 0.5:
        tiles = int(rng.integers(2, 9))
        eq = cv2.createCLAHE(clipLimit=float(rng.uniform(1.0, 4.0)), tileGridSize=(tiles, tiles)).apply(u8)
    else:
        eq = cv2.equalizeHist(u8)
    f = (1.0 - s) * _to_float(u8) + s * _to_float(eq)
    return _like(f, img)


def gaussian_blur(img: np.ndarray, rng, strength: float = 0.3) -> np.ndarray:
    s = _strength(strength)
    if s == 0:
        return np.array(img, copy=True)
    sigma = rng.uniform(0.0, 2.0 * s)
    if sigma < 0.1:
        return np.array(img, copy=True)
    return _like(cv2.GaussianBlur(_to_float(img), (0, 0), sigma), img)


def noise(img: np.ndarray, rng, strength: float = 0.3) -> np.ndarray:
    s = _strength(strength)
    if s == 0:
        return np.array(img, copy=True)
    f = _to_float(img)
    sd = rng.uniform(0.0, 0.05 * s)
    white = rng.standard_normal(f.shape).astype(np.float32)
    grain = cv2.GaussianBlur(rng.standard_normal(f.shape).astype(np.float32), (0, 0), 1.0) * 2.0
    return _like(f + sd * (0.5 * white + 0.5 * grain), img)


def jpeg(img: np.ndarray, rng, strength: float = 0.3) -> np.ndarray:
    s = _strength(strength)
    if s == 0:
        return np.array(img, copy=True)
    q = int(round(100 - rng.uniform(0.0, 75.0 * s)))
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(_as_uint8(img)), [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:                                       # (OpenCV always encodes a valid gray image)
        return np.array(img, copy=True)
    return _from_uint8(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE), img)


def random_erase(img: np.ndarray, rng, strength: float = 0.3) -> np.ndarray:
    s = _strength(strength)
    if s == 0 or rng.random() >= s:
        return np.array(img, copy=True)
    f = _to_float(img).copy()
    h, w = f.shape
    area = rng.uniform(0.02, 0.2) * h * w
    aspect = float(np.exp(rng.uniform(-1.0, 1.0)))
    eh = int(np.clip(round(np.sqrt(area * aspect)), 1, h))
    ew = int(np.clip(round(np.sqrt(area / aspect)), 1, w))
    y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
    f[y0:y0 + eh, x0:x0 + ew] = rng.uniform(0.0, 1.0) + 0.05 * rng.standard_normal((eh, ew))
    return _like(f, img)


@dataclass(frozen=True)
class PhotometricAug:
    """Strengths (0-1) of each photometric operation; ``aug(img, rng)`` applies them in order.
    All zero: the identity."""
    contrast_gamma: float = 0.0
    equalize: float = 0.0
    gaussian_blur: float = 0.0
    noise: float = 0.0
    jpeg: float = 0.0
    random_erase: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            _strength(getattr(self, f.name))

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in fields(self))

    def __call__(self, img: np.ndarray, rng) -> np.ndarray:
        out = np.array(img, copy=True)
        for f in fields(self):
            s = getattr(self, f.name)
            if s > 0:
                out = OPERATIONS[f.name](out, rng, s)
        return out


OPERATIONS = {"contrast_gamma": contrast_gamma, "equalize": equalize, "gaussian_blur": gaussian_blur,
              "noise": noise, "jpeg": jpeg, "random_erase": random_erase}
# a suggested setting for training on phantoms and predicting on real films
DOMAIN_RANDOMISATION = PhotometricAug(contrast_gamma=0.6, equalize=0.3, gaussian_blur=0.5, noise=0.5,
                                      jpeg=0.5, random_erase=0.15)
