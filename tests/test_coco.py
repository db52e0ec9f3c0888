"""datasets.coco: COCO keypoints export/import round trip (exact), pycocotools, bad input."""
import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets.coco import export_coco, import_coco, main
from datasets.formats import load_dataset, read_metadata, read_yolo_label, yolo_lines
from datasets.layouts import get_layout
from datasets.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]


def user_error(argv, capsys, *needles) -> str:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and sum(l.startswith("error:") for l in err) == 1
    for n in needles:
        assert n in err[-1], err[-1]
    return err[-1]


@pytest.fixture(scope="module", params=["ihdi12", "mtddh8"])
def phantom(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"coco_{request.param}")
    return generate_dataset(tmp / "ds", 8, seed=2, size=192, layout=request.param, progress=False)


def _records(ds):
    return {r.stem: r for r in load_dataset(ds, require_annotations=True, require_boxes=True)}


def _anns(coco):
    return sorted((a["image_id"], a["category_id"], tuple(a["bbox"]), tuple(a["keypoints"])) for a in coco["annotations"])


def test_round_trip_is_exact(phantom, tmp_path):
    lay = get_layout(_records(phantom)[next(iter(_records(phantom)))].layout)
    out_json = tmp_path / "hips.json"
    s = export_coco(phantom, out_json)
    assert s["n_images"] == 8 and s["n_annotations"] == 16 and s["layout"] == lay.name and not s["skipped"]
    coco = json.loads(out_json.read_text())
    assert coco["info"]["layout"] == lay.name
    cats = {c["name"]: c for c in coco["categories"]}
    assert set(cats) == {"LeftHip", "RightHip"}
    for side, name in (("left", "LeftHip"), ("right", "RightHip")):
        assert cats[name]["keypoints"] == list(lay.side_point_names(side))
        assert cats[name]["skeleton"] and all(1 <= i <= lay.points_per_side for e in cats[name]["skeleton"] for i in e)
    for a in coco["annotations"]:
        assert a["num_keypoints"] == lay.points_per_side and a["keypoints"][2::3] == [2] * lay.points_per_side

    ds2 = tmp_path / "ds2"
    r = import_coco(out_json, phantom / "images", ds2)
    assert r["imported"] == 8 and r["skipped"] == 0 and r["layout"] == lay.name
    orig, back = _records(phantom), _records(ds2)
    assert sorted(orig) == sorted(back)
    for stem, o in orig.items():
        b = back[stem]
        np.testing.assert_allclose(b.keypoints, o.keypoints, atol=1e-6, rtol=0)
        assert (ds2 / "annotations" / f"{stem}.csv").read_text() == (phantom / "annotations" / f"{stem}.csv").read_text()
        for side in ("left", "right"):
            np.testing.assert_allclose(b.boxes[side], o.boxes[side], atol=1e-6, rtol=0)
        h, w = cv2.imread(str(o.image_path), cv2.IMREAD_GRAYSCALE).shape
        # YOLO labels are the detection boxes, normalised
        assert (ds2 / "yolo_labels" / f"{stem}.txt").read_text().split("\n")[:2] == yolo_lines(o.boxes, w, h)
        yb = read_yolo_label(ds2 / "yolo_labels" / f"{stem}.txt", w, h)
        for side in ("left", "right"):
            np.testing.assert_allclose(yb[side], o.boxes[side], atol=1e-5 * max(w, h))
        assert (ds2 / "images" / o.image_path.name).read_bytes() == o.image_path.read_bytes()
    assert (ds2 / "yolo_labels" / "classes.txt").read_text() == "LeftHip\nRightHip\n"
    m0, m1 = read_metadata(phantom), read_metadata(ds2)
    for stem in orig:
        assert m1[stem]["patient_id"] == m0[stem]["patient_id"]
        assert float(m1[stem]["pixel_spacing_mm"]) == pytest.approx(float(m0[stem]["pixel_spacing_mm"]))
        assert float(m1[stem]["ai_left"]) == pytest.approx(float(m0[stem]["ai_left"]), abs=0.006)
        assert m1[stem]["ihdi_right"] == str(m0[stem]["ihdi_right"])
        # the import keeps the image size and the AI as measured (not rounded to 2 decimals)
        assert (m1[stem]["width"], m1[stem]["height"]) == (m0[stem]["width"], m0[stem]["height"])
        for side in ("left", "right"):
            assert float(m1[stem][f"ai_{side}"]) == pytest.approx(float(m0[stem][f"ai_{side}"]), abs=1e-9)
    # and back again: the second export equals the first
    export_coco(ds2, tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["images"] == coco["images"] and again["categories"] == coco["categories"]
    for x, y in zip(_anns(coco), _anns(again)):
        assert x[:2] == y[:2]
        np.testing.assert_allclose(x[2] + x[3], y[2] + y[3], atol=1e-6, rtol=0)


def test_pycocotools_loads_the_export(phantom, tmp_path):
    from pycocotools.coco import COCO
    export_coco(phantom, tmp_path / "hips.json")
    c = COCO(str(tmp_path / "hips.json"))
    assert len(c.getImgIds()) == 8 and len(c.getAnnIds()) == 16
    left = c.getCatIds(catNms=["LeftHip"])
    assert len(left) == 1 and len(c.getAnnIds(catIds=left)) == 8
    recs = _records(phantom)
    img = c.loadImgs(c.getImgIds())[0]
    ann = c.loadAnns(c.getAnnIds(imgIds=img["id"], catIds=left))[0]
    lay = get_layout(recs[img["stem"]].layout)
    k = np.array(ann["keypoints"]).reshape(-1, 3)[:, :2]
    np.testing.assert_allclose(k, recs[img["stem"]].keypoints[lay.side_slice("left")], atol=1e-9)
    x1, y1, x2, y2 = recs[img["stem"]].boxes["left"]
    assert ann["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
    assert ann["area"] == pytest.approx((x2 - x1) * (y2 - y1))


def test_export_lists_images_without_annotations(phantom, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(phantom, ds)
    stem = sorted(p.stem for p in (ds / "annotations").glob("*.csv"))[3]
    (ds / "annotations" / f"{stem}.csv").unlink()
    s = export_coco(ds, tmp_path / "o.json")
    assert s["n_images"] == 7 and len(s["skipped"]) == 1 and stem in s["skipped"][0]["item"]
    assert "no annotation" in s["skipped"][0]["problem"]


def test_import_skips_and_lists_bad_images(phantom, tmp_path):
    export_coco(phantom, tmp_path / "hips.json")
    coco = json.loads((tmp_path / "hips.json").read_text())
    ims = coco["images"]
    gone = {ims[0]["id"]}                                               # no annotations at all
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in gone]
    one_side = ims[1]["id"]                                             # only LeftHip
    coco["annotations"] = [a for a in coco["annotations"] if not (a["image_id"] == one_side and a["category_id"] == 2)]
    for a in coco["annotations"]:
        if a["image_id"] == ims[2]["id"] and a["category_id"] == 1:
            a["keypoints"][5] = 0                                       # point 2 not labelled
    ims[3]["width"] += 10                                               # wrong size
    ims[4]["file_name"] = "missing.png"
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    r = import_coco(tmp_path / "bad.json", phantom / "images", tmp_path / "out")
    assert r["imported"] == 3 and r["skipped"] == 5
    log = {row["file"]: row for row in csv.DictReader(open(tmp_path / "out" / "import_log.csv"))}
    assert log[ims[0]["file_name"]]["reason"] == "no annotations"
    assert "0 RightHip annotations" in log[ims[1]["file_name"]]["reason"]
    assert "keypoint 2 not labelled (visibility 0)" in log[ims[2]["file_name"]]["reason"]
    assert "the COCO entry says" in log[ims[3]["file_name"]]["reason"]
    assert "image missing" in log["missing.png"]["reason"]
    assert len(list((tmp_path / "out" / "annotations").glob("*.csv"))) == 3
    assert len(list((tmp_path / "out" / "images").iterdir())) == 3


def test_categories_that_fit_no_layout_exit_2(phantom, tmp_path, capsys):
    export_coco(phantom, tmp_path / "hips.json")
    coco = json.loads((tmp_path / "hips.json").read_text())
    n = len(coco["categories"][0]["keypoints"])
    renamed = json.loads(json.dumps(coco))
    renamed["categories"][1]["keypoints"] = [f"p{i}" for i in range(n)]
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    user_error(["import", tmp_path / "renamed.json", "--images", phantom / "images", "--out", tmp_path / "o1"],
               capsys, "'RightHip'", "fit no layout", "--layout")
    # --layout accepts them by count
    lay = "ihdi12" if n == 6 else "mtddh8"
    assert import_coco(tmp_path / "renamed.json", phantom / "images", tmp_path / "o2", layout=lay)["imported"] == 8
    short = json.loads(json.dumps(coco))
    short["categories"][0]["keypoints"] = short["categories"][0]["keypoints"][:-1]
    (tmp_path / "short.json").write_text(json.dumps(short))
    user_error(["import", tmp_path / "short.json", "--images", phantom / "images", "--out", tmp_path / "o3"],
               capsys, "'LeftHip'", f"has {n - 1} keypoints")
    (tmp_path / "notcoco.json").write_text("[1, 2]")
    user_error(["import", tmp_path / "notcoco.json", "--images", phantom / "images", "--out", tmp_path / "o4"],
               capsys, "not a COCO file")
    user_error(["import", tmp_path / "hips.json", "--images", phantom / "images", "--out", tmp_path / "o2"],
               capsys, "not empty")


def test_real_mtddh_round_trip(tmp_path):
    shared = ROOT.parent / "shared"
    if not shared.is_dir():
        pytest.skip("../shared is absent")
    from tests.helpers import convert_real_mtddh_labels
    _, conv = convert_real_mtddh_labels(tmp_path, shared)
    s = export_coco(tmp_path / "mtddh", tmp_path / "mtddh.json")
    assert s["n_images"] == conv["converted"] and s["layout"] == "mtddh8"
    import_coco(tmp_path / "mtddh.json", tmp_path / "mtddh" / "images", tmp_path / "back")
    a, b = _records(tmp_path / "mtddh"), _records(tmp_path / "back")
    assert sorted(a) == sorted(b)
    for stem in a:
        np.testing.assert_allclose(b[stem].keypoints, a[stem].keypoints, atol=1e-6, rtol=0)
        for side in ("left", "right"):
            np.testing.assert_allclose(b[stem].boxes[side], a[stem].boxes[side], atol=1e-6, rtol=0)
