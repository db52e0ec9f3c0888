"""The review-and-annotate web app: a FastAPI app over one dataset folder.

``create_app(data_dir, predictions=None, kp_left_path=None, kp_right_path=None,
yolo_weights=None, pipeline=None, ...)`` returns the app; ``review_app.py`` serves it with uvicorn. The page
(``static/``) is plain HTML and JS, served from the repository, no build step. The user
guide and the JSON API are in docs/review_app.md.

What the app reads and writes is the dataset folder format of the README: images under
``images/`` (or a plain folder of images, which then gets ``annotations/`` and
``detections/`` beside its images), ``annotations/<stem>.csv`` and
``detections/<stem>.json``. A save writes both atomically (temporary file in the same
folder, then ``os.replace``) and first copies the previous annotation to
``annotations/.history/<stem>.<UTC timestamp>.csv``.

A stem is only ever looked up in the index of images built at start-up, never joined to
a path, so no request can name a file outside the folder.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from datasets.formats import list_images, read_annotation, read_detection, write_annotation, write_detection
from datasets.layouts import SIDES, get_layout, layout_for_num_points
from datasets.mtddh import BOX_MARGIN
from utils.errors import ItemError, UserError
from utils.hip_geometry import grade_name, hip_frames, hip_lines, plausibility_gate
from datasets.image_io import is_dicom
from datasets.image_io import read_image
from models.checkpoint import load_keypoint_model
from utils.evaluation import schema
from utils.evaluation.metrics import read_predictions
from utils.pipelines.manifest import load_pipeline, prediction_options
from utils.pipelines.predict import checkpoint_paths, run_prediction

log = logging.getLogger("hipkp")

STATIC_DIR = Path(__file__).resolve().parent / "static"
HISTORY_DIR = ".history"
# how long a PUT waits for another save of the same stem before answering 409
SAVE_LOCK_TIMEOUT_S = 10.0


class ApiError(Exception):
    """An HTTP error with a one-line message (turned into ``{"detail": message}``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- helpers
def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then ``os.replace`` it into place:
    a reader sees the old file or the new one, never half of one.
    (To be replaced by ``utils.fileio.atomic_write`` once that exists.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def boxes_from_keypoints(kps: np.ndarray, layout, width: int, height: int) -> Dict[str, np.ndarray]:
    """A hip box per side from its keypoints, any layout: the points' bounding box grown by
    the MTDDH converter's ``BOX_MARGIN`` (fractions of the inter-triradiate distance: lateral,
    medial, top, bottom; enough to take in the femoral metaphysis), clipped to the image.
    (``datasets.mtddh.side_boxes`` does the same for mtddh8 only.)"""
    lay = get_layout(layout)
    kps = np.asarray(kps, dtype=float)
    span = float(np.linalg.norm(kps[lay.triradiate["right"]] - kps[lay.triradiate["left"]]))
    span = max(span, 0.05 * max(width, height))          # a collapsed pelvis still gets a box
    m = {k: v * span for k, v in BOX_MARGIN.items()}
    boxes = {}
    for side in SIDES:
        pts = kps[lay.side_slice(side)]
        (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
        if side == "left":                                # lateral is toward smaller x
            x1, x2 = x1 - m["lateral"], x2 + m["medial"]
        else:
            x1, x2 = x1 - m["medial"], x2 + m["lateral"]
        y1, y2 = y1 - m["top"], y2 + m["bottom"]
        boxes[side] = np.clip([x1, y1, x2, y2], 0, [width - 1, height - 1, width - 1, height - 1])
    return boxes


def _image_size(path: Path) -> Optional[tuple]:
    """(width, height) from the file's header, without decoding the pixels; None if unknown."""
    try:
        if is_dicom(path):
            import pydicom
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
            return int(ds.Columns), int(ds.Rows)
        from PIL import Image
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:
        return None


def _num(v) -> Optional[float]:
    """A JSON-safe float: None for NaN/inf/missing."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pt(p) -> List[Optional[float]]:
    return [_num(p[0]), _num(p[1])]


def measure(kps, layout) -> Optional[Dict[str, Any]]:
    """AI and IHDI per hip plus the lines to draw, for one full keypoint set (None if absent)."""
    if kps is None:
        return None
    kps = np.asarray(kps, dtype=float)
    if not np.all(np.isfinite(kps)):
        return None
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        f = hip_frames(kps, layout)
        lines = hip_lines(kps, layout)
    out = {}
    for s in SIDES:
        g = int(f[s]["grade"])
        out[s] = {"ai_deg": _num(f[s]["ai_deg"]), "ihdi": g, "ihdi_name": grade_name(g),
                  "lines": {name: ([_pt(seg[0]), _pt(seg[1])] if isinstance(seg, tuple) else _pt(seg))
                            for name, seg in lines[s].items()}}
    return out


def gate(kps, layout, width, det_conf=None, detected=None) -> Optional[Dict[str, List[str]]]:
    """The plausibility gate's reasons per hip (None without keypoints or image width)."""
    if kps is None or not width:
        return None
    lr, rr = plausibility_gate(np.asarray(kps, dtype=float), width, layout,
                               confidences=det_conf, detected=detected)
    return {"left": lr, "right": rr}


def _boxes_json(boxes) -> Optional[Dict[str, Optional[List[float]]]]:
    if not boxes:
        return None
    return {s: ([_num(v) for v in boxes[s]] if boxes.get(s) is not None else None) for s in SIDES}


# --------------------------------------------------------------------------- predictions
def _prediction_from_row(row, layout) -> Dict[str, Any]:
    """One predictions.csv row -> keypoints, boxes, confidences (image px)."""
    lay = get_layout(layout)
    kps = np.array([[row.get(x, np.nan), row.get(y, np.nan)] for x, y in schema.point_columns(lay.num_points)],
                   dtype=float)
    boxes, conf, detected = {}, {}, {}
    for s in SIDES:
        b = np.array([row.get(c, np.nan) for c in schema.box_columns("pred_box", s)], dtype=float)
        boxes[s] = b if np.all(np.isfinite(b)) else None
        conf[s] = _num(row.get(schema.column("det_conf", side=s)))
        d = row.get(schema.column("detected", side=s))
        detected[s] = bool(d) if d is not None and not (isinstance(d, float) and math.isnan(d)) \
            else boxes[s] is not None
    return {"keypoints": kps, "boxes": boxes, "det_conf": conf, "detected": detected,
            "mean_err_px": _num(row.get("mean_err_px")),
            "width": _num(row.get("width")), "height": _num(row.get("height"))}


def read_prediction_file(path, layout=None) -> (Dict[str, Dict], Optional[str]):
    """predictions.csv -> ({stem: prediction}, layout name)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--predictions: file not found: {path}")
    try:
        df = read_predictions(path)
    except Exception as e:
        raise UserError(f"--predictions: unreadable CSV {path} ({type(e).__name__}: {e})") from None
    x0 = schema.column("point", kind="pred", axis="x", j=0)
    if "stem" not in df.columns or x0 not in df.columns:
        raise UserError(f"--predictions: {path} is not a predictions.csv (no stem / {x0} columns)")
    if "layout" in df.columns and df["layout"].notna().any():
        names = sorted(set(df["layout"].dropna()))
        if len(names) > 1:
            raise UserError(f"--predictions: {path} mixes layouts {names}")
        pl = names[0]
    else:
        pl = layout_for_num_points(schema.point_count(df.columns)).name
    if layout and pl != get_layout(layout).name:
        raise UserError(f"--predictions: {path} uses layout {pl} but the annotations use {layout}")
    preds = {}
    for row in df.to_dict("records"):
        preds[str(row["stem"])] = _prediction_from_row(row, pl)
    return preds, pl


# --------------------------------------------------------------------------- the store
class ReviewStore:
    """The dataset folder: index of images, annotation and detection I/O, per-stem locks."""

    def __init__(self, data_dir, predictions=None, layout=None, kp_left_path=None, kp_right_path=None,
                 yolo_weights=None, device="auto", pipeline=None, refine_path=None, imgsz=None):
        root = Path(data_dir)
        if not root.is_dir():
            raise UserError(f"--data: folder not found: {root}")
        self.root = root.resolve()
        self.image_dir = self.root / "images" if (self.root / "images").is_dir() else self.root
        self.ann_dir = self.root / "annotations"
        self.det_dir = self.root / "detections"
        self.history_dir = self.ann_dir / HISTORY_DIR
        self.images: "OrderedDict[str, Path]" = OrderedDict()
        for p in list_images(self.image_dir):
            if p.stem in self.images:
                log.warning("skipped %s: duplicate stem %r (another image has the same name)", p, p.stem)
                continue
            self.images[p.stem] = p
        if not self.images:
            raise UserError(f"--data: no images (*.png, *.jpg, *.jpeg, *.dcm) in {self.image_dir}")
        self.layout = get_layout(layout).name if layout else self._layout_from_annotations()
        self.predictions: Dict[str, Dict] = {}
        if predictions:
            self.predictions, pl = read_prediction_file(predictions, self.layout)
            self.layout = self.layout or pl
            unknown = sorted(set(self.predictions) - set(self.images))
            if unknown:
                log.warning("%d prediction row(s) name no image of %s (e.g. %s); ignored",
                            len(unknown), self.image_dir, unknown[0])
        # the pre-fill's pipeline: a manifest's models and settings, the given ones over them
        given = {k: v for k, v in dict(kp_left_path=kp_left_path, kp_right_path=kp_right_path,
                                       yolo_weights=yolo_weights, refine_path=refine_path, imgsz=imgsz).items()
                 if v is not None}
        self.options = prediction_options(load_pipeline(pipeline) if pipeline else None, given)
        self.options.pop("use_gt_box", None)        # pre-fill decides per image (no detector: the image's boxes)
        self.kp_left_path, self.kp_right_path, self.yolo_weights = (
            self.options.get("kp_left_path"), self.options.get("kp_right_path"), self.options.get("yolo_weights"))
        self.device = device
        for flag, value in (("--kp_left_path", self.kp_left_path), ("--kp_right_path", self.kp_right_path),
                            ("--yolo_weights", self.yolo_weights), ("--refine_path", self.options.get("refine_path"))):
            for p in checkpoint_paths(value):
                if not Path(p).is_file():
                    raise UserError(f"{flag}: file not found: {p}")
        if (kp_left_path or kp_right_path) and not self.layout:
            self.layout = self._layout_from_checkpoint()
        self.layout = self.layout or "ihdi12"
        self._locks: Dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._predict_lock = threading.Lock()
        self._sizes: Dict[str, tuple] = {}
        self._pixels: "OrderedDict[str, tuple]" = OrderedDict()

    # ------------------------------------------------------------ set-up
    def _layout_from_annotations(self) -> Optional[str]:
        found = {}
        for stem in self.images:
            p = self.ann_dir / f"{stem}.csv"
            if p.is_file():
                try:
                    found.setdefault(layout_for_num_points(len(read_annotation(p))).name, p)
                except ItemError as e:
                    log.warning("%s", e)
        if len(found) > 1:
            raise UserError(f"{self.ann_dir}: annotations mix keypoint layouts {sorted(found)} "
                            f"(e.g. {', '.join(str(p) for p in found.values())})")
        return next(iter(found), None)

    def _layout_from_checkpoint(self) -> Optional[str]:
        try:
            _, _, cfg = load_keypoint_model(checkpoint_paths(self.kp_left_path or self.kp_right_path)[0])
        except (ValueError, OSError) as e:
            raise UserError(str(e)) from None
        return cfg.get("layout")

    @property
    def can_predict(self) -> bool:
        return bool(self.kp_left_path or self.kp_right_path)

    # ------------------------------------------------------------ lookups
    def image_path(self, stem: str) -> Path:
        """The image of ``stem``; 404 for anything that is not an indexed stem."""
        p = self.images.get(stem) if isinstance(stem, str) else None
        if p is None:
            raise ApiError(404, f"unknown image {stem!r}")
        return p

    def lock(self, stem: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(stem, threading.Lock())

    def size(self, stem: str) -> Optional[tuple]:
        if stem not in self._sizes:
            s = _image_size(self.images[stem])
            if s is None:
                try:
                    img, _ = self.pixels(stem)
                    s = (img.shape[1], img.shape[0])
                except ApiError:
                    return None
            self._sizes[stem] = s
        return self._sizes[stem]

    def pixels(self, stem: str):
        """(gray uint8, info), decoded once and kept for the last few images."""
        if stem in self._pixels:
            self._pixels.move_to_end(stem)
            return self._pixels[stem]
        try:
            img, info = read_image(self.image_path(stem))
        except ItemError as e:
            raise ApiError(422, str(e)) from None
        self._pixels[stem] = (img, info)
        self._sizes[stem] = (img.shape[1], img.shape[0])
        while len(self._pixels) > 8:
            self._pixels.popitem(last=False)
        return img, info

    def annotation(self, stem: str):
        """(keypoints or None, problem message or None)."""
        p = self.ann_dir / f"{stem}.csv"
        if not p.is_file():
            return None, None
        try:
            kps = read_annotation(p, expected=get_layout(self.layout).num_points)
        except ItemError as e:
            return None, str(e)
        return kps, None

    def boxes(self, stem: str):
        p = self.det_dir / f"{stem}.json"
        if not p.is_file():
            return None, None
        try:
            return read_detection(p), None
        except ItemError as e:
            return None, str(e)

    # ------------------------------------------------------------ views
    def summary(self, stem: str) -> Dict[str, Any]:
        kps, problem = self.annotation(stem)
        pred = self.predictions.get(stem)
        size = self.size(stem)
        width = size[0] if size else None
        qc = gate(kps, self.layout, width)
        pred_qc = None
        if pred is not None:
            # a run on ground-truth boxes (--use_gt_box) has no detector confidence: judge
            # detection by ``detected`` alone, not as a missing confidence
            conf = tuple(pred["det_conf"][s] for s in SIDES)
            pred_qc = gate(pred["keypoints"], self.layout, width or pred["width"],
                           det_conf=None if all(c is None for c in conf) else conf,
                           detected=tuple(pred["detected"][s] for s in SIDES))
        error = None
        if pred is not None and kps is not None:
            e = np.linalg.norm(pred["keypoints"] - kps, axis=1)
            e = e[np.isfinite(e)]
            error = float(e.mean()) if len(e) else None
        elif pred is not None:
            error = pred["mean_err_px"]
        status = "error" if problem else ("annotated" if kps is not None else "unannotated")
        flagged = any(r for q in (qc, pred_qc) if q for r in q.values())
        return {"stem": stem, "image": self.images[stem].name, "status": status, "problem": problem,
                "annotated": kps is not None, "has_prediction": pred is not None,
                "flagged": bool(flagged), "qc": qc, "prediction_qc": pred_qc, "error_px": _num(error)}

    def detail(self, stem: str) -> Dict[str, Any]:
        s = self.summary(stem)
        kps, _ = self.annotation(stem)
        boxes, box_problem = self.boxes(stem)
        lay = get_layout(self.layout)
        size = self.size(stem)
        pred = self.predictions.get(stem)
        names = []
        for j in range(lay.num_points):
            side = "left" if j in lay.side_indices["left"] else "right"
            names.append(f"{side} {lay.side_point_names(side)[lay.local(side, j)]}")
        s.update({
            "layout": lay.name, "num_points": lay.num_points, "point_names": names,
            "side_indices": {side: list(lay.side_indices[side]) for side in SIDES},
            "triradiate": dict(lay.triradiate), "lateral_edge": dict(lay.lateral_edge),
            "hpoint": {side: list(v) for side, v in lay.hpoint.items()},
            "width": size[0] if size else None, "height": size[1] if size else None,
            "dicom": is_dicom(self.images[stem]),
            "keypoints": None if kps is None else [_pt(p) for p in kps],
            "boxes": _boxes_json(boxes), "box_problem": box_problem,
            "measures": measure(kps, lay),
            "history": len(list(self.history_dir.glob(f"{stem}.*.csv"))) if self.history_dir.is_dir() else 0,
            "prediction": None,
            "can_predict": self.can_predict,
        })
        if pred is not None:
            s["prediction"] = {
                "keypoints": [_pt(p) for p in pred["keypoints"]],
                "boxes": _boxes_json(pred["boxes"]), "det_conf": pred["det_conf"],
                "measures": measure(pred["keypoints"], lay), "qc": s["prediction_qc"],
            }
        return s

    # ------------------------------------------------------------ saving
    def validate(self, stem: str, body) -> np.ndarray:
        lay = get_layout(self.layout)
        pts = body.get("keypoints") if isinstance(body, dict) else None
        if not isinstance(pts, list):
            raise ApiError(422, 'body must be {"keypoints": [[x, y], ...]}')
        if len(pts) != lay.num_points:
            raise ApiError(422, f"{len(pts)} keypoints, layout {lay.name} needs {lay.num_points}")
        arr = np.full((lay.num_points, 2), np.nan)
        for i, p in enumerate(pts):
            if not (isinstance(p, (list, tuple)) and len(p) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)):
                raise ApiError(422, f"keypoint {i} is not a pair of numbers: {p!r}")
            arr[i] = [float(p[0]), float(p[1])]
        bad = ~np.all(np.isfinite(arr), axis=1)
        if bad.any():
            raise ApiError(422, f"keypoint {int(np.flatnonzero(bad)[0])} is not finite (NaN or infinite)")
        size = self.size(stem)
        if size is None:
            raise ApiError(422, f"cannot read the size of {self.images[stem].name}")
        w, h = size
        out = (arr[:, 0] < -0.5) | (arr[:, 0] > w - 0.5) | (arr[:, 1] < -0.5) | (arr[:, 1] > h - 0.5)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise ApiError(422, f"keypoint {i} at ({arr[i, 0]:g}, {arr[i, 1]:g}) lies outside the "
                                f"{w}x{h} image")
        return arr

    def save(self, stem: str, kps: np.ndarray) -> Dict[str, Any]:
        """Write the annotation (and detections when there are none), keeping the old version."""
        lock = self.lock(stem)
        if not lock.acquire(timeout=SAVE_LOCK_TIMEOUT_S):
            raise ApiError(409, f"another save of {stem!r} is under way; try again")
        try:
            ann = self.ann_dir / f"{stem}.csv"
            history = None
            if ann.is_file():
                self.history_dir.mkdir(parents=True, exist_ok=True)
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
                history = self.history_dir / f"{stem}.{stamp}.csv"
                shutil.copy2(ann, history)
            _atomic_write(ann, lambda tmp: write_annotation(tmp, kps))
            det = self.det_dir / f"{stem}.json"
            boxes, problem = self.boxes(stem)
            made_boxes = False
            if boxes is None:
                if problem:
                    log.warning("%s; replacing it with boxes made from the keypoints", problem)
                w, h = self.size(stem)
                boxes = boxes_from_keypoints(kps, self.layout, w, h)
                name = self.images[stem].name
                _atomic_write(det, lambda tmp: write_detection(tmp, boxes, name))
                made_boxes = True
        finally:
            lock.release()
        out = self.detail(stem)
        out.update({"saved": True, "history_file": history.name if history else None,
                    "boxes_made": made_boxes})
        return out

    # ------------------------------------------------------------ pre-fill
    def predict(self, stem: str) -> Dict[str, Any]:
        """Run ``utils.pipelines.predict.run_prediction`` on this one image, with the whole pipeline
        (the detector at its training size, the refiners, the settings, the plausibility gate);
        nothing is saved."""
        if not self.can_predict:
            raise ApiError(409, "pre-fill needs keypoint weights: start the app with --pipeline, or with "
                                "--kp_left_path (and --yolo_weights, or detections/ boxes for this image)")
        img = self.image_path(stem)
        boxes, _ = self.boxes(stem)
        use_gt_box = not self.yolo_weights
        if use_gt_box and boxes is None:
            raise ApiError(409, f"pre-fill of {stem!r} needs --yolo_weights, or a detections/{stem}.json box file")
        t0 = time.time()
        with self._predict_lock, tempfile.TemporaryDirectory(prefix="review_predict_") as tmp:
            tmp = Path(tmp)
            (tmp / "data" / "images").mkdir(parents=True)
            link = tmp / "data" / "images" / img.name
            try:
                os.symlink(img, link)
            except OSError:
                shutil.copy2(img, link)
            if use_gt_box:
                (tmp / "data" / "detections").mkdir()
                write_detection(tmp / "data" / "detections" / f"{stem}.json", boxes, img.name)
            try:
                run_prediction(tmp / "data", tmp / "out", **self.options, use_gt_box=use_gt_box, device=self.device,
                               batch_size=1, overlays=False, worst_n=0, progress=False, make_plots=False)
            except UserError as e:
                raise ApiError(422, f"pre-fill failed: {e}") from None
            df = read_predictions(tmp / "out" / "predictions.csv")
        row = df.to_dict("records")[0]
        pred = _prediction_from_row(row, self.layout)
        missing = [s for s in SIDES if not pred["detected"][s]]
        kps = pred["keypoints"]
        qc = {s: [r for r in str(row.get(schema.column("qc", side=s)) or "").split(";") if r and r != "nan"]
              for s in SIDES}
        return {"stem": stem, "keypoints": [_pt(p) for p in kps], "boxes": _boxes_json(pred["boxes"]),
                "det_conf": pred["det_conf"], "missing_sides": missing, "qc": qc,
                "measures": measure(kps, self.layout), "use_gt_box": use_gt_box,
                "seconds": round(time.time() - t0, 2)}


# --------------------------------------------------------------------------- the app
def create_app(data_dir, predictions=None, kp_left_path=None, kp_right_path=None, yolo_weights=None,
               layout=None, device="auto", pipeline=None, refine_path=None, imgsz=None):
    """The FastAPI app serving ``data_dir`` (a dataset folder or a plain folder of images).

    ``predictions``: a predictions.csv to show beside the annotations; ``kp_left_path`` /
    ``kp_right_path`` / ``yolo_weights``: weights for pre-fill (without ``yolo_weights`` the
    image's detections/ boxes are used); ``layout``: the keypoint layout when neither the
    annotations, the predictions nor the weights tell it (default ihdi12). ``pipeline``: a pipeline
    manifest (``utils.pipelines.manifest``) for pre-fill, its models and settings; the weights,
    ``refine_path`` and ``imgsz`` given override its own.
    Structural problems raise ``UserError``.
    """
    from fastapi import Body, FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles

    store = ReviewStore(data_dir, predictions=predictions, layout=layout, kp_left_path=kp_left_path,
                        kp_right_path=kp_right_path, yolo_weights=yolo_weights, device=device, pipeline=pipeline,
                        refine_path=refine_path, imgsz=imgsz)
    app = FastAPI(title="Hip keypoint review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/info")
    def info():
        return {"data_dir": str(store.root), "layout": store.layout, "n_images": len(store.images),
                "has_predictions": bool(store.predictions), "can_predict": store.can_predict}

    @app.get("/api/images")
    def images():
        return {"layout": store.layout, "has_predictions": bool(store.predictions),
                "images": [store.summary(stem) for stem in store.images]}

    @app.get("/api/images/{stem}")
    def image_detail(stem: str):
        store.image_path(stem)
        return store.detail(stem)

    @app.get("/api/images/{stem}/image")
    def image_png(stem: str):
        import cv2
        img, _ = store.pixels(stem)
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise ApiError(500, f"cannot encode {stem} as PNG")
        return Response(buf.tobytes(), media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.put("/api/images/{stem}/keypoints")
    def put_keypoints(stem: str, body: Any = Body(...)):
        store.image_path(stem)
        kps = store.validate(stem, body)
        return store.save(stem, kps)

    @app.post("/api/images/{stem}/predict")
    def predict(stem: str):
        store.image_path(stem)
        return store.predict(stem)

    return app


def serve(data_dir, host="127.0.0.1", port=8765, **kwargs) -> None:
    """Build the app and run it with uvicorn until interrupted (review_app.py)."""
    import uvicorn
    app = create_app(data_dir, **kwargs)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: anyone who can reach this address can read the films and change "
                    "the annotations (there is no login)", host)
    s = app.state.store
    log.info("%d image(s) in %s, layout %s%s%s", len(s.images), s.image_dir, s.layout,
             f", {len(s.predictions)} prediction(s)" if s.predictions else "",
             ", pre-fill on" if s.can_predict else "")
    log.info("open http://%s:%d/", "127.0.0.1" if host in ("0.0.0.0", "::") else host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
