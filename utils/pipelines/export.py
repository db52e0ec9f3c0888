"""ONNX export of the prediction models: keypoint checkpoints and the YOLO hip detector.

``export_models(out_dir, kp_left_path=..., kp_right_path=..., yolo_weights=...)`` is the one
call behind export_onnx.py. It writes, into ``out_dir``:

- ``<stem>_kp_left.onnx`` / ``<stem>_kp_right.onnx``: each keypoint checkpoint, with its config
  in the ONNX metadata (``models.onnx_export``), so the file alone is enough to predict;
- ``<stem>_yolo.onnx`` (``<stem>.onnx`` when the stem already holds ``_yolo``): the detector, through Ultralytics' own exporter (its class names, task
  and image size travel in the file's metadata, which ``YOLO(path, task="detect")`` reads).

``predict_hip_crop_keypoints.py`` takes these files for ``--kp_left_path``,
``--kp_right_path`` and ``--yolo_weights`` and picks the backend from the ``.onnx`` extension.
Every exported graph passes ``onnx.checker``; with ``verify`` each one is also run once with
ONNX Runtime and compared with the torch model (max abs differences are returned).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from models.onnx_export import DEFAULT_OPSET, export_checkpoint_onnx
from utils.errors import UserError
from utils.pipelines.detection import keep_torch_threads
from utils.pipelines.yolo_env import yolo_class

log = logging.getLogger("hipkp")


def kp_onnx_name(ckpt_path, side: str) -> str:
    return f"{Path(ckpt_path).stem}_kp_{side}.onnx"


def yolo_onnx_name(weights) -> str:
    """``<stem>_yolo.onnx``, or ``<stem>.onnx`` when the stem already says ``_yolo`` (demo_yolo.pt)."""
    stem = Path(weights).stem
    return f"{stem}.onnx" if "_yolo" in stem.lower() else f"{stem}_yolo.onnx"


def export_yolo_onnx(weights, out_path, imgsz: int = 640, dynamic: bool = True, opset: Optional[int] = None,
                     verify: bool = True) -> Dict[str, object]:
    """Export a YOLO ``.pt`` detector to ``out_path`` with Ultralytics' ``YOLO.export(format="onnx")``.

    ``dynamic``: batch, height and width stay dynamic, so Ultralytics letterboxes the images
    exactly as it does for the ``.pt`` model (minimal padding); a static file is fixed at
    ``imgsz`` x ``imgsz`` and batch 1. The export runs on a copy of the weights in a temporary
    folder, so nothing is written next to ``weights``. Returns ``{"path", "max_abs_diff"}``
    (the raw network outputs of torch and ONNX Runtime on one letterboxed random image, or
    None without ``verify``)."""
    import onnx

    weights, out_path = Path(weights), Path(out_path)
    if not weights.is_file():
        raise UserError(f"--yolo_weights: detector weights not found: {weights}")
    if weights.suffix.lower() != ".pt":
        raise UserError(f"--yolo_weights: {weights} is not a .pt detector (ONNX export starts from the .pt)")
    YOLO = yolo_class()
    with tempfile.TemporaryDirectory(prefix="yolo_export_") as tmp:
        src = Path(tmp) / weights.name
        shutil.copyfile(weights, src)
        try:
            model = YOLO(str(src), task="detect")
        except Exception as e:
            raise UserError(f"cannot load detector weights {weights}: {type(e).__name__}: {e}") from None
        if getattr(model, "task", "detect") != "detect":
            raise UserError(f"{weights} is a {model.task!r} model, not a detection model")
        kwargs = dict(format="onnx", imgsz=int(imgsz), dynamic=bool(dynamic), simplify=False, device="cpu",
                      batch=1, verbose=False)
        if opset:
            kwargs["opset"] = int(opset)
        try:
            with warnings.catch_warnings(), keep_torch_threads():
                warnings.simplefilter("ignore", DeprecationWarning)
                produced = Path(model.export(**kwargs))
        except Exception as e:
            raise UserError(f"ONNX export of {weights} failed: {type(e).__name__}: {e}") from None
        onnx.checker.check_model(onnx.load(str(produced)), full_check=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(produced), out_path)
        diff = _compare_yolo(model, out_path, int(imgsz)) if verify else None
    return {"path": out_path, "max_abs_diff": diff}


def _compare_yolo(model, onnx_path: Path, imgsz: int) -> float:
    """Max abs difference of the raw detection outputs (torch vs ONNX Runtime) on one random image."""
    import onnxruntime as ort
    import torch

    net = model.model.float().eval()
    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32))
    with torch.inference_mode():
        ref = net(x)
    ref = ref[0] if isinstance(ref, (list, tuple)) else ref
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    return float(np.abs(ref.numpy() - got).max())


def export_models(out_dir, kp_left_path=None, kp_right_path=None, yolo_weights=None, imgsz: int = 640,
                  opset: Optional[int] = None, yolo_dynamic: bool = True, verify: bool = True) -> Dict[str, dict]:
    """Export the given models into ``out_dir``. Returns {"kp_left" | "kp_right" | "yolo": {"path", ...}}."""
    if not (kp_left_path or kp_right_path or yolo_weights):
        raise UserError("nothing to export: give --kp_left_path, --kp_right_path and/or --yolo_weights")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    for flag, p in (("--kp_left_path", kp_left_path), ("--kp_right_path", kp_right_path),
                    ("--yolo_weights", yolo_weights)):
        if p and not Path(p).is_file():
            raise UserError(f"{flag}: file not found: {p}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    result = {}
    for side, p in (("left", kp_left_path), ("right", kp_right_path)):
        if not p:
            continue
        try:
            path, diffs = export_checkpoint_onnx(p, out / kp_onnx_name(p, side), opset=opset or DEFAULT_OPSET,
                                                 verify=verify)
        except ValueError as e:
            raise UserError(str(e)) from None
        result[f"kp_{side}"] = {"path": path, "source": str(p), **diffs}
        log.info("keypoint model %s -> %s", p, path)
    if yolo_weights:
        r = export_yolo_onnx(yolo_weights, out / yolo_onnx_name(yolo_weights), imgsz=imgsz, dynamic=yolo_dynamic,
                             opset=opset, verify=verify)
        result["yolo"] = {**r, "source": str(yolo_weights)}
        log.info("detector %s -> %s", yolo_weights, r["path"])
    return result
