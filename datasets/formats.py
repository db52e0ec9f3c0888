"""Read and write the dataset folder format (docs/CONVENTIONS.md, "Dataset folder").

```
<dataset>/
  images/<stem>.png|.jpg|.jpeg|.dcm
  annotations/<stem>.csv     one line: "(x1,y1)","(x2,y2)",...   (12 or 8 pairs, image pixels)
  detections/<stem>.json     {"image": ..., "objects": [{"label": "LeftHip", "points": [[x1,y1],[x2,y2]]}, ...]}
  yolo_labels/<stem>.txt     "cls cx cy w h" normalised, class 0 LeftHip, 1 RightHip
  yolo_labels/classes.txt    LeftHip\nRightHip
  metadata.csv               optional: stem, patient_id, pixel_spacing_mm, true AI/IHDI per side
```
"""
from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from datasets.layouts import SIDES, layout_for_num_points
from utils.errors import ItemError, ProblemLog, UserError
from datasets.image_io import is_dicom, read_image
from utils.cropping import normalize_box

log = logging.getLogger("hipkp")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".dcm", ".bmp", ".tif", ".tiff")
CLASS_NAMES = ("LeftHip", "RightHip")
SIDE_OF_LABEL = {"LeftHip": "left", "RightHip": "right"}
LABEL_OF_SIDE = {"left": "LeftHip", "right": "RightHip"}
_PAIR_RE = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)")


# ---------------------------------------------------------------- annotations
def parse_annotation_text(text: str, source: str = "<text>", expected: Optional[int] = None) -> np.ndarray:
    """Parse ``"(x1,y1)","(x2,y2)",...`` into an (N, 2) float array."""
    body = text.strip()
    if not body:
        raise ItemError(f"{source}: empty annotation file")
    pairs = _PAIR_RE.findall(body)
    # every "(...)" group must have parsed as a number pair
    if len(pairs) != body.count("("):
        raise ItemError(f"{source}: unparsable keypoint text (expected quoted \"(x,y)\" pairs)")
    try:
        kps = np.array([[float(x), float(y)] for x, y in pairs], dtype=float)
    except ValueError:
        raise ItemError(f"{source}: unparsable number in keypoint pairs") from None
    n = len(kps)
    allowed = (expected,) if expected else (12, 8)
    if n not in allowed:
        raise ItemError(f"{source}: {n} keypoint pairs, expected {' or '.join(map(str, allowed))}")
    if not np.all(np.isfinite(kps)):
        raise ItemError(f"{source}: non-finite keypoint coordinate")
    return kps


def read_annotation(path, expected: Optional[int] = None) -> np.ndarray:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ItemError(f"{path}: cannot read annotation ({e})") from None
    return parse_annotation_text(text, str(path), expected)


def _fmt(v: float) -> str:
    s = f"{float(v):.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def format_annotation(kps) -> str:
    kps = np.asarray(kps, dtype=float).reshape(-1, 2)
    return ",".join(f'"({_fmt(x)},{_fmt(y)})"' for x, y in kps)


def write_annotation(path, kps) -> None:
    Path(path).write_text(format_annotation(kps) + "\n")


def round_keypoints(kps) -> np.ndarray:
    """The coordinates exactly as ``write_annotation`` stores them."""
    return parse_annotation_text(format_annotation(kps))


# ---------------------------------------------------------------- detections
def read_detection(path) -> Dict[str, np.ndarray]:
    """Detection JSON -> {"left": (x1, y1, x2, y2), "right": ...} (normalised corners)."""

    path = Path(path)
    try:
        data = json.loads(path.read_text())
        objects = data["objects"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ItemError(f"{path}: unreadable detection JSON ({type(e).__name__}: {e})") from None
    boxes = {}
    for obj in objects:
        side = SIDE_OF_LABEL.get(str(obj.get("label", "")))
        if side is None:
            continue
        try:
            box = normalize_box(np.asarray(obj["points"], dtype=float).reshape(-1)[:4])
        except (KeyError, ValueError, TypeError):
            raise ItemError(f"{path}: {obj.get('label')} box has no two corner points") from None
        if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
            raise ItemError(f"{path}: {obj.get('label')} box has zero size")
        boxes[side] = box
    for side in SIDES:
        if side not in boxes:
            raise ItemError(f"{path}: no {LABEL_OF_SIDE[side]} box")
    return boxes


def write_detection(path, boxes: Dict[str, np.ndarray], image_name: str) -> None:
    objects = []
    for side in SIDES:
        x1, y1, x2, y2 = [float(v) for v in boxes[side]]
        objects.append({"label": LABEL_OF_SIDE[side], "points": [[round(x1, 2), round(y1, 2)],
                                                                 [round(x2, 2), round(y2, 2)]]})
    Path(path).write_text(json.dumps({"image": image_name, "objects": objects}, indent=1) + "\n")


# ---------------------------------------------------------------- YOLO labels
def yolo_lines(boxes: Dict[str, np.ndarray], width: int, height: int) -> List[str]:
    lines = []
    for cls, side in enumerate(SIDES):
        x1, y1, x2, y2 = np.clip(boxes[side], [0, 0, 0, 0], [width - 1, height - 1, width - 1, height - 1])
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def write_yolo_label(path, boxes, width: int, height: int) -> None:
    Path(path).write_text("\n".join(yolo_lines(boxes, width, height)) + "\n")


def read_yolo_label(path, width: int, height: int) -> Dict[str, np.ndarray]:
    path = Path(path)
    boxes = {}
    for line in path.read_text().split("\n"):
        parts = line.split()
        if not parts:
            continue
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:5])
        except (ValueError, IndexError):
            raise ItemError(f"{path}: bad YOLO label line {line!r}") from None
        if cls in (0, 1):
            boxes[SIDES[cls]] = np.array([(cx - w / 2) * width, (cy - h / 2) * height,
                                          (cx + w / 2) * width, (cy + h / 2) * height])
    return boxes


def write_classes(folder) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")


# ---------------------------------------------------------------- metadata
def read_metadata(dataset_dir) -> Dict[str, Dict[str, str]]:
    """metadata.csv -> {stem: row dict}; {} when absent."""
    path = Path(dataset_dir) / "metadata.csv"
    if not path.exists():
        return {}
    try:
        with open(path, newline="") as f:
            return {row["stem"]: row for row in csv.DictReader(f) if row.get("stem")}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: unreadable metadata file ({type(e).__name__}: {e}); fix it, "
                        "or move it away (it is optional)") from None


def write_metadata(dataset_dir, rows: List[Dict]) -> None:
    if not rows:
        return
    cols = list(rows[0].keys())
    with open(Path(dataset_dir) / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def pixel_spacing_from_meta(meta: Dict[str, str]) -> Optional[float]:
    try:
        v = float(meta.get("pixel_spacing_mm", ""))
        return v if np.isfinite(v) and v > 0 else None
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------- records
@dataclass
class HipRecord:
    """One image of a dataset folder, with whatever labels it has."""
    stem: str
    image_path: Path
    keypoints: Optional[np.ndarray] = None          # (N, 2) image pixels
    boxes: Optional[Dict[str, np.ndarray]] = None   # side -> (x1, y1, x2, y2)
    meta: Dict[str, str] = field(default_factory=dict)

    @property
    def layout(self):
        return None if self.keypoints is None else layout_for_num_points(len(self.keypoints)).name

    @property
    def pixel_spacing_mm(self) -> Optional[float]:
        return pixel_spacing_from_meta(self.meta)


def check_record(rec: HipRecord, width: int, height: int) -> None:
    """``ItemError`` when the record's labels do not fit its ``width`` x ``height`` image: a
    keypoint outside the image (pixel centres on integers, so the image spans -0.5 .. W - 0.5)
    or a hip box that does not overlap it."""
    where = rec.image_path.parent.parent
    if rec.keypoints is not None:
        k = np.asarray(rec.keypoints, dtype=float)
        out = (k[:, 0] < -0.5) | (k[:, 0] > width - 0.5) | (k[:, 1] < -0.5) | (k[:, 1] > height - 0.5)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise ItemError(f"{where / 'annotations' / (rec.stem + '.csv')}: keypoint {i} at "
                            f"({_fmt(k[i, 0])}, {_fmt(k[i, 1])}) lies outside the {width}x{height} image "
                            f"({int(out.sum())} point(s) outside; is the annotation for this image?)")
    for side, box in (rec.boxes or {}).items():
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 <= -0.5 or y2 <= -0.5 or x1 >= width - 0.5 or y1 >= height - 0.5:
            raise ItemError(f"{where / 'detections' / (rec.stem + '.json')}: {LABEL_OF_SIDE[side]} box "
                            f"({_fmt(x1)}, {_fmt(y1)}, {_fmt(x2)}, {_fmt(y2)}) lies outside the "
                            f"{width}x{height} image")


def read_record_image(rec: HipRecord):
    """``(gray uint8 (H, W), info)`` of a record's image, checked against its labels.

    The one place where a record's image is read (training crops, prediction, splitting):
    ``ItemError`` when the image cannot be decoded or ``check_record`` fails."""
    image, info = read_image(rec.image_path)
    check_record(rec, image.shape[1], image.shape[0])
    return image, info


def list_images(folder) -> List[Path]:
    """Image files of a folder: known extensions, plus any file with a DICOM preamble."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and (p.suffix.lower() in IMAGE_EXTS
                                      or (not p.name.startswith(".") and is_dicom(p))))


def load_dataset(dataset_dir, require_annotations: bool = False, require_boxes: bool = False,
                 problems: Optional[ProblemLog] = None) -> List[HipRecord]:
    """Pair ``images/`` with ``annotations/`` and ``detections/`` by stem.

    A folder without ``images/`` is read as a plain folder of images (no labels).
    Bad items are skipped with a warning and counted in ``problems``; structural
    problems (missing folder, nothing usable) raise ``UserError``.
    """
    root = Path(dataset_dir)
    problems = problems if problems is not None else ProblemLog()
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    img_dir = root / "images" if (root / "images").is_dir() else root
    meta = read_metadata(root)
    images = list_images(img_dir)
    if img_dir != root:
        listed = set(images)
        for p in sorted(img_dir.iterdir()):
            if p.is_file() and p not in listed and not p.name.startswith("."):
                problems.add(p, "not an image file (unknown extension, no DICOM preamble)")
    if not images:
        raise UserError(f"no images (*.png, *.jpg, *.jpeg, *.dcm) in {img_dir}")
    stems_seen = set()
    records = []
    for img in images:
        if img.stem in stems_seen:
            problems.add(img, f"duplicate stem {img.stem!r} (another image has the same name)")
            continue
        stems_seen.add(img.stem)
        rec = _load_record(root, img, meta, require_annotations, require_boxes, problems)
        if rec is not None:
            records.append(rec)
    layouts = {r.layout for r in records if r.layout}
    if len(layouts) > 1:
        raise UserError(f"{root}: annotations mix keypoint layouts {sorted(layouts)}")
    if not records:
        raise UserError(f"no usable images in {root} ({problems.summary_line()})")
    return records


def _load_record(root: Path, img: Path, meta: Dict, require_annotations: bool, require_boxes: bool,
                 problems: ProblemLog) -> Optional[HipRecord]:
    """One image of a dataset folder with its labels; None (and a logged problem) when unusable."""
    stem = img.stem
    rec = HipRecord(stem=stem, image_path=img, meta=meta.get(stem, {}))
    try:
        ann = root / "annotations" / f"{stem}.csv"
        if ann.exists():
            rec.keypoints = read_annotation(ann)
        elif require_annotations:
            raise ItemError(f"{ann}: annotation file missing")
        det = root / "detections" / f"{stem}.json"
        if det.exists():
            rec.boxes = read_detection(det)
        elif require_boxes:
            raise ItemError(f"{det}: detection file missing")
    except ItemError as e:
        problems.add(img, str(e))
        return None
    return rec


def load_image_list(list_file, require_annotations: bool = False, require_boxes: bool = False,
                    problems: Optional[ProblemLog] = None) -> List[HipRecord]:
    """Records for the images listed in a text file (one image path per line).

    Each image must sit in ``<dataset>/images/``; its labels are read from that dataset
    folder. This is how k-fold inner splits are stored: lists, not copies.
    """
    list_file = Path(list_file)
    problems = problems if problems is not None else ProblemLog()
    if not list_file.is_file():
        raise UserError(f"image list not found: {list_file}")
    metas: Dict[Path, Dict] = {}
    records = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        img = Path(line)
        if not img.is_absolute():
            img = (list_file.parent / img).resolve()
        root = img.parent.parent
        if root not in metas:
            metas[root] = read_metadata(root)
        if not img.is_file():
            problems.add(img, "listed image not found")
            continue
        rec = _load_record(root, img, metas[root], require_annotations, require_boxes, problems)
        if rec is not None:
            records.append(rec)
    if not records:
        raise UserError(f"no usable images listed in {list_file} ({problems.summary_line()})")
    return records


def load_records(source, **kwargs) -> List[HipRecord]:
    """A dataset folder or an image-list .txt file -> records."""
    if Path(source).suffix.lower() == ".txt":
        return load_image_list(source, **kwargs)
    return load_dataset(source, **kwargs)


def dataset_layout(records: List[HipRecord]) -> Optional[str]:
    for r in records:
        if r.layout:
            return r.layout
    return None
