"""datasets.mtddh: MTDDH YOLO-pose labels -> dataset folder (layout mtddh8)."""
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets.formats import load_dataset, read_metadata, read_yolo_label
from datasets.mtddh import convert_mtddh
from utils.hip_geometry import hip_frames, ihdi_grade

ROOT = Path(__file__).resolve().parents[1]

# a hand-made, well-formed label: left pelvis, left femur, right pelvis, right femur
GOOD = [
    "0 0.325 0.545 0.13 0.2 0.28 0.52 2 0.37 0.57 2",
    "1 0.305 0.64 0.1 0.125 0.31 0.62 2 0.30 0.66 2",
    "0 0.72 0.535 0.12 0.19 0.76 0.51 2 0.68 0.56 2",
    "1 0.748 0.63 0.1 0.125 0.745 0.61 2 0.75 0.65 2",
]


def read_log(out):
    with open(out / "conversion_log.csv", newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f)}


def implied_size(label_text, height=600):
    """Upstream femur boxes are squares in pixels, so their normalised h / w is the image's W / H."""
    rows = np.array([[float(v) for v in l.split()] for l in label_text.split("\n") if l.strip()])
    fem = rows[rows[:, 0] == 1]
    return int(round(height * fem[0, 4] / fem[0, 3])), height


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The 48 real label files (copied to tmp) with blank images of their implied size in --images."""
    shared_dir = ROOT.parent / "shared"          # (the shared_dir fixture is per test; this one is per module)
    if not shared_dir.is_dir():
        pytest.skip("../shared is absent")
    tmp = tmp_path_factory.mktemp("mtddh")
    src, imgs = tmp / "labels", tmp / "images"
    src.mkdir()
    imgs.mkdir()
    files = sorted((shared_dir / "mtddh_labels").glob("dataset*_*.txt"))
    for f in files:
        shutil.copy(f, src / f.name)
        w, h = implied_size(f.read_text())
        cv2.imwrite(str(imgs / f"{f.stem}.png"), np.zeros((h, w), np.uint8))
    summary = convert_mtddh(src, tmp / "out", images=imgs)
    return {"files": files, "src": src, "images": imgs, "out": tmp / "out", "summary": summary, "tmp": tmp}


def test_real_labels_convert(real):
    files, out = real["files"], real["out"]
    assert len(files) == 48
    valid = [f for f in files                               # every normalised coordinate inside [0, 1]
             if all(0 <= float(v) <= 1 for l in f.read_text().split("\n") if l.strip()
                    for i, v in enumerate(l.split()) if i in (1, 2, 5, 6, 8, 9))]
    s = real["summary"]
    assert s["converted"] == len(valid) and s["skipped"] == 48 - len(valid)
    log = read_log(out)
    assert len(log) == 48
    for f in files:
        assert log[f.name]["status"] == ("converted" if f in valid else "skipped")
    assert log["dataset2_306feb9a_img.txt"]["reason"].startswith("coordinate outside [0, 1]")

    recs = load_dataset(out, require_annotations=True, require_boxes=True)
    assert sorted(r.stem for r in recs) == sorted(f.stem for f in valid)
    meta = read_metadata(out)
    kps = np.stack([r.keypoints for r in recs])
    assert kps.shape == (len(valid), 8, 2) and all(r.layout == "mtddh8" for r in recs)
    assert np.all(kps[:, :4, 0].max(1) < kps[:, 4:, 0].min(1))          # image-left hip on the left
    assert np.all(kps[:, 0, 0] < kps[:, 1, 0]) and np.all(kps[:, 4, 0] > kps[:, 5, 0])   # lateral edges outside
    frames = hip_frames(kps, "mtddh8")
    ai = np.concatenate([frames["left"]["ai_deg"], frames["right"]["ai_deg"]])
    assert np.all((ai > 3) & (ai < 50)) and 15 < np.median(ai) < 35
    for r, gl, gr, al, ar in zip(recs, frames["left"]["grade"], frames["right"]["grade"],
                                 frames["left"]["ai_deg"], frames["right"]["ai_deg"]):
        m = meta[r.stem]
        assert (int(m["ihdi_left"]), int(m["ihdi_right"])) == (gl, gr)
        assert float(m["ai_left"]) == pytest.approx(al, abs=0.01)
        assert float(m["ai_right"]) == pytest.approx(ar, abs=0.01)
        assert m["patient_id"] == r.stem and m["pixel_spacing_mm"] == ""
        h, w = cv2.imread(str(r.image_path), cv2.IMREAD_GRAYSCALE).shape
        for side, sl in (("left", slice(0, 4)), ("right", slice(4, 8))):
            x1, y1, x2, y2 = r.boxes[side]
            p = r.keypoints[sl]
            assert x1 < p[:, 0].min() and p[:, 0].max() < x2 and y1 < p[:, 1].min() and p[:, 1].max() < y2
            assert 0 <= x1 and x2 <= w - 1 and 0 <= y1 and y2 <= h - 1
            assert y2 - p[:, 1].max() > 0.1 * np.hypot(*(r.keypoints[5] - r.keypoints[1]))   # room below the H-point
        yolo = read_yolo_label(out / "yolo_labels" / f"{r.stem}.txt", w, h)
        assert np.allclose(yolo["left"], r.boxes["left"], atol=1.0)
    grades = np.concatenate([frames["left"]["grade"], frames["right"]["grade"]])
    assert set(grades) <= {1, 2, 3, 4} and (grades == 1).mean() > 0.6
    # femur order head_first: the H-point lies below the head centre, and below the H-line for most hips
    dy = np.concatenate([kps[:, 3, 1] - kps[:, 2, 1], kps[:, 7, 1] - kps[:, 6, 1]])
    assert np.all(dy >= 0) and (dy > 0).mean() > 0.95          # upstream: ky1 <= ky2 (one hip has them level)
    below = np.concatenate([frames["left"]["hpoint_local"][:, 1], frames["right"]["hpoint_local"][:, 1]]) > 0
    assert below.mean() > 0.85
    assert (out / "yolo_labels" / "classes.txt").read_text().split() == ["LeftHip", "RightHip"]


def test_femur_order_switch(real, tmp_path):
    out = tmp_path / "swapped"
    convert_mtddh(real["src"], out, images=real["images"], femur_order="hpoint_first")
    a = {r.stem: r.keypoints for r in load_dataset(real["out"], require_annotations=True)}
    b = {r.stem: r.keypoints for r in load_dataset(out, require_annotations=True)}
    assert a.keys() == b.keys()
    for stem in a:
        assert np.allclose(a[stem][[0, 1, 4, 5]], b[stem][[0, 1, 4, 5]])
        assert np.allclose(a[stem][[2, 3, 6, 7]], b[stem][[3, 2, 7, 6]])


def write_case(folder, stem, lines, image=True, size=(500, 400)):
    (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    if image:
        cv2.imwrite(str(folder / f"{stem}.jpg"), np.full((size[1], size[0]), 80, np.uint8))


def test_malformed_files_are_skipped_whole(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_case(src, "good", GOOD)
    write_case(src, "swapped_order", GOOD[2:] + GOOD[:2])
    write_case(src, "three_lines", GOOD[:3])
    write_case(src, "vis0", GOOD[:1] + [GOOD[1].replace(" 2 0.30 0.66 2", " 2 0.30 0.66 0")] + GOOD[2:])
    write_case(src, "outside", GOOD[:2] + [GOOD[2].replace("0.76 0.51", "1.06 0.51")] + GOOD[3:])
    write_case(src, "no_right_side", GOOD[:2] + GOOD[:2])                       # the left pair twice
    write_case(src, "three_pelvis", GOOD[:3] + [GOOD[2].replace("0 0.72", "0 0.73", 1)])
    write_case(src, "no_image", GOOD, image=False)
    r = subprocess.run([sys.executable, "-m", "datasets.mtddh", "--src", src, "--out", tmp_path / "out"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "converted 2, skipped 6" in r.stdout
    out = tmp_path / "out"
    log = read_log(out)
    expect = {"three_lines": "wrong line count", "vis0": "visibility 0", "outside": "coordinate outside [0, 1]",
              "no_right_side": "side missing", "three_pelvis": "side missing", "no_image": "image missing"}
    for stem, reason in expect.items():
        assert log[f"{stem}.txt"]["status"] == "skipped" and log[f"{stem}.txt"]["reason"].startswith(reason)
        assert not list(out.rglob(f"{stem}.*")), stem                         # nothing half-written
        assert stem not in read_metadata(out)
    assert log["good.txt"]["status"] == "converted" and log["good.txt"]["reason"] == ""
    assert log["swapped_order.txt"]["status"] == "converted" and "right hip first" in log["swapped_order.txt"]["reason"]
    recs = {x.stem: x for x in load_dataset(out, require_annotations=True, require_boxes=True)}
    assert sorted(recs) == ["good", "swapped_order"]
    good = recs["good"].keypoints
    assert np.allclose(good, recs["swapped_order"].keypoints)                 # sides from position, not order
    # pixel coordinates: x = kx * W - 0.5 with W, H read from the image (500 x 400)
    expect_px = np.array([[0.28, 0.52], [0.37, 0.57], [0.31, 0.62], [0.30, 0.66],
                          [0.76, 0.51], [0.68, 0.56], [0.745, 0.61], [0.75, 0.65]]) * [500, 400] - 0.5
    assert np.allclose(good, expect_px)
    assert ihdi_grade(good, "mtddh8") == (1, 1)
    # an existing output needs --overwrite
    r = subprocess.run([sys.executable, "-m", "datasets.mtddh", "--src", src, "--out", out],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--overwrite" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    s = convert_mtddh(src, out, overwrite=True, femur_order="head_first")
    assert s["converted"] == 2 and s["reasons"] == {"wrong line count": 1, "visibility 0": 1,
                                                   "coordinate outside [0, 1]": 1, "side missing": 2,
                                                   "image missing": 1}


def test_licence_and_notes_files_are_not_label_files(tmp_path):
    """A licence or readme .txt next to the labels is ignored: not parsed, not a skipped label."""
    src = tmp_path / "src"
    src.mkdir()
    write_case(src, "good", GOOD)
    lic = ROOT.parent / "shared" / "mtddh_labels" / "LICENSE-open-hip-dysplasia.txt"
    text = lic.read_text() if lic.is_file() else "MIT License\n\nCopyright (c) 2024 ...\n"
    (src / "LICENSE-open-hip-dysplasia.txt").write_text(text)
    (src / "notes.txt").write_text("\n  labels re-exported 2024-05-01\n")
    s = convert_mtddh(src, tmp_path / "out")
    assert s["converted"] == 1 and s["skipped"] == 0 and s["reasons"] == {}
    assert set(read_log(tmp_path / "out")) == {"good.txt"}
