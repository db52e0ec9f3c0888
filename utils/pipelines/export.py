"""ONNX export of the prediction models: keypoint checkpoints and the YOLO hip detector.

``export_models(out_dir, kp_left_path=..., kp_right_path=..., refine_path=..., yolo_weights=...)``
is the one call behind export_onnx.py. It writes, into ``out_dir``:

- ``<stem>_kp_left.onnx`` / ``<stem>_kp_right.onnx`` (each member of an ensemble) and
  ``<stem>_refiner.onnx`` (each refiner): each keypoint checkpoint, with its config in the ONNX
  metadata (``models.onnx_export``), so the file alone is enough to predict;
- ``<stem>_yolo.onnx`` (``<stem>.onnx`` when the stem already holds ``_yolo``): the detector, through Ultralytics' own exporter (its class names, task
  and image size travel in the file's metadata, which ``YOLO(path, task="detect")`` reads); it is
  exported at its training size unless told otherwise;
- ``pipeline.json`` (or the source manifest's name): the pipeline manifest of the exported set,
  so that ``--pipeline`` runs it (utils/pipelines/manifest.py).

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
from typing import Dict, List, Optional

import numpy as np

from models.onnx_export import DEFAULT_OPSET, export_checkpoint_onnx
from utils.errors import UserError
from utils.pipelines.detection import DEFAULT_IMGSZ, keep_torch_threads, trained_imgsz
from utils.pipelines.manifest import write_pipeline
from utils.pipelines.predict import checkpoint_paths
from utils.pipelines.yolo_env import yolo_class

log = logging.getLogger("hipkp")


def kp_onnx_name(ckpt_path, side: str) -> str:
    return f"{Path(ckpt_path).stem}_kp_{side}.onnx"


def yolo_onnx_name(weights) -> str:
    """``<stem>_yolo.onnx``, or ``<stem>.onnx`` when the stem already says ``_yolo`` (demo_yolo.pt)."""
    stem = Path(weights).stem
    return f"{stem}.onnx" if "_yolo" in stem.lower() else f"{stem}_yolo.onnx"


def export_yolo_onnx(weights, out_path, imgsz: Optional[int] = None, dynamic: bool = True,
                     opset: Optional[int] = None, verify: bool = True) -> Dict[str, object]:
    """Export a YOLO ``.pt`` detector to ``out_path`` with Ultralytics' ``YOLO.export(format="onnx")``,
    at ``imgsz`` (None: the size it was trained at, ``detection.trained_imgsz``; the size goes into
    the file's metadata, which prediction reads as the detector's own size).

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
        trained = trained_imgsz(model, weights)
        if imgsz and trained and int(imgsz) != trained:
            log.warning("--imgsz %d: the detector %s was trained at %d; exporting at %d", int(imgsz), weights.name,
                        trained, int(imgsz))
        imgsz = int(imgsz or trained or DEFAULT_IMGSZ)
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


def _onnx_names(members: Dict[str, List[str]]) -> Dict[str, List[str]]:
    """The file name of each member's export; two members that would share one are refused."""
    names = {"kp_left_path": [kp_onnx_name(p, "left") for p in members["kp_left_path"]],
             "kp_right_path": [kp_onnx_name(p, "right") for p in members["kp_right_path"]],
             "refine_path": [refiner_onnx_name(p) for p in members["refine_path"]]}
    seen: Dict[str, str] = {}
    for key, files in names.items():
        for src, name in zip(members[key], files):
            if name in seen and seen[name] != str(src):
                raise UserError(f"{src} and {seen[name]} would both be exported as {name}: give them different "
                                "file names")
            seen[name] = str(src)
    return names


def refiner_onnx_name(ckpt_path) -> str:
    return f"{Path(ckpt_path).stem}_refiner.onnx"


def export_models(out_dir, kp_left_path=None, kp_right_path=None, yolo_weights=None, imgsz: Optional[int] = None,
                  opset: Optional[int] = None, yolo_dynamic: bool = True, verify: bool = True, refine_path=None,
                  manifest: Optional[str] = None, settings: Optional[dict] = None) -> Dict[str, dict]:
    """Export the given models into ``out_dir``: every keypoint model of each side (several:
    an ensemble), every refiner and the detector (at ``imgsz``; None: its training size). With
    a keypoint model, ``manifest`` (a file name, default ``pipeline.json``) is written beside
    them: the pipeline manifest of the exported set, with ``settings`` (a source manifest's), so
    that ``--pipeline`` runs the ONNX set. Returns {"kp_left" | "kp_left_2" | ... | "refiner_1" |
    ... | "yolo" | "pipeline": {"path", "source", ...}}."""
    members = {k: checkpoint_paths(v) for k, v in (("kp_left_path", kp_left_path), ("kp_right_path", kp_right_path),
                                                    ("refine_path", refine_path))}
    if not (any(members.values()) or yolo_weights):
        raise UserError("nothing to export: give --pipeline, --kp_left_path, --kp_right_path, --refine_path and/or "
                        "--yolo_weights")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    for key, paths in (*members.items(), ("yolo_weights", checkpoint_paths(yolo_weights))):
        for p in paths:
            if not Path(p).is_file():
                raise UserError(f"--{key}: file not found: {p}")
    names = _onnx_names(members)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    result, exported = {}, {k: [] for k in members}
    labels = {"kp_left_path": "kp_left", "kp_right_path": "kp_right"}
    for key, paths in members.items():
        for i, (p, name) in enumerate(zip(paths, names[key])):
            try:
                path, diffs = export_checkpoint_onnx(p, out / name, opset=opset or DEFAULT_OPSET, verify=verify)
            except ValueError as e:
                raise UserError(str(e)) from None
            label = f"refiner_{i + 1}" if key == "refine_path" else labels[key] + (f"_{i + 1}" if i else "")
            result[label] = {"path": path, "source": str(p), **diffs}
            exported[key].append(str(path))
            log.info("keypoint model %s -> %s", p, path)
    yolo_out = None
    if yolo_weights:
        r = export_yolo_onnx(yolo_weights, out / yolo_onnx_name(yolo_weights), imgsz=imgsz, dynamic=yolo_dynamic,
                             opset=opset, verify=verify)
        result["yolo"] = {**r, "source": str(yolo_weights)}
        yolo_out = str(r["path"])
        log.info("detector %s -> %s", yolo_weights, r["path"])
    if exported["kp_left_path"] or exported["kp_right_path"]:
        path = write_pipeline(out / (manifest or "pipeline.json"), yolo_weights=yolo_out,
                              **{k: v or None for k, v in exported.items()}, **(settings or {}))
        result["pipeline"] = {"path": path, "source": "the exported models"}
    return result
