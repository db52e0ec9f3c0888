"""Small fixtures shared by tests: a tiny dataset folder in the docs/CONVENTIONS.md, "Dataset folder" format."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from datasets.formats import (write_annotation, write_classes, write_detection, write_metadata,
                              write_yolo_label, round_keypoints)
from datasets.layouts import get_layout
from utils.hip_geometry import ihdi_grade

# probability of each IHDI grade I..IV for a generated hip (grade I common, IV rare)
GRADE_P = (0.55, 0.25, 0.12, 0.08)


def _side_points(rng, side: str, grade: int, size: int, layout: str) -> np.ndarray:
    """One hip's points with a horizontal H-line, placing the H-point in ``grade``'s zone."""
    s = size
    sign = -1.0 if side == "left" else 1.0            # lateral direction in image x
    cx = s / 2 + sign * s * 0.12                      # triradiate point
    cy = s * 0.50
    tri = np.array([cx, cy])
    edge = tri + [sign * s * rng.uniform(0.09, 0.12), -s * rng.uniform(0.03, 0.06)]
    ox = edge[0]                                      # origin of the local frame: (edge x, tri y)
    # H-point local (x lateral, y inferior), one zone per grade
    if grade == 1:
        lx, ly = -rng.uniform(0.02, 0.06) * s, rng.uniform(0.04, 0.08) * s
    elif grade == 2:
        ly = rng.uniform(0.05, 0.08) * s
        lx = ly * rng.uniform(0.2, 0.8)
    elif grade == 3:
        ly = rng.uniform(0.01, 0.03) * s
        lx = ly + rng.uniform(0.02, 0.04) * s
    else:
        lx, ly = rng.uniform(0.0, 0.04) * s, -rng.uniform(0.02, 0.04) * s
    hp = np.array([ox + sign * lx, cy + ly])
    if get_layout(layout).name == "mtddh8":
        head = hp + [sign * 0.01 * s, -0.05 * s]
        return np.array([edge, tri, head, hp])
    mid = (edge + tri) / 2 + [0, -0.01 * s]
    half = 0.035 * s
    lat, med = hp + [sign * half, 0], hp - [sign * half, 0]
    mmid = hp + [0, -0.005 * s]
    pts = [edge, mid, tri, lat, mmid, med]        # left-side order: image-left to image-right
    if side == "right":
        pts = [tri, mid, edge, med, mmid, lat]
    return np.array(pts)


def _box(points, size, margin=0.06):
    m = margin * size
    x1, y1 = points.min(0) - m
    x2, y2 = points.max(0) + m
    return np.clip([x1, y1, x2, y2], 0, size - 1)


def make_tiny_dataset(root, n: int = 20, size: int = 128, layout: str = "ihdi12", patients=None,
                      seed: int = 0) -> Path:
    """Write ``n`` random images with keypoints, boxes, YOLO labels and metadata.csv under ``root``.

    ``patients``: None (one patient per image), an int (that many patients, assigned at
    random, each with at least one image when n allows) or a list of ``n`` patient ids.
    metadata.csv has stem, patient_id, ihdi_left, ihdi_right (computed from the written
    keypoints). Returns ``root``.
    """
    root = Path(root)
    lay = get_layout(layout)
    rng = np.random.default_rng(seed)
    for sub in ("images", "annotations", "detections", "yolo_labels"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    write_classes(root / "yolo_labels")
    if patients is None:
        pids = [f"P{i:03d}" for i in range(n)]
    elif isinstance(patients, int):
        order = np.concatenate([np.arange(patients), rng.integers(0, patients, max(0, n - patients))])[:n]
        pids = [f"P{int(p):03d}" for p in rng.permutation(order)]
    else:
        pids = [str(p) for p in patients]
        assert len(pids) == n, "patients list must have n entries"
    rows = []
    for i in range(n):
        stem = f"img{i:03d}"
        grades = rng.choice([1, 2, 3, 4], size=2, p=GRADE_P)
        kps = np.concatenate([_side_points(rng, "left", int(grades[0]), size, lay.name),
                              _side_points(rng, "right", int(grades[1]), size, lay.name)])
        kps = round_keypoints(kps)
        img = rng.integers(0, 256, (size, size), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"{stem}.png"), img)
        write_annotation(root / "annotations" / f"{stem}.csv", kps)
        boxes = {s: _box(kps[lay.side_slice(s)], size) for s in ("left", "right")}
        write_detection(root / "detections" / f"{stem}.json", boxes, f"{stem}.png")
        write_yolo_label(root / "yolo_labels" / f"{stem}.txt", boxes, size, size)
        gl, gr = ihdi_grade(kps, lay.name)
        rows.append({"stem": stem, "patient_id": pids[i], "ihdi_left": gl, "ihdi_right": gr})
    write_metadata(root, rows)
    return root


# ---------------------------------------------------------------- bad inputs (tests/test_bad_inputs.py)
# case -> (file of the spoilt item, relative to the dataset; text its warning must contain)
BAD_ITEM_CASES = {
    "corrupt_image": ("images/{stem}.png", "cannot decode image"),
    "truncated_image": ("images/{stem}.jpg", "truncated or corrupt JPEG"),
    "wrong_point_count": ("annotations/{stem}.csv", "5 keypoint pairs, expected 12 or 8"),
    "unparsable_csv": ("annotations/{stem}.csv", "unparsable keypoint text"),
    "no_lefthip_box": ("detections/{stem}.json", "no LeftHip box"),
    "zero_size_box": ("detections/{stem}.json", "LeftHip box has zero size"),
    "keypoint_outside": ("annotations/{stem}.csv", "keypoint 0 at (104, 10) lies outside the 64x64 image"),
    "non_image_file": ("images/notes.txt", "not an image file"),
    "dicom_no_pixels": ("images/{stem}.dcm", "DICOM has no pixel data"),
}


def write_dicom_without_pixels(path) -> Path:
    """A valid DICOM file (file meta, patient and SOP tags) that has no pixel data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID = "DX", "P0"
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def add_bad_item(root, case: str, stem: str) -> Path:
    """Spoil item ``stem`` of a ``make_tiny_dataset`` folder (made with size=64) as ``case``
    (a key of ``BAD_ITEM_CASES``) says. Returns the spoilt file, which the warning names."""
    import json

    from datasets.formats import read_annotation

    root = Path(root)
    rel, _ = BAD_ITEM_CASES[case]
    path = root / rel.format(stem=stem)
    png = root / "images" / f"{stem}.png"
    ann = root / "annotations" / f"{stem}.csv"
    det = root / "detections" / f"{stem}.json"
    if case == "corrupt_image":
        path.write_bytes(b"\x89PNG\r\n\x1a\n this is not image data")
    elif case == "truncated_image":       # OpenCV decodes a truncated JPEG without an error
        ok, buf = cv2.imencode(".jpg", cv2.imread(str(png), cv2.IMREAD_UNCHANGED))
        path.write_bytes(buf.tobytes()[: len(buf) // 2])
        png.unlink()
    elif case == "wrong_point_count":
        path.write_text(",".join(f'"({i},{i})"' for i in range(5)) + "\n")
    elif case == "unparsable_csv":
        path.write_text('"(1,abc)",' + ann.read_text().split(",", 2)[2])
    elif case in ("no_lefthip_box", "zero_size_box"):
        data = json.loads(det.read_text())
        if case == "no_lefthip_box":
            data["objects"] = [o for o in data["objects"] if o["label"] != "LeftHip"]
        else:
            left = next(o for o in data["objects"] if o["label"] == "LeftHip")
            left["points"][1][0] = left["points"][0][0]
        path.write_text(json.dumps(data))
    elif case == "keypoint_outside":
        kps = read_annotation(ann)
        kps[0] = (104, 10)
        write_annotation(path, kps)
    elif case == "non_image_file":
        path.write_text("notes about this data set\n")
    elif case == "dicom_no_pixels":
        write_dicom_without_pixels(path)
        png.unlink()
    else:
        raise KeyError(case)
    return path


def sigterm_after_first_epoch(cmd, cwd, log_csv, start_timeout: float, exit_timeout: float):
    """Start a training command, wait until its first epoch is logged (``log_csv`` appears,
    after that epoch's checkpoints), send SIGTERM, and return ``(returncode, stderr)``."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + start_timeout
        while not Path(log_csv).exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=exit_timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def train_tiny_keypoints(data_dir, out, exp: str, input_size: int = 64, **kw) -> Path:
    """A convnext_atto_custom + simcc_2d checkpoint after 2 steps on ``data_dir`` (CPU):
    ``out``/weights/{exp}_best.pth. ``kw`` overrides any training setting."""
    from utils.pipelines.train import train   # (torch: only the tests that train need it)
    out = Path(out)
    cfg = dict(data_dir=str(data_dir), model_name="convnext_atto_custom", head_type="simcc_2d",
               input_size=input_size, epochs=1, max_steps=2, batch_size=8, learning_rate=1e-3,
               out=str(out / "weights"), log_dir=str(out / "logs"), exp_name=exp, progress=False,
               tensorboard=False, device="cpu", seed=0)
    cfg.update(kw)
    return Path(train(cfg)["paths"]["best"])


def convert_real_mtddh_labels(tmp_path, shared) -> tuple:
    """The real MTDDH label files in ``shared``/mtddh_labels, converted with blank images of
    each file's implied size: (dataset folder, convert_mtddh's summary)."""
    import shutil
    from datasets.mtddh import convert_mtddh
    from tests.test_mtddh import implied_size
    src, imgs = Path(tmp_path) / "labels", Path(tmp_path) / "images"
    src.mkdir()
    imgs.mkdir()
    for f in sorted((Path(shared) / "mtddh_labels").glob("dataset*_*.txt")):
        shutil.copy(f, src / f.name)
        w, h = implied_size(f.read_text())
        cv2.imwrite(str(imgs / f"{f.stem}.png"), np.zeros((h, w), np.uint8))
    out = Path(tmp_path) / "mtddh"
    return out, convert_mtddh(src, out, images=imgs)
