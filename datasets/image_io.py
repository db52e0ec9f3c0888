"""Read any supported image as an 8-bit grayscale array plus what we know of its pixels.

``read_image(path) -> (gray uint8 (H, W), info)`` where ``info`` holds at least
``pixel_spacing_mm`` (float or None) and ``source`` ("png", "jpeg", "dicom", ...).
DICOM files (``.dcm`` or any file with the DICOM preamble) go through
``datasets.dicom``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import cv2
import numpy as np

from utils.errors import ItemError
from datasets.dicom import read_dicom


def is_dicom(path) -> bool:
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Any-depth gray image -> uint8, stretched min..max for non-8-bit input."""
    if img.dtype == np.uint8:
        return img
    img = img.astype(np.float32)
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    if not np.isfinite(lo) or hi <= lo:
        return np.zeros(img.shape, np.uint8)
    return np.clip((img - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def check_jpeg_complete(path) -> None:
    """``ItemError`` for a truncated JPEG file, which OpenCV decodes without an error (the
    missing part comes out gray). A file that does not end with the end-of-image marker
    (trailing data after it is allowed) is decoded once more with Pillow, which refuses a
    truncated one."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return                                    # not a JPEG
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 1024))
        tail = f.read()
    if tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ItemError(f"{path}: truncated or corrupt JPEG ({e})") from None


def read_image(path) -> Tuple[np.ndarray, Dict]:
    path = Path(path)
    if not path.is_file():
        raise ItemError(f"{path}: image file not found")
    if is_dicom(path):
        return read_dicom(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ItemError(f"{path}: cannot decode image (corrupt, truncated or not an image)")
    check_jpeg_complete(path)
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[:, :, 0]
    img = to_uint8(img)
    return np.ascontiguousarray(img), {"pixel_spacing_mm": None, "source": path.suffix.lower().lstrip(".")}
