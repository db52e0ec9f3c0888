"""Two-stage prediction: YOLO boxes (or ground-truth boxes) -> square crops -> keypoint model
-> keypoints in image pixels -> AI and IHDI per hip -> CSV, metrics, plots, overlays.

``run_prediction(...)`` is the one function behind predict_hip_crop_keypoints.py and, per
fold, kfold_predict_hip_crop_keypoints.py.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

from datasets.crops import preprocess_crop
from datasets.formats import HipRecord, dataset_layout, load_dataset, read_record_image
from datasets.layouts import SIDES, get_layout
from utils.cropping import crop_points_to_side, side_crop_matrix, square_box, warp
from utils.devices import select_device
from utils.errors import ItemError, ProblemLog, UserError

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


def load_side_models(kp_left_path=None, kp_right_path=None, device="cpu", model_name=None):
    """{side: SideModel}. One model serves both sides by mirroring when only one path is given."""
    from models.checkpoint import load_keypoint_model
    from models.onnx_runtime import load_onnx_keypoint_model   # .onnx files from export_onnx.py

    paths = {"left": kp_left_path, "right": kp_right_path}
    if not any(paths.values()):
        raise UserError("give --kp_left_path and/or --kp_right_path (a keypoint checkpoint .pth)")
    loaded = {}
    for side, p in paths.items():
        if not p:
            continue
        if not Path(p).is_file():
            raise UserError(f"--kp_{side}_path: keypoint checkpoint not found: {p}")
        try:
            loader = load_onnx_keypoint_model if str(p).lower().endswith(".onnx") else load_keypoint_model
            model, codec, cfg = loader(p, device=device)
        except ValueError as e:
            raise UserError(str(e)) from None
        if model_name and model_name != cfg.get("model_name"):
            raise UserError(f"--model_name {model_name} does not match the checkpoint {p} "
                            f"(it holds {cfg.get('model_name')}); the checkpoint's own settings are used, "
                            "so --model_name can be left out")
        loaded[side] = (model, codec, cfg, str(p))
    out = {}
    for side in SIDES:
        src = side if side in loaded else next(iter(loaded))
        model, codec, cfg, p = loaded[src]
        model_side = cfg.get("side", "left")
        out[side] = SideModel(model, codec, cfg, mirrored=(side != model_side), path=p)
    lays = {m.config.get("layout") for m in out.values()}
    if len(lays) > 1:
        raise UserError(f"the two keypoint models use different layouts: {sorted(lays)}")
    return out


# ---------------------------------------------------------------------- columns
def output_columns(layout, with_gt: bool) -> List[str]:
    """predictions.csv's columns, in order."""
    from utils.evaluation.metrics import prediction_row
    lay = get_layout(layout)
    nan = np.full((lay.num_points, 2), np.nan)
    cols = list(prediction_row("x", nan, lay, gt_kps=np.zeros_like(nan) if with_gt else None).keys())
    cols += extra_columns(lay)
    if with_gt:
        cols += ["mean_err_mm_left", "mean_err_mm_right", "mean_err_mm"]
    return cols


def extra_columns(layout) -> List[str]:
    """Columns predictions.csv has beyond ``utils.evaluation.metrics.prediction_row``'s schema."""
    lay = get_layout(layout)
    cols = ["image", "width", "height", "status"]
    for s in SIDES:
        cols += [f"conf_{s}_{j}" for j in lay.side_indices[s]]
    return cols


# ---------------------------------------------------------------------- core
class KeypointPredictor:
    """Crops, batches and runs the keypoint model(s); maps predictions back to image pixels."""

    def __init__(self, side_models: Dict[str, SideModel], device):
        import torch
        self.torch = torch
        self.side_models = side_models
        self.device = device
        cfg = side_models["left"].config
        self.layout = get_layout(cfg.get("layout", "ihdi12"))
        for m in {id(sm.model): sm.model for sm in side_models.values()}.values():
            m.to(device).eval()
            if device.type == "cuda":
                m.to(memory_format=torch.channels_last)

    def crop(self, image, box, side):
        sm = self.side_models[side]
        cfg = sm.config
        size = int(cfg["input_size"])
        M = side_crop_matrix(box, size, float(cfg.get("crop_expand", 0.10)), sm.mirrored)
        x = preprocess_crop(warp(image, M, size), hist_eq=bool(cfg.get("hist_eq", True)),
                            mean=cfg.get("mean", (0.485, 0.456, 0.406)), std=cfg.get("std", (0.229, 0.224, 0.225)))
        return x, M

    def run(self, items):
        """items: list of (side, crop_tensor_np, M). Returns [(side_kps (P,2) image px, conf (P,))]."""
        torch = self.torch
        out = [None] * len(items)
        groups = {}
        for idx, (side, _, _) in enumerate(items):
            groups.setdefault(id(self.side_models[side].model), []).append(idx)
        for idxs in groups.values():
            sm = self.side_models[items[idxs[0]][0]]
            x = torch.from_numpy(np.stack([items[i][1] for i in idxs])).to(self.device, non_blocking=True)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                if self.device.type == "cuda":
                    with torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16):
                        outputs = sm.model(x)
                    outputs = {k: v.float() for k, v in outputs.items()}
                else:
                    outputs = sm.model(x)
                coords, conf = sm.codec.decode(outputs)
            coords = coords.float().cpu().numpy()
            conf = conf.float().cpu().numpy()
            for j, i in enumerate(idxs):
                side, _, M = items[i]
                pts = crop_points_to_side(coords[j], M, self.side_models[side].mirrored, self.layout)
                c = conf[j][list(self.layout.mirror_perm)] if self.side_models[side].mirrored else conf[j]
                out[i] = (pts, c)
        return out


def _gt_boxes_from_record(rec: HipRecord, problems: ProblemLog):
    if rec.boxes is None:
        raise ItemError(f"{rec.stem}: --use_gt_box needs detections/{rec.stem}.json")
    return {s: (rec.boxes[s], None) for s in SIDES}   # no detector confidence: det_conf_* is NaN


def run_prediction(data, output_dir, kp_left_path=None, kp_right_path=None, yolo_weights=None,
                   use_gt_box=False, device="auto", batch_size=16, model_name=None, imgsz=640, conf=0.25,
                   overlays=True, max_overlays=None, worst_n=10, strict=False, overwrite=True,
                   progress=True, make_plots=True) -> dict:
    """Predict every image of ``data`` and, when it has annotations, evaluate.

    Writes into ``output_dir``: predictions.csv (one row per readable image; rows for
    undetected sides say so), metrics.json/metrics.csv (with ground truth), plots/,
    overlays/, worst_cases/, skipped.json (per-item problems). Returns a summary dict.
    """
    from tqdm import tqdm

    t0 = time.time()
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} exists and is not empty (use --overwrite)")
    if int(batch_size) < 1:
        raise UserError(f"--batch_size must be at least 1, got {batch_size}")
    if not use_gt_box and not yolo_weights:
        raise UserError("give --yolo_weights (a trained detector .pt), or --use_gt_box to crop on ground-truth boxes")
    problems = ProblemLog(strict=strict)
    records = load_dataset(data, require_boxes=use_gt_box, problems=problems)
    dev = select_device(device)
    side_models = load_side_models(kp_left_path, kp_right_path, device=str(dev), model_name=model_name)
    predictor = KeypointPredictor(side_models, dev)
    layout = predictor.layout
    data_layout = dataset_layout(records)
    if data_layout and data_layout != layout.name:
        raise UserError(f"the keypoint model uses layout {layout.name} but {data} is annotated in {data_layout}")
    with_gt = data_layout is not None
    detector = None
    if not use_gt_box:
        from utils.pipelines.detection import YoloDetector
        detector = YoloDetector(yolo_weights, device=str(dev) if dev.type == "cpu" else str(dev.index or 0),
                                imgsz=imgsz, conf=conf)

    out.mkdir(parents=True, exist_ok=True)
    remove_previous_results(out)
    (out / "overlays").mkdir(exist_ok=True)
    cols = output_columns(layout, with_gt)
    csv_tmp = out / "predictions.csv.partial"
    rows = []
    n_overlays = 0
    f = open(csv_tmp, "w", newline="")
    writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    try:
        bar = tqdm(total=len(records), desc="predict", unit="img", disable=not progress)
        for start in range(0, len(records), batch_size):
            chunk = records[start:start + batch_size]
            imgs, infos, ok = [], [], []
            for rec in chunk:
                try:
                    img, info = read_record_image(rec)
                except ItemError as e:
                    problems.add(rec.image_path, str(e))
                    continue
                imgs.append(img)
                infos.append(info)
                ok.append(rec)
            dets = detector.predict(imgs, batch_size=batch_size) if detector else [None] * len(ok)
            items, where = [], []
            per_image = []
            for k, (rec, img, det) in enumerate(zip(ok, imgs, dets)):
                boxes = {}
                try:
                    if use_gt_box:
                        boxes = _gt_boxes_from_record(rec, problems)
                    else:
                        boxes = {s: ((det[s].box, float(det[s].conf)) if det.get(s) is not None else None)
                                 for s in SIDES}
                except ItemError as e:
                    problems.add(rec.image_path, str(e))
                    boxes = {s: None for s in SIDES}
                per_image.append(boxes)
                for s in SIDES:
                    if boxes[s] is None:
                        continue
                    x, M = predictor.crop(img, boxes[s][0], s)
                    items.append((s, x, M))
                    where.append((k, s))
            results = predictor.run(items) if items else []
            preds = [{} for _ in ok]
            for (k, s), r in zip(where, results):
                preds[k][s] = r
            for rec, img, info, boxes, pred in zip(ok, imgs, infos, per_image, preds):
                row, kps = _row(rec, img, info, boxes, pred, layout, side_models, with_gt)
                writer.writerow(row)
                rows.append(row)
                if overlays and (max_overlays is None or n_overlays < max_overlays):
                    _overlay(out / "overlays" / f"{rec.stem}.png", img, row, kps, rec, boxes, layout, with_gt)
                    n_overlays += 1
                bar.update(1)
            f.flush()
        bar.close()
    finally:
        f.close()
    if not rows:
        csv_tmp.unlink(missing_ok=True)
        problems.write(out / "skipped.json")
        raise UserError(f"no image of {data} could be predicted ({problems.summary_line()}, "
                        f"listed in {out / 'skipped.json'})")
    os.replace(csv_tmp, out / "predictions.csv")       # complete file appears only at the end

    import pandas as pd
    df = pd.DataFrame(rows, columns=cols)
    summary = {"n_images": len(df), "n_skipped": len(problems), "with_ground_truth": with_gt,
               "layout": layout.name, "use_gt_box": bool(use_gt_box),
               "undetected": {s: df.loc[~df[f"detected_{s}"].astype(bool), "stem"].tolist() for s in SIDES},
               "kp_models": {s: side_models[s].path for s in SIDES},
               "yolo_weights": None if use_gt_box else str(yolo_weights)}
    problems.write(out / "skipped.json")
    metrics = None
    if with_gt:
        from utils.evaluation.metrics import evaluate, write_metrics_csv
        metrics = evaluate(df, layout=layout.name)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_metrics_csv(out / "metrics.csv", metrics)
        if make_plots:
            _plots(df, out, layout, records, worst_n)
    summary["seconds"] = round(time.time() - t0, 2)
    summary["metrics"] = metrics
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


RESULT_FILES = ("predictions.csv", "predictions.csv.partial", "metrics.json", "metrics.csv", "summary.json",
                "skipped.json")
RESULT_IMAGE_DIRS = ("overlays", "worst_cases", "plots")


def remove_previous_results(out: Path) -> None:
    """Delete an earlier run's result files, so that a run that dies half-way leaves only
    ``predictions.csv.partial``, never a complete-looking but stale ``predictions.csv``."""
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)
    for sub in RESULT_IMAGE_DIRS:                 # stale overlays would mix with this run's
        for png in (out / sub).glob("*.png"):
            png.unlink()


def _row(rec, img, info, boxes, pred, layout, side_models, with_gt):
    """One predictions.csv row: ``utils.evaluation.metrics.prediction_row`` plus image facts and confidences."""
    from utils.evaluation.metrics import prediction_row
    H, W = img.shape[:2]
    spacing = info.get("pixel_spacing_mm") or rec.pixel_spacing_mm
    kps = np.full((layout.num_points, 2), np.nan)
    extra = {"image": str(rec.image_path), "width": W, "height": H}
    for s in SIDES:
        if s in pred:
            pts, conf = pred[s]
            kps[layout.side_slice(s)] = pts
            for j, c in zip(layout.side_indices[s], conf):
                extra[f"conf_{s}_{j}"] = round(float(c), 4)
    crop_sides = {}
    for s in SIDES:
        if boxes.get(s) is not None:
            sq = square_box(boxes[s][0], float(side_models[s].config.get("crop_expand", 0.10)))
            crop_sides[s] = float(sq[2] - sq[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        row = prediction_row(
            rec.stem, kps, layout,
            gt_kps=rec.keypoints if with_gt else None,
            pred_boxes={s: (b[0] if b is not None else None) for s, b in boxes.items()},
            gt_boxes=rec.boxes if (with_gt and rec.boxes) else None,
            det_conf={s: b[1] for s, b in boxes.items() if b is not None},
            pixel_spacing_mm=spacing, crop_sides=crop_sides)
    missing = [s for s in SIDES if boxes.get(s) is None]
    extra["status"] = "ok" if not missing else "not detected: " + ",".join(missing)
    row.update(extra)
    if with_gt and spacing:
        for s in SIDES:
            row[f"mean_err_mm_{s}"] = row[f"mean_err_px_{s}"] * spacing
        row["mean_err_mm"] = row["mean_err_px"] * spacing
    return row, kps


def _overlay(path, img, row, kps, rec, boxes, layout, with_gt):
    from utils.evaluation.plots import save_overlay
    gt = rec.keypoints if with_gt else None
    det_boxes = {s: (b[0], b[1]) for s, b in boxes.items() if b is not None}
    title = rec.stem
    if with_gt and np.isfinite(row.get("mean_err_px", np.nan)):
        title += f"  mean err {row['mean_err_px']:.1f} px"
    try:
        save_overlay(path, img, kps, layout.name, gt_kps=gt, boxes=det_boxes, title=title)
    except Exception as e:  # an overlay must never stop a prediction run
        log.warning("overlay for %s failed: %s", rec.stem, e)


def _plots(df, out, layout, records, worst_n):
    from utils.evaluation import plots
    pdir = out / "plots"
    pdir.mkdir(exist_ok=True)
    try:
        plots.plot_all(df, pdir, layout=layout.name)
    except Exception as e:
        log.warning("plots failed: %s", e)
    if worst_n and "mean_err_px" in df:
        # worst first; images with an undetected side (NaN error) are listed after them
        lookup = {r.stem: r.image_path for r in records}
        try:
            plots.save_worst_cases(df, lookup, out / "worst_cases", n=worst_n, key="mean_err_px",
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
    if summary["n_skipped"]:
        print(f"  {summary['n_skipped']} item(s) skipped, listed in {Path(output_dir) / 'skipped.json'}")
    m = summary.get("metrics")
    if m:
        from utils.evaluation.tables import headline_table
        print(headline_table(m))
