"""Two-stage prediction: YOLO boxes (or ground-truth boxes) -> square crops -> keypoint model
-> keypoints in image pixels -> AI and IHDI per hip -> CSV, metrics, plots, overlays.

``run_prediction(...)`` is the one function behind predict_hip_crop_keypoints.py and, per
fold, kfold_predict_hip_crop_keypoints.py. Each batch of images goes through five small
stages over a list of ``ImageItem`` records (one per image, carrying what each stage adds):

    read_stage -> detect_stage -> crop_stage -> infer_stage -> [refine_stage] -> write_stage

The infer stage is the seam for other backends: it calls ``SideModel.predict(crops) ->
(coords, conf)`` (crop pixels, ``(N, K, 2)`` and ``(N, K)``) once per distinct model.
``refine_stage`` (``refine_path``: a roof refiner, trained with ``--stage roof``, and/or a femur
refiner, ``--stage femur``) cuts a tighter crop around each side's predicted roof (or femur
points) and runs the infer stage again on those crops, with the refiner as the side's model; its
points replace those points. The roof is refined first, then the femur.
Keyword defaults are those of ``utils.config.PredictConfig``.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch

from datasets.crops import preprocess_crop
from datasets.formats import HipRecord, dataset_layout, load_dataset, read_record_image
from datasets.layouts import REFINE_STAGES, SIDES, get_layout, stage_layout, stage_positions
from models import checkpoint as ckpt_io
from models.codecs import with_decode
from models.onnx_runtime import load_onnx_keypoint_model   # .onnx files from export_onnx.py
from utils.config import PredictConfig, Preprocess
from utils.cropping import crop_points_to_side, roof_box, side_crop_matrix, square_box, warp
from utils.devices import autocast, select_amp, select_device, yolo_device
from utils.errors import ItemError, ProblemLog, UserError
from utils.evaluation import plots, schema
from utils.evaluation.metrics import evaluate_predictions, make_row, write_metrics_csv
from utils.evaluation.overlays import HIP_SHEET, row_annotations, save_hip_sheet, save_overlay, save_worst_cases
from utils.evaluation.tables import headline_table
from utils.fileio import check_output_dir
from utils.hip_geometry import DEFAULT_MIN_CONF, ai_interval, refine_shift_fraction, summarize_gate
from utils.progress import every_for, progress_bar
from utils.pipelines import detection

log = logging.getLogger("hipkp")


# ---------------------------------------------------------------------- models
@dataclass
class SideModel:
    """A keypoint model and how it serves one image side."""
    model: object
    codec: object
    config: dict
    mirrored: bool          # the crop is mirrored before the model sees it
    path: str
    preprocess: Optional[Preprocess] = None   # input size, crop margin, hist_eq, mean/std (from the checkpoint)
    device: object = None
    amp_dtype: object = None
    flip_test: bool = False   # also run the mirrored crop and average (``outputs``)

    def __post_init__(self):
        if self.preprocess is None:
            self.preprocess = Preprocess.from_checkpoint(self.config)

    def to(self, device) -> "SideModel":
        """Move the model to ``device`` for inference (eval mode, channels_last and AMP on CUDA)."""
        self.device, self.amp_dtype = device, select_amp("auto", device)[0]
        self.model.to(device).eval()
        if device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        return self

    def crop(self, image: np.ndarray, box) -> Tuple[np.ndarray, np.ndarray]:
        """(model input float32 (3, S, S), image -> crop matrix M) of the square crop around ``box``."""
        p = self.preprocess
        M = side_crop_matrix(box, p.input_size, p.crop_expand, self.mirrored)
        return preprocess_crop(warp(image, M, p.input_size), hist_eq=p.hist_eq, mean=p.mean, std=p.std), M

    def predict(self, crops: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Crops (N, 3, S, S) -> (coords (N, K, 2) in crop pixels, confidence (N, K)); no mirroring undone."""
        coords, conf, _ = self.predict_with_samples(crops, 0)
        return coords, conf

    def predict_with_samples(self, crops: np.ndarray, n_samples: int, generator=None):
        """``predict`` plus ``n_samples`` keypoint sets drawn from the codec's decoded
        distributions, (N, n_samples, K, 2) crop pixels, or None (no samples asked for, or a
        codec without a distribution, e.g. direct regression)."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            outputs = self.outputs(x)
            coords, conf = self.codec.decode(outputs)
            sampler = getattr(self.codec, "sample", None)
            samples = sampler(outputs, n_samples, generator) if (n_samples and sampler) else None
        samples = None if samples is None else samples.float().cpu().numpy()
        return coords.float().cpu().numpy(), conf.float().cpu().numpy(), samples

    def outputs(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The network's outputs (float32) on crops ``x``. With ``flip_test``, averaged (by the codec:
        SimCC distributions, regression coordinates) with its outputs on the horizontally mirrored
        crops, mapped back by ``codec.flip_outputs`` and the layout's mirror permutation."""
        with autocast(self.device, self.amp_dtype):
            out = self.model(x)
        out = {k: v.float() for k, v in out.items()}
        if not self.flip_test:
            return out
        with autocast(self.device, self.amp_dtype):
            out_m = self.model(torch.flip(x, dims=(-1,)))
        perm = model_point_layout(self.config).mirror_perm
        back = self.codec.flip_outputs({k: v.float() for k, v in out_m.items()}, perm)
        return self.codec.average_outputs([out, back])


def model_point_layout(config):
    """The layout of the points a checkpoint's model predicts: its layout, or that layout's
    ``stage_layout`` for a refiner (``stage`` "roof" or "femur")."""
    lay = get_layout(config.get("layout", "ihdi12"))
    stage = config.get("stage", "hip")
    return lay if stage == "hip" else stage_layout(lay, stage)


class Ensemble:
    """Several keypoint networks that share layout, crop settings and codec, answering as one:
    ``codec.average_outputs`` of theirs (the mean SimCC distribution per axis; for regression the
    mean coordinates). Stands in for the network inside a ``SideModel``."""

    def __init__(self, models: List[object], codec):
        self.models, self.codec = list(models), codec

    def __call__(self, x):
        return self.codec.average_outputs([{k: v.float() for k, v in m(x).items()} for m in self.models])

    def to(self, *args, **kwargs) -> "Ensemble":
        for m in self.models:
            m.to(*args, **kwargs)
        return self

    def eval(self) -> "Ensemble":
        for m in self.models:
            m.eval()
        return self


def checkpoint_paths(arg) -> List[str]:
    """A ``--kp_*_path`` value (None, one path, or a list of paths) as a list of paths."""
    if arg is None or arg == "":
        return []
    if isinstance(arg, (str, os.PathLike)):
        return [str(arg)]
    return [str(p) for p in arg if p]


REFINER = "refiner"   # load_keypoint_checkpoint's stage for any refiner (roof or femur)


def _flag(side: str, stage: str) -> str:
    return f"--kp_{side}_path" if stage == "hip" else "--refine_path"


def load_keypoint_checkpoint(path: str, side: str, device="cpu", model_name=None, stage: str = "hip"):
    """(model, codec, config) of one keypoint checkpoint: the one place a path becomes a model.
    ``stage``: "hip" for a first-stage model (``--kp_*_path``); "roof", "femur" or ``REFINER``
    (either) for a refiner (``--refine_path``); a checkpoint of another stage is refused."""
    flag = _flag(side, stage)
    if not Path(path).is_file():
        raise UserError(f"{flag}: keypoint checkpoint not found: {path}")
    try:   # an exported .onnx file runs on ONNX Runtime, anything else is a torch checkpoint
        loader = load_onnx_keypoint_model if str(path).lower().endswith(".onnx") else ckpt_io.load_keypoint_model
        model, codec, cfg = loader(path, device=device)
    except ValueError as e:
        raise UserError(str(e)) from None
    if cfg.get("pipeline", "hip_crop") == "full_image":
        raise UserError(f"{flag}: {path} is a full-image model (single-stage); predict with "
                        "predict_full_image_keypoints.py")
    got = cfg.get("stage", "hip")
    if got != stage and not (stage == REFINER and got in REFINE_STAGES):
        if got == "hip":
            raise UserError(f"--refine_path: {path} is a first-stage keypoint model, not a refiner "
                            "(train one with train_hip_crop_keypoints.py --stage roof or --stage femur)")
        if stage == "hip":
            raise UserError(f"{flag}: {path} is a {got} refiner (trained with --stage {got}); give it as --refine_path")
        raise UserError(f"{flag}: {path} is a {got} refiner, not a {stage} refiner")
    if model_name and model_name != cfg.get("model_name"):
        raise UserError(f"--model_name {model_name} does not match the checkpoint {path} "
                        f"(it holds {cfg.get('model_name')}); the checkpoint's own settings are used, "
                        "so --model_name can be left out")
    return model, codec, cfg


def trained_hflip(config) -> float:
    """The probability of a horizontal flip the checkpoint's model was trained with (``--hflip``);
    0 for a checkpoint that predates the setting."""
    value = config.get("hflip", (config.get("train") or {}).get("hflip", 0.0))
    return float(value or 0.0)


def check_flip_test(path, config, flag: str) -> None:
    """Refuse ``--flip_test`` for a model trained on one orientation only (``hflip`` 0): a side
    model sees its own side and the other side mirrored into the same orientation, never a crop
    of the other orientation, so its answer on the mirrored crop is out of distribution."""
    if not trained_hflip(config) > 0:
        raise UserError(f"--flip_test needs a model trained with --hflip > 0 ({flag} {path} was trained on one "
                        "orientation only; its mirrored crops are out of distribution)")


ENSEMBLE_KEYS = ("layout", "side", "head_type", "input_size", "split_ratio")


def load_ensemble(paths: List[str], side: str, device="cpu", model_name=None, stage: str = "hip",
                  flip_test: bool = False, loaded=None):
    """(model, codec, config, path) of one checkpoint, or of an ``Ensemble`` of several: these
    must agree on ``ENSEMBLE_KEYS`` and their crop settings (one crop feeds them all). With
    ``flip_test`` every one of them must have been trained with ``hflip`` > 0 (``check_flip_test``).
    ``loaded``: the paths' (model, codec, config), already read by ``load_keypoint_checkpoint``."""
    if loaded is None:
        loaded = [load_keypoint_checkpoint(p, side, device, model_name, stage) for p in paths]
    if flip_test:
        for p, (_, _, c) in zip(paths, loaded):
            check_flip_test(p, c, _flag(side, stage))
    if len(loaded) == 1:
        return (*loaded[0], paths[0])
    _, codec, cfg = loaded[0]
    for p, (_, _, c) in zip(paths[1:], loaded[1:]):
        diff = [k for k in ENSEMBLE_KEYS if c.get(k) != cfg.get(k)]
        if Preprocess.from_checkpoint(c) != Preprocess.from_checkpoint(cfg):
            diff.append("crop settings (crop_expand, hist_eq, mean, std)")
        if diff:
            raise UserError(f"{_flag(side, stage)}: an ensemble's checkpoints must agree, but {p} differs from "
                            f"{paths[0]} in {', '.join(diff)}")
    return Ensemble([m for m, _, _ in loaded], codec), codec, dict(cfg, ensemble=list(paths)), " + ".join(paths)


def load_side_models(kp_left_path=None, kp_right_path=None, device="cpu", model_name=None, flip_test=False,
                     decode=None):
    """{side: SideModel}. One model serves both sides by mirroring when only one side is given;
    several paths for a side make an ensemble (``load_ensemble``); ``flip_test`` needs models trained
    with ``hflip`` > 0 (``check_flip_test``); ``decode``: a decode mode that
    replaces the checkpoints' own (``models.codecs.with_decode``)."""

    paths = {"left": checkpoint_paths(kp_left_path), "right": checkpoint_paths(kp_right_path)}
    if not any(paths.values()):
        raise UserError("give --kp_left_path and/or --kp_right_path (a keypoint model .pth or .onnx)")
    loaded = {side: load_ensemble(p, side, device, model_name, flip_test=bool(flip_test))
              for side, p in paths.items() if p}
    out = {}
    for side in SIDES:
        src = side if side in loaded else next(iter(loaded))
        model, codec, cfg, p = loaded[src]
        try:
            codec = with_decode(codec, decode)
        except ValueError as e:
            raise UserError(f"--decode: {e}") from None
        model_side = cfg.get("side", "left")
        out[side] = SideModel(model, codec, cfg, mirrored=(side != model_side), path=p,
                              preprocess=Preprocess.from_checkpoint(cfg), flip_test=bool(flip_test))
    lays = {m.config.get("layout") for m in out.values()}
    if len(lays) > 1:
        raise UserError(f"the two keypoint models use different layouts: {sorted(lays)}")
    return out


def load_refiners(refine_path, layout, device="cpu", flip_test=False) -> Dict[str, Dict[str, SideModel]]:
    """{stage: {side: SideModel}} of the refiners (``--refine_path``), in ``REFINE_STAGES`` order
    (the roof first, then the femur); {} without a path. Each checkpoint says its stage; several
    of one stage make an ensemble. One model serves both sides (the other side mirrored). Their
    layout must be the keypoint model's."""
    by_stage: Dict[str, List[tuple]] = {}   # stage -> [(path, (model, codec, config))]
    for p in checkpoint_paths(refine_path):
        got = load_keypoint_checkpoint(p, "left", device, stage=REFINER)
        by_stage.setdefault(got[2]["stage"], []).append((p, got))
    out = {}
    for stage in (st for st in REFINE_STAGES if st in by_stage):
        paths, loaded = zip(*by_stage[stage])
        model, codec, cfg, p = load_ensemble(list(paths), "left", device, stage=stage, flip_test=bool(flip_test),
                                             loaded=list(loaded))
        if cfg.get("layout") != layout.name:
            raise UserError(f"--refine_path: {p} refines layout {cfg.get('layout')}, the keypoint model's is "
                            f"{layout.name}")
        model_side = cfg.get("side", "left")
        out[stage] = {s: SideModel(model, codec, cfg, mirrored=(s != model_side), path=p, flip_test=bool(flip_test))
                      for s in SIDES}
    return out


# ---------------------------------------------------------------------- columns
def output_columns(layout, with_gt: bool) -> List[str]:
    """predictions.csv's columns, in order (``utils.evaluation.schema.row_columns``)."""
    return schema.row_columns(layout, with_gt)


# ---------------------------------------------------------------------- stages
@dataclass
class ImageItem:
    """One image on its way through the stages."""
    rec: HipRecord
    image: Optional[np.ndarray] = None
    info: dict = field(default_factory=dict)
    boxes: Dict[str, Optional[tuple]] = field(default_factory=dict)   # side -> (box, det conf or None) | None
    crops: Dict[str, tuple] = field(default_factory=dict)             # side -> (model input, crop matrix M)
    points: Dict[str, tuple] = field(default_factory=dict)            # side -> (side kps (P, 2) image px, conf (P,))
    samples: Dict[str, np.ndarray] = field(default_factory=dict)      # side -> (S, P, 2) sampled kps, image px
    refine_shift: Dict[str, float] = field(default_factory=dict)     # side -> the refiner's move / roof length


def read_stage(records, problems: ProblemLog) -> List[ImageItem]:
    """Read each record's image; an unreadable one is listed in ``problems`` and left out."""
    items = []
    for rec in records:
        try:
            img, info = read_record_image(rec)
        except ItemError as e:
            problems.add(rec.image_path, str(e))
            continue
        items.append(ImageItem(rec, img, info))
    return items


def detect_stage(items: List[ImageItem], detector, use_gt_box: bool, problems: ProblemLog, batch_size: int):
    """Each item's box per side: YOLO's best box and confidence, or the ground-truth box."""
    dets = detector.predict([it.image for it in items], batch_size=batch_size) if detector else [None] * len(items)
    for it, det in zip(items, dets):
        try:
            if use_gt_box:
                if it.rec.boxes is None:
                    raise ItemError(f"{it.rec.stem}: --use_gt_box needs detections/{it.rec.stem}.json")
                it.boxes = {s: (it.rec.boxes[s], None) for s in SIDES}   # no detector confidence: det_conf_* NaN
            else:
                it.boxes = {s: ((det[s].box, float(det[s].conf)) if det.get(s) is not None else None) for s in SIDES}
        except ItemError as e:
            problems.add(it.rec.image_path, str(e))
            it.boxes = {s: None for s in SIDES}


def crop_stage(items: List[ImageItem], side_models: Dict[str, SideModel]) -> None:
    """The model input and crop matrix of every detected side."""
    for it in items:
        it.crops = {s: side_models[s].crop(it.image, b[0]) for s, b in it.boxes.items() if b is not None}


def infer_stage(items: List[ImageItem], side_models: Dict[str, SideModel], layout, n_samples: int = 0,
                sample_scale: float = 1.0, generator=None) -> None:
    """Run each distinct model once on all the crops it serves; map the points back to the image.

    With ``n_samples``, a backend that has ``predict_with_samples`` also gives sampled
    keypoint sets, spread around the decoded point by ``sample_scale`` and mapped to the
    image like the point (``ImageItem.samples``, for the AI interval)."""
    by_model: Dict[int, List[Tuple[ImageItem, str]]] = {}
    for it in items:
        for s in it.crops:
            by_model.setdefault(id(side_models[s]), []).append((it, s))
    for jobs in by_model.values():
        sm = side_models[jobs[0][1]]
        crops = np.stack([it.crops[s][0] for it, s in jobs])
        samples = None
        if n_samples and hasattr(sm, "predict_with_samples"):
            coords, conf, samples = sm.predict_with_samples(crops, n_samples, generator)
        else:
            coords, conf = sm.predict(crops)
        for i, ((it, s), xy, c) in enumerate(zip(jobs, coords, conf)):
            pts = crop_points_to_side(xy, it.crops[s][1], sm.mirrored, layout)
            it.points[s] = (pts, c[list(layout.mirror_perm)] if sm.mirrored else c)
            if samples is not None:
                spread = xy[None] + float(sample_scale) * (samples[i] - xy[None])    # (S, K, 2) crop px
                it.samples[s] = crop_points_to_side(spread, it.crops[s][1], sm.mirrored, layout)


def refine_stage(items: List[ImageItem], refiners: Dict[str, SideModel], layout, n_samples: int = 0,
                 sample_scale: float = 1.0, generator=None, stage: str = "roof") -> None:
    """A refiner's second look (``stage`` "roof" or "femur"). For each side the first stage
    placed, the refiner's crop is cut around the side's current points of that stage
    (``utils.cropping.roof_box`` plus the refiner's margin, the hip crop's square maths, mirrored
    for the other side's model), ``infer_stage`` runs the refiner on those crops, and its points,
    confidences and AI-interval samples replace those points (the roof: lateral edge, mid roof
    where the layout has one, triradiate point; the femur: the metaphysis points, or head centre
    and H-point); the other points stay. ``refine_shift`` keeps, per side, the largest move of a
    refined point over the side's roof length before the move (the largest over the stages run)."""
    sub_layout = stage_layout(layout, stage)
    edge, tri = layout.lateral_edge, layout.triradiate
    second = [ImageItem(it.rec, it.image, it.info) for it in items]
    for it, sub in zip(items, second):
        for s, (pts, _) in it.points.items():
            box = roof_box(pts[list(stage_positions(layout, s, stage))])
            if np.isfinite(box).all() and max(box[2] - box[0], box[3] - box[1]) > 0:
                sub.crops[s] = refiners[s].crop(it.image, box)
    infer_stage(second, refiners, sub_layout, n_samples, sample_scale, generator)
    for it, sub in zip(items, second):
        for s, (new_pts, new_conf) in sub.points.items():
            pos = list(stage_positions(layout, s, stage))
            pts, conf = it.points[s]
            pts, conf = np.array(pts, float), np.array(conf, float)
            shift = new_pts - pts[pos]
            moved = np.array(pts)
            moved[pos] = new_pts
            frac = refine_shift_fraction(pts, moved, layout.local(s, edge[s]), layout.local(s, tri[s]))
            it.refine_shift[s] = max(frac, it.refine_shift.get(s, 0.0))
            pts[pos], conf[pos] = new_pts, new_conf
            it.points[s] = (pts, conf)
            if s in it.samples:   # the AI interval: the refiner's samples, else the first stage's moved along
                smp = np.array(it.samples[s], float)
                smp[:, pos] = sub.samples[s][:len(smp)] if s in sub.samples else smp[:, pos] + shift[None]
                it.samples[s] = smp


def write_stage(items: List[ImageItem], out: "PredictionWriter") -> None:
    """One predictions.csv row per item (and its overlay)."""
    for it in items:
        row, kps = build_row(it.rec, it.image, it.info, it.boxes, it.points, out.layout, out.side_models,
                             out.with_gt, samples=it.samples, min_conf=out.min_conf, refine_shift=it.refine_shift)
        out.add(it, row, kps)


class PredictionWriter:
    """predictions.csv.partial, written row by row (renamed to predictions.csv once complete), and overlays."""

    def __init__(self, out: Path, layout, side_models, with_gt: bool, overlays: bool, max_overlays,
                 min_conf: float = DEFAULT_MIN_CONF):
        self.out, self.layout, self.side_models, self.with_gt = out, layout, side_models, with_gt
        self.min_conf = float(min_conf)
        self.overlays, self.max_overlays, self.n_overlays, self.rows = overlays, max_overlays, 0, []
        self.cols = output_columns(layout, with_gt)
        self.partial = out / "predictions.csv.partial"
        self.f = open(self.partial, "w", newline="")
        self.writer = csv.DictWriter(self.f, fieldnames=self.cols, extrasaction="ignore")
        self.writer.writeheader()

    def add(self, it: ImageItem, row: dict, kps) -> None:
        self.writer.writerow(row)
        self.rows.append(row)
        if self.overlays and (self.max_overlays is None or self.n_overlays < self.max_overlays):
            _overlay(self.out / "overlays" / f"{it.rec.stem}.png", it.image, row, kps, it.rec, it.boxes,
                     self.layout, self.with_gt)
            self.n_overlays += 1

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()

    def commit(self) -> None:
        os.replace(self.partial, self.out / "predictions.csv")   # the complete file appears only at the end


# ---------------------------------------------------------------------- the run
_D = PredictConfig       # every keyword default of run_prediction is PredictConfig's


def run_prediction(data, output_dir, kp_left_path=_D.kp_left_path, kp_right_path=_D.kp_right_path,
                   yolo_weights=_D.yolo_weights, use_gt_box=_D.use_gt_box, device=_D.device,
                   batch_size=_D.batch_size, model_name=_D.model_name, imgsz=_D.imgsz, conf=_D.conf,
                   overlays=_D.overlays, max_overlays=_D.max_overlays, worst_n=_D.worst_n, strict=_D.strict,
                   overwrite=True, progress=True, make_plots=True, min_conf=_D.min_conf, ai_samples=_D.ai_samples,
                   ai_interval_scale=_D.ai_interval_scale, flip_test=_D.flip_test, refine_path=_D.refine_path,
                   decode=_D.decode, hip_sheet=_D.hip_sheet) -> dict:
    """Predict every image of ``data`` and, when it has annotations, evaluate.

    Writes into ``output_dir``: predictions.csv (one row per readable image; rows for
    undetected sides say so), metrics.json/metrics.csv (with ground truth), plots/,
    overlays/, worst_cases/, skipped.json (per-item problems). Returns a summary dict,
    with ``gate``: the plausibility gate's one-line summary. Every hip is gated
    (``min_conf``: the detector confidence it needs); a SimCC model's hips get an AI
    interval from ``ai_samples`` sampled keypoint sets (seeded), spread by ``ai_interval_scale``.
    ``refine_path``: refiners (``load_refiners``: a roof and/or a femur refiner, several of one
    stage an ensemble) whose points replace the first stage's (``refine_stage``); ``flip_test``
    applies to them too.
    ``decode`` (None: each checkpoint's own) changes how the outputs become points.
    ``hip_sheet``: hip_sheet.png, the hips of the first N films (``save_hip_sheet``; with overlays on).
    ``imgsz`` None: the detector's own training size (``detection.YoloDetector``).
    A pipeline manifest's models and settings come in as these keywords
    (``utils.pipelines.manifest.prediction_options``).
    """
    t0 = time.time()
    out = check_output_dir(output_dir, overwrite)
    if int(batch_size) < 1:
        raise UserError(f"--batch_size must be at least 1, got {batch_size}")
    if int(ai_samples) < 0 or not float(ai_interval_scale) > 0 or not 0 <= float(min_conf) <= 1:
        raise UserError(f"--ai_samples must be >= 0, --ai_interval_scale > 0 and --min_conf in [0, 1]; got "
                        f"{ai_samples}, {ai_interval_scale}, {min_conf}")
    if not use_gt_box and not yolo_weights:
        raise UserError("give --yolo_weights (a trained detector .pt or .onnx), or --use_gt_box to crop on ground-truth boxes")
    problems = ProblemLog(strict=strict)
    records = load_dataset(data, require_boxes=use_gt_box, problems=problems)
    dev = select_device(device)
    side_models = load_side_models(kp_left_path, kp_right_path, device=str(dev), model_name=model_name,
                                   flip_test=flip_test, decode=decode)
    layout = get_layout(side_models["left"].config.get("layout", "ihdi12"))
    refiners = load_refiners(refine_path, layout, device=str(dev), flip_test=flip_test)
    models = [*side_models.values(), *(m for by_side in refiners.values() for m in by_side.values())]
    for sm in {id(m): m for m in models}.values():
        sm.to(dev)
    data_layout = dataset_layout(records)
    if data_layout and data_layout != layout.name:
        raise UserError(f"the keypoint model uses layout {layout.name} but {data} is annotated in {data_layout}")
    with_gt = data_layout is not None
    detector = None if use_gt_box else detection.YoloDetector(yolo_weights, device=yolo_device(dev), imgsz=imgsz,
                                                              conf=conf)
    out.mkdir(parents=True, exist_ok=True)
    remove_previous_results(out)
    (out / "overlays").mkdir(exist_ok=True)
    writer = PredictionWriter(out, layout, side_models, with_gt, overlays, max_overlays, min_conf=min_conf)
    generator = torch.Generator().manual_seed(0)      # the AI interval's samples: the same on every run
    try:
        bar = progress_bar(total=len(records), desc="predict", unit="img", enabled=progress,
                           every=every_for(len(records), batch_size))   # a log file: a line per ~10%
        for start in range(0, len(records), batch_size):
            items = read_stage(records[start:start + batch_size], problems)
            detect_stage(items, detector, use_gt_box, problems, batch_size)
            crop_stage(items, side_models)
            infer_stage(items, side_models, layout, int(ai_samples), float(ai_interval_scale), generator)
            for stage, refiner in refiners.items():   # the roof, then the femur
                refine_stage(items, refiner, layout, int(ai_samples), float(ai_interval_scale), generator, stage)
            write_stage(items, writer)
            writer.flush()
            bar.update(len(items))
        bar.close()
    finally:
        writer.close()
    return finish(writer, problems, records, data, dict(use_gt_box=use_gt_box, yolo_weights=yolo_weights,
                                                        make_plots=make_plots, worst_n=worst_n, t0=t0,
                                                        imgsz=getattr(detector, "imgsz", None),
                                                        hip_sheet=hip_sheet if overlays else 0,
                                                        refine_model=" + ".join(
                                                            r["left"].path for r in refiners.values()) or None))


def finish(writer: PredictionWriter, problems: ProblemLog, records, data, opts: dict) -> dict:
    """predictions.csv, skipped.json, and with ground truth metrics and plots; the summary."""
    out, layout, side_models = writer.out, writer.layout, writer.side_models
    if not writer.rows:
        writer.partial.unlink(missing_ok=True)
        problems.write(out / "skipped.json")
        raise UserError(f"no image of {data} could be predicted ({problems.summary_line()}, "
                        f"listed in {out / 'skipped.json'})")
    writer.commit()
    df = pd.DataFrame(writer.rows, columns=writer.cols)
    summary = {"n_images": len(df), "n_skipped": len(problems), "with_ground_truth": writer.with_gt,
               "layout": layout.name, "use_gt_box": bool(opts["use_gt_box"]),
               "undetected": {s: df.loc[~df[schema.column("detected", side=s)].astype(bool), "stem"].tolist()
                              for s in SIDES},
               "kp_models": {s: side_models[s].path for s in SIDES}, "refine_model": opts.get("refine_model"),
               "yolo_weights": None if opts["use_gt_box"] else str(opts["yolo_weights"]),
               "imgsz": opts.get("imgsz")}
    qc = [schema.column("qc", side=s) for s in SIDES]
    summary["gate"] = summarize_gate([c for q in qc for c in df[q].fillna("").astype(str)])
    log.info("%s", summary["gate"])
    problems.write(out / "skipped.json")
    lookup = {r.stem: r.image_path for r in records}
    if opts.get("hip_sheet"):
        try:
            save_hip_sheet(df, lookup, out / HIP_SHEET, n=opts["hip_sheet"], layout=layout.name)
        except Exception as e:  # a picture must never stop a prediction run
            log.warning("hip sheet failed: %s", e)
    metrics = None
    if writer.with_gt:
        metrics = evaluate_predictions(df, layout=layout.name)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_metrics_csv(out / "metrics.csv", metrics)
        if opts["make_plots"]:
            _plots(df, out, layout, lookup, opts["worst_n"])
    summary["seconds"] = round(time.time() - opts["t0"], 2)
    summary["metrics"] = metrics
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


RESULT_FILES = ("predictions.csv", "predictions.csv.partial", "metrics.json", "metrics.csv", "summary.json",
                "skipped.json", HIP_SHEET)
RESULT_IMAGE_DIRS = ("overlays", "worst_cases", "plots")


def remove_previous_results(out: Path) -> None:
    """Delete an earlier run's result files, so that a run that dies half-way leaves only
    ``predictions.csv.partial``, never a complete-looking but stale ``predictions.csv``."""
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)
    for sub in RESULT_IMAGE_DIRS:                 # stale overlays would mix with this run's
        for png in (out / sub).glob("*.png"):
            png.unlink()


def side_ai_intervals(samples: Dict[str, np.ndarray], layout) -> Dict[str, tuple]:
    """{side: (lo, hi)} 95% AI interval from each side's sampled keypoints (S, P, 2) image px.

    The two sides' samples are drawn independently, so sample i of the left hip is paired
    with sample i of the right hip (the AI needs both triradiate points). NaN for both
    sides unless both were sampled."""
    if not all(s in samples for s in SIDES):
        return {}
    n = min(len(samples[s]) for s in SIDES)
    sets = np.full((n, layout.num_points, 2), np.nan)
    for s in SIDES:
        sets[:, layout.side_slice(s)] = samples[s][:n]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        (ll, lh), (rl, rh) = ai_interval(sets, layout)
    return {"left": (ll, lh), "right": (rl, rh)}


def build_row(rec, img, info, boxes, pred, layout, side_models, with_gt, samples=None,
              min_conf=DEFAULT_MIN_CONF, refine_shift=None):
    """One predictions.csv row as a dict: ``utils.evaluation.metrics.make_row`` (with the
    plausibility gate and the AI interval from ``samples``) plus image facts and confidences."""
    H, W = img.shape[:2]
    spacing = info.get("pixel_spacing_mm") or rec.pixel_spacing_mm
    kps = np.full((layout.num_points, 2), np.nan)
    for s, (pts, _) in pred.items():
        kps[layout.side_slice(s)] = pts
    crop_sides = {}
    for s in SIDES:
        if boxes.get(s) is not None:
            sq = square_box(boxes[s][0], side_models[s].preprocess.crop_expand)
            crop_sides[s] = float(sq[2] - sq[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        row = make_row(
            rec.stem, kps, layout,
            gt_kps=rec.keypoints if with_gt else None,
            pred_boxes={s: (b[0] if b is not None else None) for s, b in boxes.items()},
            gt_boxes=rec.boxes if (with_gt and rec.boxes) else None,
            det_conf={s: b[1] for s, b in boxes.items() if b is not None},
            pixel_spacing_mm=spacing, crop_sides=crop_sides, image_width=W, min_conf=min_conf,
            ai_interval=side_ai_intervals(samples or {}, layout), refine_shift=refine_shift)
    missing = [s for s in SIDES if boxes.get(s) is None]
    row.image, row.width, row.height = str(rec.image_path), W, H
    row.status = "ok" if not missing else "not detected: " + ",".join(missing)
    for s, (_, conf) in pred.items():
        row.hips[s].conf = {j: round(float(c), 4) for j, c in zip(layout.side_indices[s], conf)}
    if with_gt and spacing:
        for hip in row.hips.values():
            hip.mean_err_mm = hip.mean_err_px * spacing
        row.mean_err_mm = row.mean_err_px * spacing
    return row.as_dict(), kps


def _overlay(path, img, row, kps, rec, boxes, layout, with_gt):
    gt = rec.keypoints if with_gt else None
    det_boxes = {s: (b[0], b[1]) for s, b in boxes.items() if b is not None}
    title = rec.stem
    if with_gt and np.isfinite(row.get("mean_err_px", np.nan)):
        title += f"  mean err {row['mean_err_px']:.1f} px"
    try:
        save_overlay(path, img, kps, layout.name, gt_kps=gt, boxes=det_boxes, title=title, **row_annotations(row))
    except Exception as e:  # an overlay must never stop a prediction run
        log.warning("overlay for %s failed: %s", rec.stem, e)


def _plots(df, out, layout, lookup, worst_n):
    pdir = out / "plots"
    pdir.mkdir(exist_ok=True)
    try:
        plots.plot_all(df, pdir, layout=layout.name)
    except Exception as e:
        log.warning("plots failed: %s", e)
    if worst_n and "mean_err_px" in df:
        # worst first; images with an undetected side (NaN error) are listed after them
        try:
            save_worst_cases(df, lookup, out / "worst_cases", n=worst_n, key="mean_err_px",
                                   layout=layout.name)
        except Exception as e:
            log.warning("worst-case overlays failed: %s", e)


def print_summary(summary: dict, output_dir) -> None:
    """A short human-readable report of a prediction run."""
    print(f"\n{summary['n_images']} image(s) predicted in {summary['seconds']} s -> {output_dir}")
    for s in SIDES:
        miss = summary["undetected"][s]
        if miss:
            print(f"  {s} hip not detected in {len(miss)} image(s): {', '.join(miss[:10])}"
                  + (" ..." if len(miss) > 10 else ""))
    if summary.get("imgsz"):
        print(f"  detector input size {summary['imgsz']} px")
    if summary.get("gate"):
        print(f"  {summary['gate']}")
    if summary["n_skipped"]:
        print(f"  {summary['n_skipped']} item(s) skipped, listed in {Path(output_dir) / 'skipped.json'}")
    m = summary.get("metrics")
    if m:
        print(headline_table(m))
