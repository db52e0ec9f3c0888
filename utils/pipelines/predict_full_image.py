"""Single-stage prediction: the whole film, letterboxed -> one keypoint model -> every keypoint
in image pixels -> the same predictions.csv, metrics, plots and overlays as the two-stage model.

``run_full_image_prediction(data, output_dir, kp_path, ...)`` is the one function behind
predict_full_image_keypoints.py and, per fold, ``kfold_predict_hip_crop_keypoints.py
--pipeline full_image``. It runs the two-stage pipeline's stages with the detection and crop
stages replaced by one letterbox stage:

    read_stage -> full_infer_stage (letterbox, model, inverse letterbox matrix) -> full_write_stage

and reuses ``utils.pipelines.predict``'s reader, row builder, writer and summary, so the
columns are those of the two-stage model. There is no detector: ``detected_*`` is True for a
side whose points are finite (always, for this model), the box, IoU, detector-confidence and
crop-side columns are NaN, and ``status`` is "ok". So a full-image run reports no detection
recall (``metrics.no_detector``: there is no detector to recall anything), IoU or NME; the
keypoint, AI and IHDI metrics are directly comparable with a two-stage run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np

from datasets.formats import dataset_layout, load_dataset
from datasets.full_image import letterbox_input
from datasets.layouts import SIDES, get_layout
from models import checkpoint as ckpt_io
from utils.config import PredictConfig
from utils.cropping import crop_to_image
from utils.devices import select_device
from utils.errors import ProblemLog, UserError
from utils.fileio import check_output_dir
from utils.progress import every_for, progress_bar
from utils.pipelines.predict import (ImageItem, PredictionWriter, SideModel, build_row, finish, read_stage,
                                     remove_previous_results)

log = logging.getLogger("hipkp")


class FullImageModel(SideModel):
    """A full-image keypoint model: ``crop`` letterboxes the whole film (no box); ``predict`` is
    ``SideModel``'s (the backend seam), returning every point of the layout."""

    def crop(self, image: np.ndarray, box=None) -> Tuple[np.ndarray, np.ndarray]:
        """(model input float32 (3, S, S), image -> model matrix M) of the letterboxed film."""
        p = self.preprocess
        return letterbox_input(image, p.input_size, hist_eq=p.hist_eq, mean=p.mean, std=p.std)


def load_full_image_model(kp_path, device="cpu") -> FullImageModel:
    """The full-image model of checkpoint ``kp_path`` (``UserError`` for a hip-crop checkpoint)."""
    if not kp_path:
        raise UserError("give --kp_path (a full-image keypoint checkpoint .pth from train_full_image_keypoints.py)")
    if not Path(kp_path).is_file():
        raise UserError(f"--kp_path: keypoint checkpoint not found: {kp_path}")
    try:
        model, codec, cfg = ckpt_io.load_keypoint_model(kp_path, device=device)
    except ValueError as e:
        raise UserError(str(e)) from None
    if cfg.get("pipeline", "hip_crop") != "full_image":
        raise UserError(f"--kp_path: {kp_path} is a hip-crop model (two-stage); predict with "
                        "predict_hip_crop_keypoints.py, or give a full-image checkpoint")
    lay = get_layout(cfg.get("layout", "ihdi12"))
    if int(cfg["num_keypoints"]) != lay.num_points:
        raise UserError(f"--kp_path: {kp_path} predicts {cfg['num_keypoints']} points, its layout {lay.name} "
                        f"has {lay.num_points}")
    return FullImageModel(model, codec, cfg, mirrored=False, path=str(kp_path))


def full_infer_stage(items: List[ImageItem], fm: FullImageModel, layout) -> None:
    """Letterbox every film, run the model once on the batch, map the points back to the image."""
    if not items:
        return
    inputs = [fm.crop(it.image) for it in items]
    coords, conf = fm.predict(np.stack([x for x, _ in inputs]))
    for it, (_, M), xy, c in zip(items, inputs, coords, conf):
        it.crops = {}
        pts = crop_to_image(M, xy)   # (N, 2) image px, stored order
        it.points = {s: (pts[layout.side_slice(s)], c[layout.side_slice(s)]) for s in SIDES}


def full_write_stage(items: List[ImageItem], out: PredictionWriter) -> None:
    """One predictions.csv row per film: the two-stage row builder with no boxes (see the module doc)."""
    for it in items:
        rec = dataclasses.replace(it.rec, boxes=None)   # no GT box either: an IoU would read 0, not "n/a"
        row, kps = build_row(rec, it.image, it.info, {}, it.points, out.layout, out.side_models, out.with_gt)
        row["status"] = "ok"   # (no detection stage: nothing can be undetected)
        out.add(it, row, kps)


def run_full_image_prediction(data, output_dir, kp_path=None, device="auto", batch_size=16, overlays=True,
                              max_overlays=None, worst_n=10, strict=False, overwrite=True, progress=True,
                              make_plots=True, hip_sheet=PredictConfig.hip_sheet) -> dict:
    """Predict every film of ``data`` with the full-image model ``kp_path`` and, with annotations,
    evaluate. Writes what ``utils.pipelines.predict.run_prediction`` writes; returns its summary."""
    t0 = time.time()
    out = check_output_dir(output_dir, overwrite)
    if int(batch_size) < 1:
        raise UserError(f"--batch_size must be at least 1, got {batch_size}")
    problems = ProblemLog(strict=strict)
    records = load_dataset(data, problems=problems)
    dev = select_device(device)
    fm = load_full_image_model(kp_path, device=str(dev)).to(dev)
    layout = get_layout(fm.config.get("layout", "ihdi12"))
    data_layout = dataset_layout(records)
    if data_layout and data_layout != layout.name:
        raise UserError(f"the keypoint model uses layout {layout.name} but {data} is annotated in {data_layout}")
    out.mkdir(parents=True, exist_ok=True)
    remove_previous_results(out)
    (out / "overlays").mkdir(exist_ok=True)
    writer = PredictionWriter(out, layout, {s: fm for s in SIDES}, data_layout is not None, overlays, max_overlays)
    try:
        bar = progress_bar(total=len(records), desc="predict", unit="img", enabled=progress,
                           every=every_for(len(records), batch_size))   # a log file: a line per ~10%
        for start in range(0, len(records), batch_size):
            items = read_stage(records[start:start + batch_size], problems)
            full_infer_stage(items, fm, layout)
            full_write_stage(items, writer)
            writer.flush()
            bar.update(len(items))
        bar.close()
    finally:
        writer.close()
    summary = finish(writer, problems, records, data, dict(use_gt_box=False, yolo_weights=None,
                                                          make_plots=make_plots, worst_n=worst_n, t0=t0,
                                                          hip_sheet=hip_sheet if overlays else 0))
    summary.update(pipeline="full_image", yolo_weights=None)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
