"""COCO keypoints import and export (the format CVAT, Label Studio and MMPose exchange).

    python -m datasets.coco export DATASET OUT.json
    python -m datasets.coco import COCO.json --images DIR --out DATASET [--layout ihdi12|mtddh8] [--overwrite]

The COCO file (docs/study_tools.md has an example):
- one ``images`` entry per film: ``id``, ``file_name``, ``width``, ``height``, plus this
  project's ``stem``, ``patient_id`` and ``pixel_spacing_mm`` when known;
- one ``annotations`` entry per hip side: ``category_id`` of ``LeftHip`` or ``RightHip``
  (image sides), ``bbox`` ``[x, y, w, h]`` (the side box of ``detections/``),
  ``keypoints`` ``[x1, y1, 2, x2, y2, 2, ...]`` (visibility 2 = labelled and visible),
  ``num_keypoints``, ``area`` (of the box) and ``iscrowd`` 0;
- two ``categories``, ``LeftHip`` and ``RightHip``, each with the layout's keypoint names
  of that side in stored order (``KeypointLayout.side_point_names``) and a ``skeleton``
  (1-based pairs, as COCO has it);
- ``info.layout`` names the layout.

Coordinates are image pixels with pixel centres on integer coordinates, as in this
project (and as COCO's keypoints are read by Detectron2 and MMPose): nothing is shifted
on the way in or out. The export takes a dataset's stored values; the import writes
the dataset folder format (annotations, detections, YOLO labels, classes.txt,
metadata.csv), so an export followed by an import gives the same files. Values with more
decimals than the folder format stores (4 for keypoints, 2 for boxes) are rounded on
import.

Per-item problems are skipped, warned about and listed: in the export an image without
annotations; in the import an image without both hip annotations, with an unlabelled
keypoint (visibility 0), whose file is missing, or whose size differs from the entry.
The import's list is ``<out>/import_log.csv`` (file, status, reason). A COCO file whose
``LeftHip``/``RightHip`` keypoint count or names fit no layout stops with exit code 2,
naming the category (``--layout`` accepts the names whatever they are, by count).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from datasets.formats import (LABEL_OF_SIDE, SIDE_OF_LABEL, load_dataset, round_keypoints,
                              write_annotation, write_classes, write_detection, write_metadata, write_yolo_label)
from datasets.layouts import LAYOUTS, SIDES, get_layout
from utils.errors import ProblemLog, UserError, cli
from utils.fileio import check_dir_args
from datasets.mtddh import LabelProblem, image_size
from utils.hip_geometry import acetabular_index, ihdi_grade

log = logging.getLogger("hipkp")

VISIBLE = 2
CATEGORY_IDS = {"left": 1, "right": 2}
# skeleton edges per layout, by point name (the roof and the metaphysis / the femoral axis)
SKELETON_NAMES = {
    "ihdi12": (("lateral_edge", "mid_roof"), ("mid_roof", "triradiate"),
               ("metaphysis_lateral", "metaphysis_mid"), ("metaphysis_mid", "metaphysis_medial")),
    "mtddh8": (("lateral_edge", "triradiate"), ("head_centre", "h_point")),
}
IMPORT_OUTPUTS = ("images", "annotations", "detections", "yolo_labels", "metadata.csv", "import_log.csv")


class CocoItemProblem(Exception):
    """One COCO image cannot be imported; the message is its reason in import_log.csv."""


def category(layout, side: str) -> Dict:
    """The COCO category of one image side: name, keypoint names (stored order) and skeleton."""
    lay = get_layout(layout)
    names = list(lay.side_point_names(side))
    skeleton = [[names.index(a) + 1, names.index(b) + 1] for a, b in SKELETON_NAMES[lay.name]]
    return {"id": CATEGORY_IDS[side], "name": LABEL_OF_SIDE[side], "supercategory": "hip",
            "keypoints": names, "skeleton": skeleton}


def _image_size(path: Path) -> Tuple[int, int]:
    try:
        return image_size(path)
    except LabelProblem as e:
        raise CocoItemProblem(str(e)) from None


def _tight_box(points: np.ndarray) -> np.ndarray:
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()], dtype=float)


# ---------------------------------------------------------------- export
def export_coco(dataset, out_json, problems: Optional[ProblemLog] = None) -> Dict:
    """Write ``dataset`` as one COCO keypoints file. Returns ``{n_images, n_annotations, layout,
    skipped, notes, out}``. A record without detections gets the tight box of its side's
    keypoints (listed in ``notes``)."""
    problems = problems if problems is not None else ProblemLog()
    root = Path(dataset)
    records = load_dataset(root, problems=problems)
    lay_name = next((r.layout for r in records if r.layout), None)
    if lay_name is None:
        raise UserError(f"{root}: no image has annotations; nothing to export")
    lay = get_layout(lay_name)
    images, anns, notes = [], [], []
    for rec in records:
        if rec.keypoints is None:
            problems.add(rec.image_path, "no annotation (not exported)")
            continue
        try:
            width, height = _image_size(rec.image_path)
        except CocoItemProblem as e:
            problems.add(rec.image_path, str(e))
            continue
        img_id = len(images) + 1
        entry = {"id": img_id, "file_name": rec.image_path.name, "width": width, "height": height,
                 "stem": rec.stem}
        if rec.meta.get("patient_id"):
            entry["patient_id"] = str(rec.meta["patient_id"])
        if rec.pixel_spacing_mm:
            entry["pixel_spacing_mm"] = float(rec.pixel_spacing_mm)
        images.append(entry)
        kps = np.asarray(rec.keypoints, dtype=float)
        if not rec.boxes:
            notes.append(f"{rec.stem}: no detections file; bbox = tight box of the side's keypoints")
        for side in SIDES:
            pts = kps[lay.side_slice(side)]
            box = np.asarray(rec.boxes[side], dtype=float) if rec.boxes else _tight_box(pts)
            x1, y1, x2, y2 = (float(v) for v in box)
            flat: List[float] = []
            for x, y in pts:
                flat += [float(x), float(y), VISIBLE]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": CATEGORY_IDS[side],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                         "keypoints": flat, "num_keypoints": int(len(pts))})
    if not images:
        raise UserError(f"{root}: no image could be exported ({problems.summary_line()})")
    coco = {"info": {"description": f"hip keypoints exported from {root.name}", "layout": lay.name,
                     "coordinates": "image pixels, pixel centres on integer coordinates; sides are image sides"},
            "licenses": [], "images": images, "annotations": anns,
            "categories": [category(lay, s) for s in SIDES]}
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_name(out_json.name + ".partial")
    tmp.write_text(json.dumps(coco, indent=1) + "\n")
    tmp.replace(out_json)
    return {"n_images": len(images), "n_annotations": len(anns), "layout": lay.name,
            "skipped": problems.to_dicts(), "notes": notes, "out": str(out_json)}


# ---------------------------------------------------------------- import
def layout_of_categories(categories: List[Dict], layout: Optional[str] = None) -> Tuple[str, Dict[int, str]]:
    """``(layout name, {category id: side})`` from the ``LeftHip``/``RightHip`` categories.

    Each must list as many keypoints as a layout has per side and, unless ``layout`` is
    given, exactly that layout's names for the side in stored order. ``UserError`` naming
    the category otherwise."""
    forced = None
    if layout is not None:
        try:
            forced = get_layout(layout)
        except ValueError as e:
            raise UserError(str(e)) from None
    sides: Dict[int, str] = {}
    found: Dict[str, str] = {}
    for cat in categories:
        side = SIDE_OF_LABEL.get(str(cat.get("name")))
        if side is None:
            log.warning("COCO category %r (id %s) is not LeftHip or RightHip: its annotations are ignored",
                        cat.get("name"), cat.get("id"))
            continue
        names = [str(n) for n in cat.get("keypoints") or []]
        candidates = [forced] if forced else list(LAYOUTS.values())
        fit = [l for l in candidates if l.points_per_side == len(names)
               and (forced is not None or names == list(l.side_point_names(side)))]
        if not fit:
            expected = "; ".join(f"{l.name}: {l.points_per_side} named {list(l.side_point_names(side))}"
                                 for l in candidates)
            raise UserError(f"COCO category {cat.get('name')!r} (id {cat.get('id')}) has {len(names)} keypoints "
                            f"{names}, which fit no layout ({expected})"
                            + ("" if forced else "; --layout NAME accepts other names by count"))
        if side in found:
            raise UserError(f"COCO file has two {cat.get('name')} categories (ids {found[side]} and {cat.get('id')})")
        found[side] = str(cat.get("id"))
        sides[cat.get("id")] = (side, fit[0].name)
    missing = [LABEL_OF_SIDE[s] for s in SIDES if s not in found]
    if missing:
        raise UserError(f"COCO file has no {' or '.join(missing)} category (categories: "
                        f"{[c.get('name') for c in categories]})")
    lays = {v[1] for v in sides.values()}
    if len(lays) > 1:
        raise UserError(f"the LeftHip and RightHip categories fit different layouts {sorted(lays)}")
    return lays.pop(), {cid: v[0] for cid, v in sides.items()}


def read_coco(path) -> Dict:
    path = Path(path)
    try:
        coco = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"cannot read COCO file {path} ({type(e).__name__}: {e})") from None
    if not isinstance(coco, dict) or not all(isinstance(coco.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        raise UserError(f"{path} is not a COCO file (needs 'images', 'annotations' and 'categories' lists)")
    return coco


def _side_points(ann: Dict, lay) -> np.ndarray:
    kp = ann.get("keypoints")
    n = lay.points_per_side
    if not isinstance(kp, list) or len(kp) != 3 * n:
        raise CocoItemProblem(f"annotation {ann.get('id')}: {0 if not isinstance(kp, list) else len(kp)} keypoint "
                              f"values, expected {3 * n} (x, y, v for {n} points)")
    a = np.asarray(kp, dtype=float).reshape(n, 3)
    if not np.all(np.isfinite(a)):
        raise CocoItemProblem(f"annotation {ann.get('id')}: non-finite keypoint value")
    if np.any(a[:, 2] == 0):
        j = int(np.flatnonzero(a[:, 2] == 0)[0])
        raise CocoItemProblem(f"annotation {ann.get('id')}: keypoint {j + 1} not labelled (visibility 0)")
    return a[:, :2]


def _find_image(images_dir: Path, file_name: str) -> Path:
    for cand in (images_dir / file_name, images_dir / Path(file_name).name):
        if cand.is_file():
            return cand
    raise CocoItemProblem(f"image missing: no {file_name} in {images_dir}")


def _prepare_output(out: Path, images_dir: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"output folder {out} is not empty (use --overwrite to replace it)")
        for name in IMPORT_OUTPUTS:
            p = out / name
            if p.exists() and (p.resolve() == images_dir.resolve() or p.resolve() in images_dir.resolve().parents):
                raise UserError(f"--overwrite would delete the --images folder {images_dir}")
        for name in IMPORT_OUTPUTS:
            p = out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    for sub in ("images", "annotations", "detections", "yolo_labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_classes(out / "yolo_labels")


def import_coco(coco_json, images_dir, out, layout: Optional[str] = None, overwrite: bool = False,
                strict: bool = False) -> Dict:
    """Write the COCO file's images as a dataset folder. Returns ``{imported, skipped, layout,
    out, log}``; ``UserError`` for an unusable file or categories, or when nothing imports."""

    images_dir, out = Path(images_dir), Path(out)
    coco = read_coco(coco_json)
    lay_name, side_of_cat = layout_of_categories(coco["categories"], layout)
    lay = get_layout(lay_name)
    if not images_dir.is_dir():
        raise UserError(f"--images folder not found: {images_dir}")
    _prepare_output(out, images_dir, overwrite)
    by_image: Dict[object, List[Dict]] = {}
    for ann in coco["annotations"]:
        if isinstance(ann, dict) and ann.get("category_id") in side_of_cat:
            by_image.setdefault(ann.get("image_id"), []).append(ann)
    log_rows, meta_rows, stems = [], [], set()
    for entry in coco["images"]:
        name = str(entry.get("file_name", entry.get("id")))
        try:
            stem = str(entry.get("stem") or Path(name).stem)
            if stem in stems:
                raise CocoItemProblem(f"duplicate stem {stem!r}")
            anns = by_image.get(entry.get("id"), [])
            if not anns:
                raise CocoItemProblem("no annotations")
            per_side = {s: [a for a in anns if side_of_cat[a["category_id"]] == s] for s in SIDES}
            for s in SIDES:
                if len(per_side[s]) != 1:
                    raise CocoItemProblem(f"{len(per_side[s])} {LABEL_OF_SIDE[s]} annotations, expected 1")
            kps = round_keypoints(np.concatenate([_side_points(per_side[s][0], lay) for s in SIDES]))
            boxes = {}
            for s in SIDES:
                bb = per_side[s][0].get("bbox")
                try:
                    x, y, w, h = (float(v) for v in bb)
                except (TypeError, ValueError):
                    raise CocoItemProblem(f"annotation {per_side[s][0].get('id')}: bbox {bb!r} is not [x, y, w, h]") \
                        from None
                if not (w > 0 and h > 0):
                    raise CocoItemProblem(f"annotation {per_side[s][0].get('id')}: bbox has zero size")
                boxes[s] = np.array([x, y, x + w, y + h])
            image = _find_image(images_dir, name)
            width, height = _image_size(image)
            if (entry.get("width"), entry.get("height")) != (width, height):
                raise CocoItemProblem(f"image is {width}x{height}, the COCO entry says "
                                      f"{entry.get('width')}x{entry.get('height')}")
            k = np.asarray(kps)
            if np.any((k < -0.5) | (k > np.array([width, height]) - 0.5)):
                raise CocoItemProblem(f"a keypoint lies outside the {width}x{height} image")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ai, grades = acetabular_index(kps, lay), ihdi_grade(kps, lay)
            dst = out / "images" / f"{stem}{image.suffix.lower()}"
            shutil.copy2(image, dst)
            write_annotation(out / "annotations" / f"{stem}.csv", kps)
            write_detection(out / "detections" / f"{stem}.json", boxes, dst.name)
            write_yolo_label(out / "yolo_labels" / f"{stem}.txt", boxes, width, height)
        except CocoItemProblem as e:
            if strict:
                raise UserError(f"{coco_json}: image {name}: {e} (stopped by --strict)") from None
            log.warning("skipped %s: %s", name, e)
            log_rows.append({"file": name, "status": "skipped", "reason": str(e)})
            continue
        stems.add(stem)
        log_rows.append({"file": name, "status": "imported", "reason": ""})
        sp = entry.get("pixel_spacing_mm")
        meta_rows.append({"stem": stem, "patient_id": entry.get("patient_id") or stem,
                          "pixel_spacing_mm": sp if sp is not None else "",
                          "ai_left": float(ai[0]), "ai_right": float(ai[1]),
                          "ihdi_left": int(grades[0]), "ihdi_right": int(grades[1]), "width": width, "height": height})
    with open(out / "import_log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "status", "reason"])
        w.writeheader()
        w.writerows(log_rows)
    write_metadata(out, meta_rows)
    skipped = [r for r in log_rows if r["status"] == "skipped"]
    summary = {"imported": len(meta_rows), "skipped": len(skipped), "skipped_items": skipped,
               "layout": lay.name, "out": str(out), "log": str(out / "import_log.csv")}
    if not meta_rows:
        raise UserError(f"no image imported from {coco_json} ({len(skipped)} skipped; see {summary['log']})")
    return summary


# ---------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m datasets.coco", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="dataset folder -> COCO keypoints JSON")
    e.add_argument("dataset", help="dataset folder (images/, annotations/, detections/)")
    e.add_argument("out_json", help="COCO file to write")
    i = sub.add_parser("import", help="COCO keypoints JSON -> dataset folder")
    i.add_argument("coco_json", help="COCO keypoints file with LeftHip and RightHip categories")
    i.add_argument("--images", required=True, help="folder holding the images named by file_name")
    i.add_argument("--out", required=True, help="dataset folder to write")
    i.add_argument("--layout", choices=sorted(LAYOUTS), default=None,
                   help="accept the categories' keypoints by count, whatever their names")
    i.add_argument("--overwrite", action="store_true", help="replace the dataset files in a non-empty --out")
    i.add_argument("--strict", action="store_true", help="stop at the first image that cannot be imported")
    return p.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    check_dir_args(a, inputs=["dataset", "--images"], outputs=["--out"])
    if a.command == "export":
        s = export_coco(a.dataset, a.out_json)
        print(f"exported {s['n_images']} images, {s['n_annotations']} hip annotations ({s['layout']}) -> {s['out']}"
              + (f"; skipped {len(s['skipped'])}: " + ", ".join(x["item"] for x in s["skipped"]) if s["skipped"]
                 else ""))
        for n in s["notes"]:
            print(f"note: {n}")
    else:
        s = import_coco(a.coco_json, a.images, a.out, layout=a.layout, overwrite=a.overwrite, strict=a.strict)
        print(f"imported {s['imported']} images ({s['layout']}), skipped {s['skipped']}"
              + (": " + ", ".join(x["file"] for x in s["skipped_items"]) if s["skipped"] else "")
              + f" -> {s['out']} (log: {s['log']})")


if __name__ == "__main__":
    sys.exit(main())
