"""Convert MTDDH YOLO-pose labels (radoss-org/open-hip-dysplasia) to the dataset folder format.

    python -m datasets.mtddh --src mtddh_xray_2d/data --out dataset/mtddh [--images DIR]
                             [--femur_order head_first|hpoint_first] [--overwrite] [--strict]

Input (docs/CONVENTIONS.md, "Keypoint layouts", "mtddh8"): one ``<stem>.txt`` per image with 4 lines
``class cx cy w h kx1 ky1 v1 kx2 ky2 v2``, normalised by the image's width and height:
per side a ``hip_pelvis`` object (class 0; keypoints lateral acetabular edge and
triradiate point, in either order) and a ``hip_femour`` object (class 1; keypoint 1
above keypoint 2). The image ``<stem>.<ext>`` lies next to the label or in ``--images``.

Output (section 5, layout ``mtddh8``): per side ``[lateral acetabular edge, triradiate
point, femoral head centre, H-point]``, image-left hip first.

- Sides come from position, not line order: the pelvis object with the smaller x is
  the image-left hip; each femur object goes with the pelvis object nearest in x.
- The lateral edge is the pelvis keypoint farther from the midline (the mean x of the
  four pelvis keypoints).
- ``--femur_order`` is the one switch for the femur object: ``head_first`` (default)
  reads keypoint 1 as the femoral head centre and keypoint 2 as the H-point;
  ``hpoint_first`` the reverse.
- Pixel coordinates follow docs/CONVENTIONS.md, "Coordinates and sides" (pixel centres on integers):
  ``x = kx * W - 0.5``, ``y = ky * H - 0.5``, with W, H read from the image header.
- Side boxes are made from the side's four keypoints (the file's own boxes are a fixed
  0.1 wide and are ignored), widened by fractions of the inter-triradiate distance so
  that the box holds the femoral metaphysis: ``BOX_MARGIN``.
- metadata.csv: stem, patient_id (= stem; MTDDH gives no patient ids), pixel_spacing_mm
  (empty), ai_left, ai_right, ihdi_left, ihdi_right (``utils.hip_geometry``).

Files that fail a check (line count, values per line, classes, visibility 0,
coordinates outside [0, 1], a side missing, image missing or unreadable, degenerate
geometry) are skipped with their reason in ``<out>/conversion_log.csv`` (file, status,
reason); an item's files are written only after all its checks pass. Converted files
may carry a note there too (sides listed right-left, femur keypoint 1 below keypoint 2,
femur boxes not square in pixels, which hints at a wrong image size).
"""
from __future__ import annotations

import argparse
import csv
import glob
import logging
import shutil
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from datasets.formats import (IMAGE_EXTS, round_keypoints, write_annotation, write_classes, write_detection,
                              write_metadata, write_yolo_label)
from utils.errors import UserError, cli
from utils.fileio import check_dir_args, prepare_output_dir
from datasets.image_io import read_image
from datasets.layouts import get_layout
from utils.errors import ItemError
from utils.hip_geometry import acetabular_index, ihdi_grade

log = logging.getLogger("hipkp")

LAYOUT = "mtddh8"
FEMUR_ORDERS = ("head_first", "hpoint_first")
PELVIS, FEMUR = 0, 1
CLASS_NAMES = {PELVIS: "hip_pelvis", FEMUR: "hip_femour"}
# side box margins as fractions of the inter-triradiate distance: the union of the side's
# four points reaches the H-point (top of the metaphysis); the metaphysis is about a quarter
# of that distance wide and the box goes on below it to take in the femoral neck.
BOX_MARGIN = {"lateral": 0.15, "medial": 0.10, "top": 0.10, "bottom": 0.25}
OUTPUTS = ("images", "annotations", "detections", "yolo_labels", "metadata.csv", "conversion_log.csv")


class LabelProblem(Exception):
    """One label file cannot be converted; the message is its reason in conversion_log.csv."""


# ---------------------------------------------------------------- parsing
def parse_label_text(text: str) -> np.ndarray:
    """The 4 objects of a label file as a (4, 11) array; ``LabelProblem`` when malformed."""
    lines = [l for l in text.splitlines() if l.strip()]
    if len(lines) != 4:
        raise LabelProblem(f"wrong line count: {len(lines)} objects, expected 4 (pelvis and femur per side)")
    rows = []
    for i, line in enumerate(lines, 1):
        parts = line.split()
        if len(parts) != 11:
            raise LabelProblem(f"bad line: line {i} has {len(parts)} values, expected 11 "
                               "(class cx cy w h x1 y1 v1 x2 y2 v2)")
        try:
            rows.append([float(v) for v in parts])
        except ValueError:
            raise LabelProblem(f"bad line: line {i} has a non-numeric value") from None
    a = np.array(rows)
    if not np.all(np.isfinite(a)):
        raise LabelProblem("bad line: non-finite value")
    classes = a[:, 0]
    if not np.all(np.isin(classes, (PELVIS, FEMUR))):
        raise LabelProblem(f"unknown class: {sorted(set(classes.tolist()) - {0.0, 1.0})}, expected 0 (hip_pelvis) "
                           f"or 1 (hip_femour)")
    n_p, n_f = int((classes == PELVIS).sum()), int((classes == FEMUR).sum())
    if (n_p, n_f) != (2, 2):
        raise LabelProblem(f"side missing: {n_p} hip_pelvis and {n_f} hip_femour objects, expected 2 of each")
    vis = a[:, [7, 10]]
    if np.any(vis == 0):
        i = int(np.where((vis == 0).any(1))[0][0]) + 1
        raise LabelProblem(f"visibility 0: line {i} has a keypoint marked not labelled")
    coords = a[:, [1, 2, 5, 6, 8, 9]]
    bad = (coords < 0) | (coords > 1)
    if np.any(bad):
        i = int(np.where(bad.any(1))[0][0])
        raise LabelProblem(f"coordinate outside [0, 1]: line {i + 1} has "
                           f"{', '.join(f'{v:.3f}' for v in coords[i][bad[i]])}")
    return a


def objects_to_keypoints(a: np.ndarray, width: int, height: int, femur_order: str = "head_first"):
    """(4, 11) objects -> (8, 2) mtddh8 keypoints in image pixels, plus notes for the log."""
    if femur_order not in FEMUR_ORDERS:
        raise ValueError(f"femur_order must be one of {FEMUR_ORDERS}, got {femur_order!r}")
    notes = []
    scale = np.array([width, height], dtype=float)
    pel = a[a[:, 0] == PELVIS]
    fem = a[a[:, 0] == FEMUR]
    pel_kp = np.stack([pel[:, 5:7], pel[:, 8:10]], axis=1)      # (2 objects, 2 points, xy) normalised
    fem_kp = np.stack([fem[:, 5:7], fem[:, 8:10]], axis=1)
    # sides by position: pelvis objects ordered by x
    order = np.argsort(pel_kp[:, :, 0].mean(1), kind="stable")
    pel_kp, pel_rows = pel_kp[order], np.where(a[:, 0] == PELVIS)[0][order]
    if pel_kp[0, :, 0].max() >= pel_kp[1, :, 0].min():
        raise LabelProblem("side missing: the two hip_pelvis objects overlap in x (both on one hip?)")
    centres = pel_kp[:, :, 0].mean(1)
    side_of_femur = [int(np.argmin(np.abs(centres - f[:, 0].mean()))) for f in fem_kp]
    if sorted(side_of_femur) != [0, 1]:
        where = "image-left" if side_of_femur[0] == 0 else "image-right"
        raise LabelProblem(f"side missing: both hip_femour objects lie by the {where} hip_pelvis object")
    fem_rows = np.where(a[:, 0] == FEMUR)[0]
    fem_kp = fem_kp[np.argsort(side_of_femur)]
    fem_rows = fem_rows[np.argsort(side_of_femur)]
    if pel_rows[0] > pel_rows[1]:
        notes.append("pairs listed right hip first; sides taken from position")
    midline = pel_kp[:, :, 0].mean()
    points = []
    for s in range(2):
        p = pel_kp[s]
        lat = int(np.argmax(np.abs(p[:, 0] - midline)))
        edge, tri = p[lat], p[1 - lat]
        k1, k2 = fem_kp[s]
        if k1[1] > k2[1]:
            notes.append(f"{'left' if s == 0 else 'right'} femur keypoint 1 lies below keypoint 2")
        head, hp = (k1, k2) if femur_order == "head_first" else (k2, k1)
        points += [edge, tri, head, hp]
    kps = np.array(points) * scale - 0.5
    # upstream femur boxes are squares in pixels; a non-square one hints at a wrong image size
    w_px, h_px = a[fem_rows, 3] * width, a[fem_rows, 4] * height
    ratio = w_px / np.maximum(h_px, 1e-9)
    if np.all(np.abs(ratio - 1) > 0.05):
        notes.append(f"femur boxes are {ratio.mean():.2f}:1 (w:h) in pixels, not square: is {width}x{height} "
                     "the labelled image's size?")
    return kps, notes


def side_boxes(kps: np.ndarray, width: int, height: int) -> Dict[str, np.ndarray]:
    """Box per side from its four keypoints plus ``BOX_MARGIN`` (clipped to the image)."""
    lay = get_layout(LAYOUT)
    span = float(np.linalg.norm(kps[lay.triradiate["right"]] - kps[lay.triradiate["left"]]))
    m = {k: v * span for k, v in BOX_MARGIN.items()}
    boxes = {}
    for side in ("left", "right"):
        pts = kps[lay.side_slice(side)]
        x1, y1 = pts.min(0)
        x2, y2 = pts.max(0)
        if side == "left":      # lateral is toward smaller x
            x1, x2 = x1 - m["lateral"], x2 + m["medial"]
        else:
            x1, x2 = x1 - m["medial"], x2 + m["lateral"]
        y1, y2 = y1 - m["top"], y2 + m["bottom"]
        boxes[side] = np.clip([x1, y1, x2, y2], [0, 0, 0, 0], [width - 1, height - 1, width - 1, height - 1])
    return boxes


# ---------------------------------------------------------------- images
def is_label_file(path: Path) -> bool:
    """True for a YOLO label file: its first non-empty line starts with a class number. A licence,
    readme or notes ``.txt`` next to the labels (``LICENSE-open-hip-dysplasia.txt``) is not one and is
    ignored, not reported as a broken label."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    return line.split()[0].isdigit()
    except OSError:
        return True                      # unreadable: let the converter report it
    return True                          # empty: the converter reports it as a broken label


def find_image(stem: str, folders: List[Path]) -> Path:
    for folder in folders:
        hits = sorted(p for p in folder.glob(f"{glob.escape(stem)}.*")
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTS and p.stem == stem)
        if len(hits) > 1:
            raise LabelProblem(f"ambiguous image: {', '.join(p.name for p in hits)}")
        if hits:
            return hits[0]
    raise LabelProblem(f"image missing: no {stem}.(png|jpg|jpeg|dcm|...) in {' or '.join(map(str, folders))}")


def image_size(path: Path) -> Tuple[int, int]:
    """(width, height) from the image header (Pillow), or by decoding (DICOM, odd files)."""
    try:
        from PIL import Image
        with Image.open(path) as im:
            w, h = im.size
        if w > 0 and h > 0:
            return int(w), int(h)
    except Exception:
        pass
    try:
        h, w = read_image(path)[0].shape[:2]
    except ItemError as e:
        raise LabelProblem(f"image unreadable: {e}") from None
    return int(w), int(h)


# ---------------------------------------------------------------- conversion
def _prepare_output(out: Path, src_dirs: List[Path], overwrite: bool) -> None:
    prepare_output_dir(out, overwrite, owned=OUTPUTS, protect=src_dirs, hint="use --overwrite to replace it")
    for sub in ("images", "annotations", "detections", "yolo_labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_classes(out / "yolo_labels")


def _write_item(out: Path, stem: str, image: Path, kps, boxes, width: int, height: int) -> None:
    """All of one item's files, or none of them."""
    written = []
    try:
        dst = out / "images" / f"{stem}{image.suffix.lower()}"
        shutil.copy2(image, dst)
        written.append(dst)
        for path, fn in ((out / "annotations" / f"{stem}.csv", lambda p: write_annotation(p, kps)),
                         (out / "detections" / f"{stem}.json", lambda p: write_detection(p, boxes, dst.name)),
                         (out / "yolo_labels" / f"{stem}.txt", lambda p: write_yolo_label(p, boxes, width, height))):
            fn(path)
            written.append(path)
    except OSError as e:
        for p in written:
            p.unlink(missing_ok=True)
        raise LabelProblem(f"cannot write output: {e}") from None


def convert_mtddh(src, out, images=None, femur_order: str = "head_first", overwrite: bool = False,
                  strict: bool = False) -> Dict:
    """Convert every ``*.txt`` label file in ``src`` (see the module docstring).

    Returns ``{"converted", "skipped", "reasons" {reason: count}, "out", "log"}``; raises
    ``UserError`` for a missing or label-less ``src``, a non-empty ``out`` without
    ``overwrite``, when no file converts (the log is still written), or with ``strict`` at the
    first file that fails a check."""

    src, out = Path(src), Path(out)
    if femur_order not in FEMUR_ORDERS:
        raise UserError(f"--femur_order must be one of {', '.join(FEMUR_ORDERS)}, got {femur_order!r}")
    if not src.is_dir():
        raise UserError(f"label folder not found: {src}")
    img_dirs = [Path(images)] if images else []
    if images and not Path(images).is_dir():
        raise UserError(f"--images folder not found: {images}")
    img_dirs.append(src)
    labels = sorted(p for p in src.glob("*.txt") if p.name != "classes.txt" and is_label_file(p))
    if not labels:
        raise UserError(f"no YOLO label files (*.txt) in {src}")
    _prepare_output(out, [src] + img_dirs, overwrite)

    log_rows, meta_rows = [], []
    for lab in labels:
        stem = lab.stem
        try:
            try:
                a = parse_label_text(lab.read_text())
            except (OSError, UnicodeDecodeError) as e:
                raise LabelProblem(f"unreadable label file: {e}") from None
            image = find_image(stem, img_dirs)
            width, height = image_size(image)
            kps, notes = objects_to_keypoints(a, width, height, femur_order)
            kps = round_keypoints(kps)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ai = acetabular_index(kps, LAYOUT)
                grades = ihdi_grade(kps, LAYOUT)
            if not np.all(np.isfinite(ai)) or 0 in grades:
                raise LabelProblem("degenerate geometry: coincident triradiate points or a zero-length roof line")
            boxes = side_boxes(kps, width, height)
            _write_item(out, stem, image, kps, boxes, width, height)
        except LabelProblem as e:
            if strict:
                raise UserError(f"{lab}: {e} (stopped by --strict; without it this file is skipped "
                                "and listed in conversion_log.csv)") from None
            log_rows.append({"file": lab.name, "status": "skipped", "reason": str(e)})
            log.warning("skipped %s: %s", lab.name, e)
            continue
        log_rows.append({"file": lab.name, "status": "converted", "reason": "; ".join(notes)})
        meta_rows.append({"stem": stem, "patient_id": stem, "pixel_spacing_mm": "",
                          "ai_left": f"{ai[0]:.2f}", "ai_right": f"{ai[1]:.2f}",
                          "ihdi_left": int(grades[0]), "ihdi_right": int(grades[1])})
    with open(out / "conversion_log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "status", "reason"])
        w.writeheader()
        w.writerows(log_rows)
    write_metadata(out, meta_rows)
    skipped = [r for r in log_rows if r["status"] == "skipped"]
    summary = {"converted": len(meta_rows), "skipped": len(skipped),
               "reasons": dict(Counter(r["reason"].split(":")[0] for r in skipped)),
               "out": str(out), "log": str(out / "conversion_log.csv")}
    if not meta_rows:
        raise UserError(f"no label file converted ({len(skipped)} skipped; see {summary['log']})")
    return summary


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m datasets.mtddh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="folder of MTDDH YOLO-pose .txt files (and usually their images)")
    p.add_argument("--out", default="dataset/mtddh", help="output dataset folder")
    p.add_argument("--images", default=None, help="folder of the images when they are not next to the labels")
    p.add_argument("--femur_order", choices=FEMUR_ORDERS, default="head_first",
                   help="femur keypoint 1 = head centre, 2 = H-point (head_first) or the reverse")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset files in a non-empty --out")
    p.add_argument("--strict", action="store_true", help="stop at the first file that fails a check")
    return p.parse_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    check_dir_args(args, inputs=["--src", "--images"], outputs=["--out"])
    s = convert_mtddh(args.src, args.out, images=args.images, femur_order=args.femur_order,
                      overwrite=args.overwrite, strict=args.strict)
    reasons = ", ".join(f"{k} {v}" for k, v in s["reasons"].items())
    print(f"converted {s['converted']}, skipped {s['skipped']}" + (f" ({reasons})" if reasons else "")
          + f" -> {s['out']} (log: {s['log']})")


if __name__ == "__main__":
    sys.exit(main())
