"""Dataset folder format: round trips and clear errors."""
import json

import cv2
import numpy as np
import pytest

from datasets.formats import (format_annotation, load_dataset, parse_annotation_text, read_annotation,
                              read_detection, read_yolo_label, write_annotation, write_detection,
                              write_yolo_label)
from datasets.image_io import read_image
from datasets.layouts import mirror_side_keypoints
from utils.cropping import (apply_matrix, crop_points_to_side, crop_square, side_crop_matrix,
                            side_points_to_crop, square_box, warp)
from utils.errors import ItemError, ProblemLog, UserError


def test_annotation_round_trip_float_and_int(tmp_path):
    k = np.random.default_rng(0).uniform(0, 500, (12, 2)).round(4)
    write_annotation(tmp_path / "a.csv", k)
    assert np.allclose(read_annotation(tmp_path / "a.csv"), k, atol=1e-9)
    ints = ",".join(f'"({i},{i + 1})"' for i in range(8))
    assert parse_annotation_text(ints).tolist() == [[i, i + 1] for i in range(8)]
    assert format_annotation([[1.0, 2.5]]) == '"(1,2.5)"'


@pytest.mark.parametrize("text,msg", [
    ('"(1,2)","(3,4)"', "2 keypoint pairs"),
    ('"(1,2)","(a,4)"' + ',"(1,2)"' * 10, "unparsable"),
    ("", "empty"),
])
def test_annotation_errors_name_the_problem(text, msg):
    with pytest.raises(ItemError, match=msg):
        parse_annotation_text(text, "x.csv")


def test_detection_any_corners_and_missing_label(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"image": "a.png", "objects": [
        {"label": "LeftHip", "points": [[50, 80], [10, 20]]},
        {"label": "RightHip", "points": [[110.5, 20], [150, 60.25]]}]}))
    b = read_detection(p)
    assert b["left"].tolist() == [10, 20, 50, 80]
    assert b["right"].tolist() == [110.5, 20, 150, 60.25]
    write_detection(tmp_path / "e.json", b, "a.png")
    assert np.allclose(read_detection(tmp_path / "e.json")["right"], b["right"])
    p.write_text(json.dumps({"image": "a.png", "objects": [{"label": "RightHip", "points": [[1, 2], [3, 4]]}]}))
    with pytest.raises(ItemError, match="no LeftHip box"):
        read_detection(p)
    p.write_text(json.dumps({"image": "a.png", "objects": [{"label": "LeftHip", "points": [[1, 2], [1, 4]]},
                                                        {"label": "RightHip", "points": [[1, 2], [3, 4]]}]}))
    with pytest.raises(ItemError, match="zero size"):
        read_detection(p)


def test_yolo_round_trip(tmp_path):
    boxes = {"left": np.array([10.0, 20, 50, 80]), "right": np.array([110.0, 20, 150, 60])}
    write_yolo_label(tmp_path / "y.txt", boxes, 200, 100)
    back = read_yolo_label(tmp_path / "y.txt", 200, 100)
    for s in boxes:
        assert np.allclose(back[s], boxes[s], atol=1e-3)


def _tiny_folder(root, n=3):
    for d in ("images", "annotations", "detections"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"im{i}.png"), rng.integers(0, 255, (64, 80), dtype=np.uint8))
        write_annotation(root / "annotations" / f"im{i}.csv", rng.uniform(5, 60, (12, 2)))
        write_detection(root / "detections" / f"im{i}.json",
                        {"left": np.array([1.0, 1, 30, 30]), "right": np.array([40.0, 1, 70, 30])}, f"im{i}.png")


def test_load_dataset_skips_bad_items_with_a_count(tmp_path):
    _tiny_folder(tmp_path, 4)
    (tmp_path / "annotations" / "im1.csv").write_text('"(1,2)"\n')
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    probs = ProblemLog()
    recs = load_dataset(tmp_path, problems=probs)
    assert [r.stem for r in recs] == ["im0", "im2", "im3"]
    assert len(probs) == 2
    assert any("im1.csv" in m and "1 keypoint pairs" in m for _, m in probs.items)
    assert recs[0].keypoints.shape == (12, 2) and recs[0].layout == "ihdi12"
    with pytest.raises(UserError, match="--strict"):
        load_dataset(tmp_path, problems=ProblemLog(strict=True))


def test_load_dataset_structural_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_dataset(tmp_path)


def test_read_image_gray_and_corrupt(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    img[2, 3] = (255, 255, 255)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    g, info = read_image(tmp_path / "a.png")
    assert g.shape == (20, 30) and g.dtype == np.uint8 and g[2, 3] == 255
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(ItemError, match="cannot decode"):
        read_image(tmp_path / "b.png")


def test_crop_mapping_is_exact_and_matches_warp():
    # on a linear ramp, bilinear warping is exact, so the crop's value at a mapped point
    # must equal the image's value at the original point if points and pixels agree
    H, W = 300, 400
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = 0.5 * xx + 0.25 * yy
    rng = np.random.default_rng(0)
    for mirrored in (False, True):
        M = side_crop_matrix([100, 120, 190, 220], 96, 0.1, mirrored)
        crop = warp(img, M, 96)
        pts = rng.uniform([110, 130], [180, 210], (20, 2))
        c = apply_matrix(M, pts)
        vals = cv2.remap(crop, c[:, 0:1].astype(np.float32), c[:, 1:2].astype(np.float32), cv2.INTER_LINEAR)
        assert np.allclose(vals[:, 0], 0.5 * pts[:, 0] + 0.25 * pts[:, 1], atol=1e-2)
    crop, M = crop_square(img, [100, 120, 190, 220], 64)
    assert crop.shape == (64, 64)


def test_side_crop_round_trip_and_mirror_permutation():
    rng = np.random.default_rng(3)
    side = rng.uniform(100, 200, (6, 2))
    box = [90, 90, 210, 210]
    for mirrored in (False, True):
        M = side_crop_matrix(box, 128, 0.1, mirrored)
        c = side_points_to_crop(side, M, mirrored, "ihdi12")
        assert np.allclose(crop_points_to_side(c, M, mirrored, "ihdi12"), side)
    # mirrored crop points = mirror (in crop space) of unmirrored crop points, permuted
    M0 = side_crop_matrix(box, 128, 0.1, False)
    M1 = side_crop_matrix(box, 128, 0.1, True)
    c0 = side_points_to_crop(side, M0, False, "ihdi12")
    c1 = side_points_to_crop(side, M1, True, "ihdi12")
    assert np.allclose(c1, mirror_side_keypoints(c0, 128, "ihdi12"))
    assert np.allclose(mirror_side_keypoints(mirror_side_keypoints(side, 500), 500), side)


def test_square_box_expand():
    b = square_box([0, 0, 100, 50], 0.1)
    assert b[2] - b[0] == pytest.approx(120) and b[3] - b[1] == pytest.approx(120)
    assert (b[0] + b[2]) / 2 == pytest.approx(50) and (b[1] + b[3]) / 2 == pytest.approx(25)
