"""From an attenuation map to an 8-bit film: exposure, scatter haze, blur, windowing and gamma,
heel-effect gradient, quantum noise and grain, collimation, line artefacts, side markers and
JPEG compression. Nothing here moves anatomy, so the keypoints stay exact."""
from __future__ import annotations

import cv2
import numpy as np


# the narrowest window of a film (fraction of the 8-bit range between its 1st and 99.5th
# percentiles; the real films here span 0.32-0.53)
MIN_RANGE = 0.32


def uniform(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def smooth_noise(rng, h: int, w: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise with about ``cells`` blobs across the longer side."""
    ch = max(2, int(round(cells * h / max(h, w))))
    cw = max(2, int(round(cells * w / max(h, w))))
    small = rng.standard_normal((ch, cw)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _wide_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    h, w = img.shape
    k = max(1, int(sigma // 4))
    small = cv2.resize(img, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / k)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def expose(rng, att: np.ndarray) -> np.ndarray:
    """Film density in [0, 1] (bright bone): exposure, scatter haze, blur, window and gamma."""
    H, W = att.shape
    val = 1.0 - np.exp(-uniform(rng, 1.0, 1.7) * att)
    haze = uniform(rng, 0.05, 0.25)                            # scatter: a wide blur of the image
    val = (1.0 - haze) * val + haze * _wide_blur(val, 0.08 * max(H, W))
    sig = uniform(rng, 0.4, 1.3) * max(H, W) / 512            # modest: the roof and its corner stay crisp
    if sig > 0.3:
        val = cv2.GaussianBlur(val, (0, 0), sig)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy = W * uniform(rng, 0.35, 0.65), H * uniform(rng, 0.35, 0.65)
    r2 = ((xx - cx) / W) ** 2 + ((yy - cy) / H) ** 2
    val *= (1.0 - uniform(rng, 0.0, 0.5) * r2) * (1.0 + uniform(rng, -0.15, 0.15) * (yy / H - 0.5))
    lo, hi = uniform(rng, 0.02, 0.13), uniform(rng, 0.45, 0.8)     # real films: p1 16-42, p99.5 100-160
    gamma = float(np.exp(rng.normal(0.0, 0.2)))
    val = lo + (hi - lo) * np.clip(val, 0, 1) ** gamma
    # auto-windowing: a film spans at least MIN_RANGE between its 1st and 99.5th percentiles
    p1, p99 = np.percentile(val[::4, ::4], [1, 99.5])
    if p99 - p1 < MIN_RANGE:
        f = MIN_RANGE / max(p99 - p1, 1e-3)
        val = np.clip(p1 + (val - p1) * f, 0.0, 1.0)
    return val


def add_noise(rng, val: np.ndarray) -> np.ndarray:
    H, W = val.shape
    noise = rng.standard_normal((H, W)).astype(np.float32)
    grain = cv2.GaussianBlur(noise, (0, 0), uniform(rng, 0.6, 1.2))
    return val + (uniform(rng, 0.004, 0.03) * noise + uniform(rng, 0.01, 0.045) * grain) * np.sqrt(val + 0.05)


def _collimate(rng, val: np.ndarray) -> None:
    """Collimation: a darker (or brighter) strip with a straight edge on some borders."""
    H, W = val.shape
    for edge in range(4):
        if rng.random() < 0.5:
            k = int(uniform(rng, 0.0, 0.03) * (W if edge < 2 else H))
            if k:
                sl = [np.s_[:, :k], np.s_[:, W - k:], np.s_[:k, :], np.s_[H - k:, :]][edge]
                val[sl] = val[sl] * 0.3 if rng.random() < 0.7 else 0.75 + 0.2 * val[sl]


def _overlay(rng, H: int, W: int) -> np.ndarray:
    """Line artefacts across the film and a side marker (bright)."""
    overlay = np.zeros((H, W), np.uint8)
    for _ in range(int(rng.random() < 0.3) + int(rng.random() < 0.1)):
        y0 = uniform(rng, 0.03, 0.97) * H
        t = max(1, int(round(H / 300)))
        cv2.line(overlay, (0, int(y0)), (W - 1, int(y0 + uniform(rng, -0.02, 0.02) * H)),
                 int(uniform(rng, 120, 230)), t, cv2.LINE_AA)
    if rng.random() < 0.45:
        fs = min(H, W) / 400 * uniform(rng, 0.7, 1.3)
        org = (int(uniform(rng, 0.03, 0.12) * W), int(uniform(rng, 0.06, 0.14) * H))
        if rng.random() < 0.5:
            org = (W - org[0] - int(20 * fs), org[1])
        if rng.random() < 0.3:
            org = (org[0], int(H - uniform(rng, 0.04, 0.1) * H))
        cv2.putText(overlay, "R" if rng.random() < 0.5 else "L", org, cv2.FONT_HERSHEY_SIMPLEX, fs,
                    int(uniform(rng, 200, 255)), max(1, int(2 * fs)), cv2.LINE_AA)
    return overlay


def photometry(rng, P, att: np.ndarray) -> np.ndarray:
    """Attenuation map -> uint8 film."""
    H, W = att.shape
    val = add_noise(rng, expose(rng, att))
    if rng.random() < 0.4:
        _collimate(rng, val)
    val = np.maximum(val, _overlay(rng, H, W).astype(np.float32) * np.float32(1 / 255))
    img = np.clip(val * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:                                    # JPEG artefacts of the film's archive
        q = int(rng.integers(35, 93))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return img
