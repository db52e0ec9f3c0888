"""The hip detector: a trained YOLO model that finds one LeftHip and one RightHip box per image.

``YoloDetector(weights).predict(images)`` returns, per image, ``{"left": Detection | None,
"right": Detection | None}``: the highest-confidence box of each class, in image pixels. A side
the model did not find is ``None``; the caller reports it (nothing is dropped silently).

Sides are image sides (docs/CONVENTIONS.md, "Coordinates and sides"): class ``LeftHip`` is the hip on the image-left.
The class ids come from the model's own ``names``, not from a hard-coded order.

The input size is the detector's own: ``trained_imgsz(model, path)`` reads the size it was
trained at (a ``.pt``'s training arguments, an ``.onnx``'s export metadata), and
``YoloDetector(imgsz=None)`` runs at it. A given size that differs is used, with one warning.
"""
from __future__ import annotations

import ast
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from datasets.formats import CLASS_NAMES, SIDE_OF_LABEL, read_yolo_label
from datasets.image_io import read_image, to_uint8
from datasets.layouts import SIDES
from utils.errors import ItemError, ProblemLog, UserError
from utils.evaluation.metrics import box_iou  # noqa: F401  (also re-exported: detection.box_iou)
from utils.pipelines.yolo_env import yolo_class

log = logging.getLogger("hipkp")
DEFAULT_IMGSZ = 640    # a detector file that does not say its size (Ultralytics' own default)


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # (4,) float: x1, y1, x2, y2 in image pixels
    conf: float


SideDetections = Dict[str, Optional[Detection]]


def as_bgr(image: np.ndarray) -> np.ndarray:
    """uint8 gray (H, W) or BGR (H, W, 3) -> contiguous uint8 BGR (H, W, 3)."""
    import cv2

    im = np.asarray(image)
    if im.ndim == 3 and im.shape[2] == 1:
        im = im[:, :, 0]
    if im.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(to_uint8(im), cv2.COLOR_GRAY2BGR))
    if im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8:
        return np.ascontiguousarray(im)
    raise ValueError(f"expected a uint8 gray (H, W) or BGR (H, W, 3) image, got {im.dtype} {im.shape}")


def side_class_ids(names: Dict[int, str]) -> Dict[str, int]:
    """Map "left"/"right" to the model's class ids via its class names (LeftHip, RightHip)."""
    ids = {}
    for cid, label in names.items():
        side = SIDE_OF_LABEL.get(str(label))
        if side is not None:
            ids[side] = int(cid)
    if set(ids) != set(SIDES):
        raise UserError(f"the detector's classes are {dict(names)}; expected {list(CLASS_NAMES)} "
                        "(train it on a data.yaml with names [LeftHip, RightHip])")
    return ids


def best_per_side(xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray,
                  class_ids: Dict[str, int]) -> SideDetections:
    """Keep the highest-confidence box of each side's class; ``None`` where the class is absent."""
    out: SideDetections = {}
    for side, cid in class_ids.items():
        idx = np.flatnonzero(cls.astype(int) == cid)
        if idx.size == 0:
            out[side] = None
            continue
        i = idx[np.argmax(conf[idx])]
        out[side] = Detection(box=np.asarray(xyxy[i], dtype=float).copy(), conf=float(conf[i]))
    return out


@contextmanager
def keep_torch_threads():
    """Restore torch's CPU thread count afterwards. Ultralytics' ``select_device`` (run when a
    YOLO model is loaded or predicts on the CPU) sets it to min(8, CPUs - 1), which would slow
    the keypoint model and everything else in the process that runs after it."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def _square_size(value) -> Optional[int]:
    """An Ultralytics ``imgsz`` (an int, ``[h, w]``, or their text) as one int: the longer side."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, (list, tuple)) and value:
        value = max(value)
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


def trained_imgsz(model, path) -> Optional[int]:
    """The input size detector ``model`` (an Ultralytics ``YOLO`` loaded from ``path``) was
    trained at: ``train_args.imgsz`` of a ``.pt``; the ``imgsz`` export metadata of an ``.onnx``
    (export_onnx.py exports at the training size). None when the file does not say."""
    if str(path).lower().endswith(".onnx"):
        try:
            import onnx   # (only an exported detector needs it)
            meta = {m.key: m.value for m in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception:
            return None
        return _square_size(meta.get("imgsz"))
    ckpt = getattr(model, "ckpt", None) or {}
    args = ckpt.get("train_args") if isinstance(ckpt, dict) else None
    return _square_size((args or {}).get("imgsz"))


class YoloDetector:
    """A YOLO hip detector loaded once from a local weights file (``.pt``, or an ``.onnx``
    exported by export_onnx.py, which Ultralytics runs with ONNX Runtime). ``imgsz`` None:
    the size the detector was trained at (``trained_imgsz``; ``DEFAULT_IMGSZ`` where the
    file does not say); a given size that differs from it is used, with one warning."""

    def __init__(self, weights, device: str = "cpu", imgsz: Optional[int] = None, conf: float = 0.25):
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"detector weights not found: {path} (train one with train_yolo.py; "
                            "nothing is downloaded)")

        try:
            with keep_torch_threads():
                self.model = yolo_class()(str(path), task="detect")
        except Exception as e:  # a corrupt or foreign file: one line, not a traceback
            raise UserError(f"cannot load detector weights {path}: {type(e).__name__}: {e}") from None
        if getattr(self.model, "task", "detect") != "detect":
            raise UserError(f"{path} is a {self.model.task!r} model, not a detection model")
        self.weights = path
        self.device = str(device)
        self.trained_imgsz = trained_imgsz(self.model, path)
        self.imgsz = int(imgsz) if imgsz else (self.trained_imgsz or DEFAULT_IMGSZ)
        if imgsz and self.trained_imgsz and self.imgsz != self.trained_imgsz:
            log.warning("--imgsz %d: the detector %s was trained at %d; a detector run at another size finds "
                        "fewer hips (leave --imgsz out to use its own size)", self.imgsz, path.name,
                        self.trained_imgsz)
        self.conf = float(conf)
        with keep_torch_threads():  # an exported model's .names sets up Ultralytics' predictor (select_device)
            self.class_ids = side_class_ids(self.model.names)

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 8) -> List[SideDetections]:
        """Batched inference: per image ``{"left": Detection | None, "right": Detection | None}``.

        A batch holds images of one shape only: Ultralytics letterboxes a batch of mixed shapes to
        a full square but a lone image (or a batch of one shape) to the nearest stride multiple,
        and the boxes differ by pixels between the two. Grouping by shape makes an image's boxes
        the same whatever else is in its batch (the review app predicts one film at a time)."""
        imgs = [as_bgr(im) for im in images]
        out: List[Optional[SideDetections]] = [None] * len(imgs)
        batch_size = max(1, int(batch_size))
        by_shape: Dict[tuple, List[int]] = {}
        for i, im in enumerate(imgs):
            by_shape.setdefault(im.shape, []).append(i)
        for idx in by_shape.values():
            for start in range(0, len(idx), batch_size):
                part = idx[start:start + batch_size]
                with keep_torch_threads():
                    results = self.model.predict([imgs[i] for i in part], imgsz=self.imgsz, conf=self.conf,
                                                 device=self.device, batch=len(part), verbose=False)
                for i, r in zip(part, results):
                    b = r.boxes
                    out[i] = best_per_side(b.xyxy.cpu().numpy(), b.conf.cpu().numpy(),
                                           b.cls.cpu().numpy(), self.class_ids)
        return out

    def predict_paths(self, paths: Sequence, batch_size: int = 8,
                      problems: Optional[ProblemLog] = None) -> List[Optional[SideDetections]]:
        """Read each image with ``read_image`` (PNG, JPEG, DICOM) and run ``predict``.

        An unreadable image raises ``ItemError``; with ``problems`` given it is logged there
        instead and its entry is ``None``.
        """
        out: List[Optional[SideDetections]] = []
        batch_size = max(1, int(batch_size))
        for start in range(0, len(paths), batch_size):
            images, slots = [], []
            for p in paths[start:start + batch_size]:
                try:
                    images.append(read_image(p)[0])
                    slots.append(True)
                except ItemError as e:
                    if problems is None:
                        raise
                    problems.add(p, str(e))
                    slots.append(False)
            preds = iter(self.predict(images, batch_size=batch_size))
            out.extend(next(preds) if ok else None for ok in slots)
        return out


# ---------------------------------------------------------------- evaluation
def evaluate_detector(detector: YoloDetector, image_paths: Sequence, label_paths: Sequence,
                      iou_thr: float = 0.5, batch_size: int = 8) -> Dict[str, Dict[str, float]]:
    """Recall of the detector as the pipeline uses it (top box per side, at ``detector.conf``).

    A side counts as found when its box overlaps the ground-truth box of the same side with
    IoU >= ``iou_thr``. Returns per side: ``recall``, ``mean_iou`` (0 for a missing box),
    ``missing`` (no box of that class) and ``n`` (ground-truth boxes).
    """
    ious: Dict[str, List[float]] = {s: [] for s in SIDES}
    missing = {s: 0 for s in SIDES}
    for start in range(0, len(image_paths), batch_size):
        images = [read_image(p)[0] for p in image_paths[start:start + batch_size]]
        preds = detector.predict(images, batch_size=batch_size)
        for img, lab, pred in zip(images, label_paths[start:start + batch_size], preds):
            h, w = img.shape[:2]
            gt = read_yolo_label(lab, w, h) if Path(lab).is_file() else {}
            for side in SIDES:
                if side not in gt:
                    continue
                det = pred[side]
                missing[side] += det is None
                ious[side].append(0.0 if det is None else float(box_iou(det.box, gt[side])))
    out = {}
    for side in SIDES:
        v = np.asarray(ious[side])
        out[side] = {"recall": float(np.mean(v >= iou_thr)) if v.size else float("nan"),
                     "mean_iou": float(v.mean()) if v.size else float("nan"),
                     "missing": missing[side], "n": int(v.size)}
    return out
