"""Dataset folders of phantoms (images, annotations, detections, YOLO labels, metadata) and
contact sheets."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from datasets.formats import write_annotation, write_classes, write_detection, write_metadata, write_yolo_label
from datasets.layouts import SIDES, get_layout
from datasets.synthetic.anatomy import DEFAULT_GRADE_MIX, PelvisAnatomy, jitter_anatomy, parse_grade_mix, sample_anatomy
from datasets.synthetic.render import render_film
from datasets.synthetic.stats import load_stats
from utils.errors import UserError
from utils.hip_geometry import acetabular_index, ce_angle, ihdi_grade, tonnis_grade
from utils.progress import every_for, progress_bar
from datasets.formats import list_images, load_dataset
from datasets.image_io import read_image

log = logging.getLogger("hipkp")

METADATA_COLUMNS = ("stem", "patient_id", "pixel_spacing_mm", "ai_left", "ai_right",
                    "ihdi_left", "ihdi_right", "width", "height")
_SUBDIRS = ("images", "annotations", "detections", "yolo_labels")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"output folder {out} is not empty (use --overwrite to replace the dataset in it)")
        for sub in _SUBDIRS:
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)
        for f in ("metadata.csv", "synthetic_config.json"):
            if (out / f).is_file():
                (out / f).unlink()
    out.mkdir(parents=True, exist_ok=True)
    for sub in _SUBDIRS:
        (out / sub).mkdir(exist_ok=True)


def generate_dataset(out, n: int, seed: int = 0, size: int = 512, layout: str = "ihdi12",
                     grade_mix=DEFAULT_GRADE_MIX, overwrite: bool = False, patients: Optional[int] = None,
                     progress: bool = True, stats_path=None) -> Path:
    """Write ``n`` phantoms as a dataset folder (images, annotations, detections, yolo_labels, metadata) and return its path.

    Image ``i`` depends only on ``(seed, i)`` (and its patient), so the same seed gives
    byte-identical files and a larger ``n`` extends a smaller set. ``patients=N`` (N <= n)
    spreads the films over N patients: films of one patient share the anatomy (same IHDI
    grades, AI within a degree or two) and differ in pose and exposure.
    """

    out = Path(out)
    n, size = int(n), int(size)
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if size < 64:
        raise UserError(f"--size must be at least 64 pixels, got {size}")
    try:
        lay = get_layout(layout)
    except ValueError as e:
        raise UserError(str(e)) from None
    mix = parse_grade_mix(grade_mix)
    if patients is not None and not 1 <= int(patients) <= n:
        raise UserError(f"--patients must be between 1 and --n ({n}), got {patients}")
    st = load_stats(stats_path)
    _prepare_out(out, overwrite)

    if patients is None:
        patient_of = np.arange(n)
    else:
        k = int(patients)
        prng = np.random.default_rng([seed, 2, k])
        patient_of = np.concatenate([np.arange(k), prng.integers(0, k, n - k)])
        prng.shuffle(patient_of)
    anatomies: Dict[int, PelvisAnatomy] = {}
    film_count: Dict[int, int] = {}
    rows = []
    write_classes(out / "yolo_labels")
    for i in progress_bar(range(n), total=n, desc="phantoms", unit="img", enabled=progress, every=every_for(n)):
        pid = int(patient_of[i])
        if pid not in anatomies:
            anatomies[pid] = sample_anatomy(np.random.default_rng([seed, 0, pid]), mix, layout=lay, stats=st)
        anat = anatomies[pid]
        rng = np.random.default_rng([seed, 1, i])
        if film_count.get(pid, 0) > 0:
            anat = jitter_anatomy(rng, anat)
        film_count[pid] = film_count.get(pid, 0) + 1
        film = render_film(rng, size, lay, anatomy=anat, stats=st)
        stem = f"synth_{i:05d}"
        H, W = film.image.shape
        if not cv2.imwrite(str(out / "images" / f"{stem}.png"), film.image):
            raise UserError(f"cannot write {out / 'images' / (stem + '.png')}")
        write_annotation(out / "annotations" / f"{stem}.csv", film.keypoints)
        write_detection(out / "detections" / f"{stem}.json", film.boxes, f"{stem}.png")
        write_yolo_label(out / "yolo_labels" / f"{stem}.txt", film.boxes, W, H)
        # ground truth from the keypoints exactly as written
        ai_l, ai_r = acetabular_index(film.keypoints, lay)
        g_l, g_r = ihdi_grade(film.keypoints, lay)
        row = {"stem": stem, "patient_id": f"P{pid:05d}", "pixel_spacing_mm": round(film.pixel_spacing_mm, 6),
               "ai_left": ai_l, "ai_right": ai_r, "ihdi_left": g_l, "ihdi_right": g_r, "width": W, "height": H}
        if lay.name == "mtddh8":      # a layout with a head centre: the exact CE angle and Tönnis grade too
            row["ce_left"], row["ce_right"] = ce_angle(film.keypoints, lay.name)
            row["tonnis_left"], row["tonnis_right"] = tonnis_grade(film.keypoints, lay.name)
        rows.append(row)
    write_metadata(out, rows)
    (out / "synthetic_config.json").write_text(json.dumps(
        {"generator": "datasets.synthetic", "n": n, "seed": seed, "size": size, "layout": lay.name,
         "grade_mix": list(mix), "patients": patients,
         "stats": str(stats_path) if stats_path else "datasets/phantom_stats.json"}, indent=1) + "\n")
    grades = np.array([[r["ihdi_left"], r["ihdi_right"]] for r in rows]).ravel()
    ais = np.array([[r["ai_left"], r["ai_right"]] for r in rows]).ravel()
    log.info("wrote %d phantoms to %s: IHDI I/II/III/IV hips = %s, AI %.1f-%.1f deg", n, out,
             "/".join(str(int((grades == g).sum())) for g in (1, 2, 3, 4)), ais.min(), ais.max())
    return out


# ============================================================== contact sheet
_SIDE_COLOURS = {"left": (60, 200, 255), "right": (255, 160, 60)}


def draw_annotations(gray: np.ndarray, keypoints=None, boxes=None, layout=None, text: str = "") -> np.ndarray:
    """BGR overlay of keypoints (numbered), H-line and boxes on a gray image."""
    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    t = max(1, int(round(max(gray.shape) / 400)))
    if boxes:
        for s in SIDES:
            if s in boxes and boxes[s] is not None:
                x1, y1, x2, y2 = [int(round(v)) for v in boxes[s]]
                cv2.rectangle(img, (x1, y1), (x2, y2), _SIDE_COLOURS[s], t)
    if keypoints is not None:
        lay = get_layout(layout) if layout else get_layout({12: "ihdi12", 8: "mtddh8"}[len(keypoints)])
        tl, tr = keypoints[lay.triradiate["left"]], keypoints[lay.triradiate["right"]]
        cv2.line(img, tuple(int(round(v)) for v in tl), tuple(int(round(v)) for v in tr), (0, 255, 0), 1,
                 cv2.LINE_AA)
        for s in SIDES:
            for idx in lay.side_indices[s]:
                x, y = keypoints[idx]
                cv2.circle(img, (int(round(x)), int(round(y))), 2 * t, _SIDE_COLOURS[s], -1, cv2.LINE_AA)
                cv2.putText(img, str(idx), (int(x) + 3 * t, int(y) - 2 * t), cv2.FONT_HERSHEY_SIMPLEX,
                            0.3 * t, (0, 255, 255), 1, cv2.LINE_AA)
    if text:
        cv2.putText(img, text, (4, 14 * t), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * t, (0, 255, 0), t, cv2.LINE_AA)
    return img


def _tile(images: List[np.ndarray], cell: int, cols: int) -> np.ndarray:
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * cell, cols * cell, 3), 32, np.uint8)
    for k, im in enumerate(images):
        h, w = im.shape[:2]
        f = cell / max(h, w)
        im = cv2.resize(im, (max(1, int(round(w * f))), max(1, int(round(h * f)))), interpolation=cv2.INTER_AREA)
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
        r, c = divmod(k, cols)
        y0, x0 = r * cell + (cell - im.shape[0]) // 2, c * cell + (cell - im.shape[1]) // 2
        sheet[y0:y0 + im.shape[0], x0:x0 + im.shape[1]] = im
    return sheet


def contact_sheet(dataset_dir, out_png, n: int = 16, draw_keypoints: bool = True, cell: int = 320,
                  cols: int = 4, real_dir=None, n_real: Optional[int] = None) -> Path:
    """Tile the first ``n`` images of a dataset folder (keypoints, H-line, boxes and the
    metadata's AI/IHDI drawn when ``draw_keypoints``). ``real_dir`` appends rows of real
    films (the first ``n_real`` images in that folder, default one row) for comparison."""

    records = load_dataset(dataset_dir)[:max(1, int(n))]
    tiles = []
    for rec in records:
        gray, _ = read_image(rec.image_path)
        if draw_keypoints:
            m = rec.meta
            text = ""
            if m.get("ai_left"):
                gl, gr = int(m["ihdi_left"]), int(m["ihdi_right"])
                text = f"L {float(m['ai_left']):.0f}d {'I II III IV'.split()[gl - 1]}  " \
                       f"R {float(m['ai_right']):.0f}d {'I II III IV'.split()[gr - 1]}"
            tiles.append(draw_annotations(gray, rec.keypoints, rec.boxes, text=text))
        else:
            tiles.append(gray)
    if real_dir is not None:
        real = [read_image(p)[0] for p in list_images(real_dir)[:n_real or cols]]
        while len(tiles) % cols:
            tiles.append(np.zeros((8, 8), np.uint8))
        tiles += real
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), _tile(tiles, cell, cols))
    return out_png
