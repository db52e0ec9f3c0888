"""Whole films for the single-stage baseline: one model sees the whole image, letterboxed.

The film is padded to a square (centred, black) and resized to ``input_size``: a square
crop of the padded image (``utils.cropping.letterbox_matrix``), so the 3x3 matrix of each
sample maps image pixels to model pixels and its inverse maps predictions back exactly, as
for hip crops. The model predicts every point of the layout (12 or 8), in stored order.

- ``letterbox_input(image, size, ...)``: (model input, matrix), the one place a film becomes
  a full-image model input (training without augmentation and prediction call it).
- ``FullImageDataset``: the training / validation samples, with the same ``Augment`` (random
  rotation, shift and zoom by one warp of a cached larger square) and the same item dict as
  ``datasets.crops.HipCropDataset``, so the training loop, the codec and validation (errors
  in original-image pixels) are shared. No horizontal flip: it would swap the two hips.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from datasets.crops import Augment, CropSample, HipCropDataset, preprocess_crop, usable_records
from utils.config import IMAGENET_MEAN, IMAGENET_STD
from utils.cropping import letterbox_box, letterbox_matrix, warp
from utils.errors import ItemError, ProblemLog

FULL = "both"   # the ``side`` of a full-image sample: it shows both hips


def letterbox_input(image: np.ndarray, size: int, hist_eq: bool = True, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD) -> Tuple[np.ndarray, np.ndarray]:
    """(model input float32 (3, S, S), image -> model matrix M) of a whole film."""
    h, w = image.shape[:2]
    M = letterbox_matrix(w, h, int(size))
    return preprocess_crop(warp(image, M, int(size)), hist_eq=hist_eq, mean=mean, std=std), M


class FullImageDataset(HipCropDataset):
    """Whole films letterboxed to ``input_size``, with all the layout's keypoints as targets.

    ``records``: ``HipRecord``s with keypoints (boxes are not needed). ``augment``: an
    ``Augment`` (its rot / shift / scale; box_jitter and hflip do not apply) or None. Items are those
    of ``HipCropDataset`` (``image``, ``keypoints`` (N, 2) model pixels, ``matrix``,
    ``image_kps`` (N, 2), ``mirrored`` False, ``crop_side_px`` = the letterbox side in image
    pixels, ``index``); serving (``crop``, ``__getitem__``) is inherited.
    """

    def __init__(self, records: Sequence, input_size: int, augment: Optional[Augment] = None,
                 hist_eq: bool = True, mean=IMAGENET_MEAN, std=IMAGENET_STD, seed: int = 0, layout=None,
                 problems: Optional[ProblemLog] = None, threads: int = 4):
        self.input_size = int(input_size)
        self.side, self.mirror, self.crop_expand = FULL, False, 0.0
        self.augment = augment if (augment is not None and augment.enabled) else None
        if self.augment is not None and (self.augment.box_jitter or self.augment.hflip):
            # no horizontal flip of a whole film: it would swap the two hips
            self.augment = dataclasses.replace(self.augment, box_jitter=0.0, hflip=0.0)
        self.hist_eq, self.mean, self.std = bool(hist_eq), tuple(mean), tuple(std)
        self.seed = int(seed)
        problems = problems if problems is not None else ProblemLog()
        usable, self.layout = usable_records(records, layout, problems, need_boxes=False)
        self.sides = [(FULL, False)]
        self.samples = self._cache(usable, threads, problems, "films")

    def _load_record(self, rec):
        """[the film's one sample], or an ItemError."""
        try:
            image = self._read_checked(rec)
            h, w = image.shape[:2]
            size = self.input_size
            M = letterbox_matrix(w, h, size)
            pixels, off = self._cached_pixels(image, M)
            sq = letterbox_box(w, h)
            return [CropSample(stem=rec.stem, side=FULL, mirrored=False,
                               image_kps=np.asarray(rec.keypoints, float), matrix=M,
                               crop_side_px=float(sq[2] - sq[0]), pixels=pixels, base_offset=off)]
        except ItemError as e:
            return e
        except (ValueError, cv2.error) as e:
            return ItemError(f"cannot letterbox: {e}")
