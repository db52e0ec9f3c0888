"""Crops of one hip side for the keypoint model.

``preprocess_crop`` is the single place where a crop becomes a model input; training
and prediction both call it, so they cannot drift apart. ``HipCropDataset`` serves
training and validation crops around the ground-truth boxes (``Augment`` for the random
affine, ``EpochSampler`` for a reproducible order and draw per epoch). ``roof_crop_dataset``
serves the refiners' crops (``--stage roof`` and ``--stage femur``) through the same class.
"""
from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from datasets.augment import PhotometricAug
from datasets.layouts import SIDES, get_layout, layout_for_num_points, stage_indices, stage_layout
from utils.cropping import (crop_points_to_side, mirror_matrix, roof_box, rotation_matrix, side_crop_matrix,
                            side_points_to_crop, square_box, warp)
from utils.config import IMAGENET_MEAN, IMAGENET_STD
from utils.errors import ItemError, ProblemLog, UserError
from datasets.formats import read_record_image

# (the normalisation constants live with the other defaults in utils.config; re-exported here)


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


# ====================================================================== training crops
# A torch Dataset of hip-side crops taken around the ground-truth boxes.
#
# Each image is decoded once. For every side it serves, the dataset caches either the
# final crop (no augmentation: validation) or a larger "base" square around the same
# centre at the same scale (augmentation: training), so that an augmented sample is one
# cv2.warpAffine from the cached base. Every sample carries the 3x3 matrix mapping the
# original image to its crop, so predictions can be mapped back and errors measured in
# original-image pixels.


@dataclass(frozen=True)
class Augment:
    """On-the-fly augmentation of a training crop, in crop pixels at input scale.

    rot: rotation drawn from [-rot, rot] degrees about the crop centre.
    shift: translation drawn from [-shift, shift] pixels per axis.
    scale: zoom drawn from [1 - scale, 1 + scale].
    box_jitter: the box centre moves by up to this fraction of the crop side per axis and
        its size changes by a factor in [1 - box_jitter, 1 + box_jitter].
    photometric: gray-level domain randomisation (``datasets.augment.PhotometricAug``), applied
        after the warp with the same per-sample generator; it never moves pixels.
    hflip: probability that the crop is mirrored horizontally, x -> (S - 1) - x, after the
        affine (``random_flip``); the dataset then permutes its points by the layout's mirror
        permutation, as the flip test (``codec.flip_outputs``) assumes. 0: never (and no draw).
    """
    rot: float = 10.0
    shift: float = 20.0
    scale: float = 0.0
    box_jitter: float = 0.0
    photometric: PhotometricAug = PhotometricAug()
    hflip: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.photometric.enabled or any(v > 0 for v in (self.rot, self.shift, self.scale, self.box_jitter,
                                                               self.hflip))

    def context(self, size: int) -> int:
        """Side of the cached base square (pixels at input scale) so that any draw stays inside it."""
        th = math.radians(min(abs(self.rot), 45.0))
        s_min = max(1e-3, (1.0 - self.scale) * (1.0 - self.box_jitter))
        half = ((size / 2) * (math.cos(th) + math.sin(th)) + abs(self.shift)) / s_min + self.box_jitter * size
        return int(min(math.ceil(2 * half) + 2, 3 * size))

    def random_matrix(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """One random 3x3 affine in crop pixels (crop -> augmented crop)."""
        c = ((size - 1) / 2.0, (size - 1) / 2.0)
        # box jitter: the crop of a moved/resized box is a scale about the centre plus a shift
        j = np.eye(3)
        if self.box_jitter > 0:
            f = rng.uniform(1 - self.box_jitter, 1 + self.box_jitter)
            d = rng.uniform(-self.box_jitter, self.box_jitter, 2) * size
            j = rotation_matrix(0.0, c, 1.0 / f, shift=(-d[0] / f, -d[1] / f))
        angle = rng.uniform(-self.rot, self.rot) if self.rot > 0 else 0.0
        scale = rng.uniform(1 - self.scale, 1 + self.scale) if self.scale > 0 else 1.0
        shift = rng.uniform(-self.shift, self.shift, 2) if self.shift > 0 else (0.0, 0.0)
        return rotation_matrix(angle, c, scale, shift) @ j

    def random_flip(self, rng: np.random.Generator) -> bool:
        """Whether this sample is mirrored (probability ``hflip``). Draws nothing when ``hflip``
        is 0, so the other draws, and so training without it, stay exactly as they were."""
        return bool(self.hflip > 0 and rng.random() < self.hflip)


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


@dataclass
class CropSample:
    """One hip side of one image, ready to be served."""
    stem: str
    side: str                 # image side the crop shows
    mirrored: bool            # flipped to serve a model of the other side
    image_kps: np.ndarray     # (P, 2) the side's ground-truth keypoints, image pixels, stored order
    matrix: np.ndarray        # (3, 3) image -> crop (no augmentation)
    crop_side_px: float       # side of the crop square in original-image pixels (for the NME)
    pixels: np.ndarray        # uint8: the final crop (no augmentation) or the larger base square
    base_offset: float = 0.0  # base pixels = crop pixels + base_offset


def usable_records(records, layout, problems: ProblemLog, need_boxes: bool):
    """``(records that can be trained on, their layout)``: the others (no keypoints, or no hip boxes
    when ``need_boxes``) are listed in ``problems``; ``layout`` None is read off the keypoints."""
    usable = []
    for r in records:
        if r.keypoints is None or (need_boxes and r.boxes is None):
            problems.add(r.image_path, "no keypoints or no boxes (training crops need both)" if need_boxes
                         else "no keypoints (training needs them)")
        else:
            usable.append(r)
    if layout is None:
        if not usable:
            raise UserError("no image has both keypoints and hip boxes" if need_boxes else "no image has keypoints")
        layout = layout_for_num_points(len(usable[0].keypoints))
    return usable, get_layout(layout)


def model_sides(side: str, mirror: bool):
    """(image side, mirrored) pairs served by a model of ``side``: its own side, plus the
    other side mirrored when ``mirror``."""
    if side not in SIDES:
        raise UserError(f"--side must be 'left' or 'right', got {side!r}")
    other = "right" if side == "left" else "left"
    return [(side, False)] + ([(other, True)] if mirror else [])


class HipCropDataset(Dataset):
    """Square crops around the ground-truth hip boxes, with keypoint targets in crop pixels.

    ``records``: ``HipRecord``s with keypoints and boxes. ``side``: the side the model
    predicts; ``mirror`` adds the other side, mirrored and permuted by the layout's mirror
    permutation, so one model serves both hips. ``augment``: an ``Augment`` (training) or
    None (validation: crops are computed once, exactly as prediction computes them).

    An item is a dict of tensors: ``image`` (3, S, S) float32 (through ``preprocess_crop``),
    ``keypoints`` (P, 2) crop pixels in model order, ``matrix`` (3, 3) image -> crop,
    ``image_kps`` (P, 2) ground truth in image pixels (the side's stored order),
    ``mirrored`` (the crop's points are the side's permuted by the mirror permutation, so that
    ``crop_to_image_points`` maps them back), ``flipped`` (the random horizontal flip,
    ``Augment.hflip``, was drawn), ``crop_side_px`` and ``index``.

    A flipped crop is the augmented crop mirrored, x -> (S - 1) - x (a mirror matrix composed
    into the crop's matrix, so labels stay exact), and its points are permuted by the layout's
    mirror permutation: point k of the flipped crop is the mirror of the unflipped crop's point
    ``mirror_perm[k]``, exactly what ``codec.flip_outputs`` undoes at the flip test.

    Index ``epoch * len(self) + i`` serves sample ``i`` with epoch ``epoch``'s random draw:
    the augmentation is a pure function of (seed, epoch, i), so it is the same whichever
    worker serves it and a resumed run sees the same draws (see ``EpochSampler``).
    """

    def __init__(self, records: Sequence, input_size: int, side: str = "left", mirror: bool = True,
                 crop_expand: float = 0.10, augment: Optional[Augment] = None, hist_eq: bool = True,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, seed: int = 0, layout=None,
                 problems: Optional[ProblemLog] = None, threads: int = 4):
        self.input_size = int(input_size)
        self.side, self.mirror = side, bool(mirror)
        self.crop_expand = float(crop_expand)
        self.augment = augment if (augment is not None and augment.enabled) else None
        self.hist_eq, self.mean, self.std = bool(hist_eq), tuple(mean), tuple(std)
        self.seed = int(seed)
        problems = problems if problems is not None else ProblemLog()
        usable, self.layout = usable_records(records, layout, problems, need_boxes=True)
        self.sides = model_sides(side, mirror)
        self.samples: List[CropSample] = self._cache(usable, threads, problems, "crops")

    def _cache(self, usable, threads: int, problems: ProblemLog, what: str) -> List[CropSample]:
        """The samples of every usable record (``_load_record``, in threads); a record that
        fails is listed in ``problems``; none left is an error naming ``what``."""
        with ThreadPoolExecutor(max(1, int(threads))) as ex:   # cv2 releases the GIL
            results = list(ex.map(self._load_record, usable))
        samples = []
        for rec, res in zip(usable, results):
            if isinstance(res, ItemError):
                problems.add(rec.image_path, str(res))
            else:
                samples.extend(res)
        if not samples:
            raise UserError(f"no usable {what} ({problems.summary_line()})")
        return samples

    # ------------------------------------------------------------------ caching
    def _read_checked(self, rec) -> np.ndarray:
        """The record's image, after checking that its keypoints fit the dataset's layout (ItemError)."""
        if len(rec.keypoints) != self.layout.num_points:
            raise ItemError(f"{len(rec.keypoints)} keypoints, the dataset's layout "
                            f"{self.layout.name} has {self.layout.num_points}")
        return read_record_image(rec)[0]

    def _cached_pixels(self, image, M):
        """``(pixels, offset)`` kept for one sample: the crop of ``M``, or with augmentation a larger
        context around it (``Augment.context``) whose crop is offset by ``offset`` px on each axis."""
        size = self.input_size
        if self.augment is None:
            return warp(image, M, size), 0.0
        base = self.augment.context(size)
        off = (base - size) / 2.0
        return warp(image, translation(off, off) @ M, base), off

    def _load_record(self, rec):
        """All samples of one image (decoded once), or an ItemError."""
        try:
            image = self._read_checked(rec)
            out = []
            size = self.input_size
            for side, mirrored in self.sides:
                box = rec.boxes[side]
                M = side_crop_matrix(box, size, self.crop_expand, mirrored)
                sq = square_box(box, self.crop_expand)
                pixels, off = self._cached_pixels(image, M)
                out.append(CropSample(stem=rec.stem, side=side, mirrored=mirrored,
                                      image_kps=np.asarray(rec.keypoints, float)[self.layout.side_slice(side)],
                                      matrix=M, crop_side_px=float(sq[2] - sq[0]), pixels=pixels,
                                      base_offset=off))
            return out
        except ItemError as e:
            return e
        except (ValueError, cv2.error) as e:
            return ItemError(f"cannot crop: {e}")

    # ------------------------------------------------------------------ serving
    def __len__(self) -> int:
        return len(self.samples)

    def crop(self, index: int):
        """(crop uint8 (S, S), matrix image -> crop) of sample ``index`` (with its epoch's draw)."""
        crop, M, _ = self.draw(index)
        return crop, M

    def draw(self, index: int):
        """(crop uint8 (S, S), matrix image -> crop, flipped) of sample ``index``: its epoch's
        random affine, then (``Augment.hflip``) a horizontal mirror composed into the same warp."""
        epoch, i = divmod(int(index), len(self.samples))
        s = self.samples[i]
        if self.augment is None:
            return s.pixels, s.matrix, False
        rng = np.random.default_rng([self.seed, epoch, i])
        A = self.augment.random_matrix(rng, self.input_size)
        flipped = self.augment.random_flip(rng)
        if flipped:
            A = mirror_matrix(self.input_size) @ A
        crop = warp(s.pixels, A @ translation(-s.base_offset, -s.base_offset), self.input_size)
        if self.augment.photometric.enabled:
            crop = self.augment.photometric(crop, rng)
        return crop, A @ s.matrix, flipped

    def __getitem__(self, index: int):
        i = int(index) % len(self.samples)
        s = self.samples[i]
        crop, M, flipped = self.draw(index)
        kps = side_points_to_crop(s.image_kps, M, s.mirrored, self.layout)
        if flipped:   # point k of the flipped crop is the unflipped crop's point mirror_perm[k], mirrored
            kps = kps[list(self.layout.mirror_perm)]
        x = preprocess_crop(crop, self.hist_eq, self.mean, self.std)
        return {
            "image": torch.from_numpy(x),
            "keypoints": torch.from_numpy(kps.astype(np.float32)),
            "matrix": torch.from_numpy(M),
            "image_kps": torch.from_numpy(s.image_kps),
            "mirrored": s.mirrored != flipped,   # (the mirror permutation is its own inverse)
            "flipped": flipped,
            "crop_side_px": s.crop_side_px,
            "index": i,
        }


# ====================================================================== refiner crops (roof, femur)
def roof_records(records: Sequence, layout, stage: str = "roof") -> list:
    """The records as a ``stage`` refiner trains on them: each side's points of that stage only
    (in ``datasets.layouts.stage_layout`` order: the roof, or the proximal femur) and, as the
    side's box, the box of those points (``utils.cropping.roof_box``). A record without
    ``layout``'s keypoints is kept as it is (``HipCropDataset`` lists it as a problem)."""
    lay = get_layout(layout)
    idx = {s: stage_indices(lay, s, stage) for s in SIDES}
    out = []
    for r in records:
        if r.keypoints is None or len(r.keypoints) != lay.num_points:
            out.append(r)
            continue
        kps = np.asarray(r.keypoints, float)
        out.append(dataclasses.replace(r, keypoints=np.concatenate([kps[idx[s]] for s in SIDES]),
                                       boxes={s: roof_box(kps[idx[s]]) for s in SIDES}))
    return out


def roof_crop_dataset(records: Sequence, layout, input_size: int, margin: float = 0.5,
                      augment: Optional[Augment] = None, stage: str = "roof", **kw) -> "HipCropDataset":
    """A refiner's crops: a ``HipCropDataset`` of ``roof_records`` (so its square is the box of
    the ``stage`` points plus ``margin`` of its longer side on each side, and its points those of
    ``stage_layout(layout, stage)``). ``augment``'s ``box_jitter`` stands for the first stage's
    error (the crop's centre and size), its ``rot`` for the film's rotation. ``kw``: the other
    ``HipCropDataset`` arguments (side, mirror, hist_eq, seed, problems, threads, ...)."""
    return HipCropDataset(roof_records(records, layout, stage), input_size, crop_expand=margin, augment=augment,
                          layout=stage_layout(layout, stage), **kw)


class EpochSampler(Sampler):
    """Yields ``epoch * n + i`` for the samples ``i`` of one epoch, shuffled by (seed, epoch).

    With ``HipCropDataset`` this makes both the order and the augmentation of every epoch a
    function of (seed, epoch): reproducible, independent of the number of workers, and the
    same after ``--resume``. Call ``set_epoch`` before each epoch (as with DistributedSampler).
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = int(n), bool(shuffle), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = range(self.n)
        base = self.epoch * self.n
        return iter([base + i for i in order])


def crop_to_image_points(crop_kps, matrices, mirrored, layout) -> np.ndarray:
    """Batched model output (B, P, 2) in crop pixels -> image pixels in each side's stored order.

    ``matrices`` (B, 3, 3) image -> crop, ``mirrored`` (B,) bools.
    """
    crop_kps = np.asarray(crop_kps, float)
    return np.stack([crop_points_to_side(k, np.asarray(M, float), bool(m), layout)
                     for k, M, m in zip(crop_kps, matrices, mirrored)])
