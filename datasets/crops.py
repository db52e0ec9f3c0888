"""Crops of one hip side for the keypoint model.

``preprocess_crop`` is the single place where a crop becomes a model input; training
and prediction both call it, so they cannot drift apart.
"""
from __future__ import annotations

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def equalize(gray_uint8: np.ndarray) -> np.ndarray:
    """Histogram equalisation of an 8-bit gray crop."""
    return cv2.equalizeHist(np.ascontiguousarray(gray_uint8))


def preprocess_crop(crop_uint8: np.ndarray, hist_eq: bool = True,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """8-bit gray crop (S, S) -> float32 (3, S, S): [equalised], replicated to 3 channels, normalised."""
    g = equalize(crop_uint8) if hist_eq else crop_uint8
    g = g.astype(np.float32) / 255.0
    mean = np.asarray(mean, np.float32)[:, None, None]
    std = np.asarray(std, np.float32)[:, None, None]
    return (np.repeat(g[None], 3, axis=0) - mean) / std
