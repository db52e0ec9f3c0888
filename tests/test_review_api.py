"""The review web app's JSON API (utils/pipelines/review/server.py), through FastAPI's TestClient."""
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from datasets.formats import (format_annotation, read_annotation, read_detection, round_keypoints,
                              write_annotation)
from datasets.image_io import read_image
from datasets.layouts import SIDES, get_layout
from datasets.synthetic import generate_dataset
from utils.errors import UserError
from utils.hip_geometry import acetabular_index, ihdi_grade, plausibility_gate
from utils.pipelines.review import server as review

ROOT = Path(__file__).resolve().parents[1]
SIZE = 160


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_src") / "ds"
    generate_dataset(root, 5, seed=3, size=SIZE, layout="ihdi12", progress=False)
    return root


@pytest.fixture
def ds(phantoms, tmp_path):
    """A fresh copy of the phantom dataset: 5 annotated films with boxes."""
    dst = tmp_path / "ds"
    shutil.copytree(phantoms, dst)
    return dst


def stems(root):
    return sorted(p.stem for p in (root / "images").iterdir())


def client(root, **kw):
    return TestClient(review.create_app(root, **kw))


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ reading
def test_list_and_detail_match_the_files(ds):
    s = stems(ds)
    (ds / "annotations" / f"{s[1]}.csv").unlink()                     # not yet annotated
    (ds / "annotations" / f"{s[2]}.csv").write_text('"(1,2)","(3"\n')  # malformed
    c = client(ds)
    items = {it["stem"]: it for it in c.get("/api/images").json()["images"]}
    assert sorted(items) == s
    assert items[s[0]]["status"] == "annotated" and items[s[0]]["annotated"]
    assert items[s[1]]["status"] == "unannotated" and not items[s[1]]["annotated"]
    assert items[s[2]]["status"] == "error" and "unparsable" in items[s[2]]["problem"]

    d = c.get(f"/api/images/{s[0]}").json()
    kps = read_annotation(ds / "annotations" / f"{s[0]}.csv")
    img, _ = read_image(ds / "images" / f"{s[0]}.png")
    assert (d["width"], d["height"]) == (img.shape[1], img.shape[0])
    assert np.allclose(d["keypoints"], kps)
    ai, grade = acetabular_index(kps), ihdi_grade(kps)
    for i, side in enumerate(SIDES):
        assert d["measures"][side]["ai_deg"] == pytest.approx(ai[i], abs=1e-9)
        assert d["measures"][side]["ihdi"] == grade[i]
    boxes = read_detection(ds / "detections" / f"{s[0]}.json")
    for side in SIDES:
        assert np.allclose(d["boxes"][side], boxes[side])
    qc = plausibility_gate(kps, img.shape[1], "ihdi12")
    assert (d["qc"]["left"], d["qc"]["right"]) == qc
    assert d["layout"] == "ihdi12" and d["num_points"] == 12 and d["prediction"] is None
    assert d["point_names"][0] == "left lateral_edge" and d["point_names"][8] == "right lateral_edge"
    assert c.get(f"/api/images/{s[1]}").json()["keypoints"] is None


def test_image_is_the_decoded_film_as_png(ds, tmp_path):
    s = stems(ds)[0]
    c = client(ds)
    r = c.get(f"/api/images/{s}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(got, read_image(ds / "images" / f"{s}.png")[0])

    # a DICOM (MONOCHROME1, 16 bit) is rendered through datasets.image_io.read_image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    folder = tmp_path / "dicoms"
    folder.mkdir()
    arr = (np.arange(30 * 50, dtype=np.uint16).reshape(30, 50) * 40)
    dcm = Dataset()
    dcm.file_meta = FileMetaDataset()
    dcm.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dcm.SOPClassUID = dcm.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    dcm.SOPInstanceUID = dcm.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dcm.Modality = "DX"
    dcm.set_pixel_data(arr, "MONOCHROME1", 16)
    dcm.save_as(folder / "film.dcm", enforce_file_format=True)
    c = client(folder)                                       # a plain folder of images
    d = c.get("/api/images/film").json()
    assert d["dicom"] is True and (d["width"], d["height"]) == (50, 30)
    got = cv2.imdecode(np.frombuffer(c.get("/api/images/film/image").content, np.uint8), cv2.IMREAD_UNCHANGED)
    want = read_image(folder / "film.dcm")[0]
    assert np.array_equal(got, want) and want[0, 0] > want[-1, -1]      # MONOCHROME1 inverted


# ------------------------------------------------------------------ saving
def moved(kps, dx=3.0, dy=-2.0, idx=0):
    k = np.array(kps, dtype=float)
    k[idx] += [dx, dy]
    return k


def test_put_round_trip_history_and_kept_boxes(ds):
    s = stems(ds)[0]
    ann, det = ds / "annotations" / f"{s}.csv", ds / "detections" / f"{s}.json"
    before, det_before = ann.read_text(), det.read_bytes()
    kps = moved(read_annotation(ann), 3.123456, -2.5)
    r = client(ds).put(f"/api/images/{s}/keypoints", json={"keypoints": kps.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    stored = read_annotation(ann)
    assert np.array_equal(stored, round_keypoints(kps))                 # the project's format
    assert ann.read_text() == format_annotation(kps) + "\n"
    ai, grade = acetabular_index(stored), ihdi_grade(stored)
    for i, side in enumerate(SIDES):
        assert body["measures"][side]["ai_deg"] == pytest.approx(ai[i], abs=1e-9)
        assert body["measures"][side]["ihdi"] == grade[i]
    assert body["measures"]["left"]["ai_deg"] != pytest.approx(acetabular_index(read_annotation_text(before))[0])
    hist = list((ds / "annotations" / ".history").glob(f"{s}.*.csv"))
    assert len(hist) == 1 and hist[0].read_text() == before and body["history_file"] == hist[0].name
    assert det.read_bytes() == det_before and body["boxes_made"] is False      # boxes kept
    # a second save keeps the first edit too
    client(ds).put(f"/api/images/{s}/keypoints", json={"keypoints": moved(stored, 1, 1).tolist()})
    hist = sorted((ds / "annotations" / ".history").glob(f"{s}.*.csv"))
    assert [h.read_text() for h in hist] == [before, format_annotation(kps) + "\n"]
    assert not list(ds.rglob("*.tmp"))


def read_annotation_text(text):
    from datasets.formats import parse_annotation_text
    return parse_annotation_text(text)


def test_new_image_gets_boxes_from_its_keypoints(ds):
    s = stems(ds)[1]
    kps = read_annotation(ds / "annotations" / f"{s}.csv")
    (ds / "annotations" / f"{s}.csv").unlink()
    (ds / "detections" / f"{s}.json").unlink()
    r = client(ds).put(f"/api/images/{s}/keypoints", json={"keypoints": kps.tolist()})
    assert r.status_code == 200 and r.json()["boxes_made"] is True and r.json()["history_file"] is None
    assert not (ds / "annotations" / ".history").exists() or not list((ds / "annotations" / ".history").iterdir())
    boxes = read_detection(ds / "detections" / f"{s}.json")
    assert json.loads((ds / "detections" / f"{s}.json").read_text())["image"] == f"{s}.png"
    lay = get_layout("ihdi12")
    h, w = read_image(ds / "images" / f"{s}.png")[0].shape
    for side in SIDES:
        pts = kps[lay.side_slice(side)]
        x1, y1, x2, y2 = boxes[side]
        assert 0 <= x1 and 0 <= y1 and x2 <= w - 1 and y2 <= h - 1
        assert (pts[:, 0] > x1).all() and (pts[:, 0] < x2).all()           # every point inside, with margin
        assert (pts[:, 1] > y1).all() and (pts[:, 1] < y2).all()
        assert y2 - pts[:, 1].max() > pts[:, 1].min() - y1                 # more room below (femoral neck)
    # the written pair loads as a dataset record
    from datasets.formats import load_dataset
    recs = {r.stem: r for r in load_dataset(ds, require_annotations=True, require_boxes=True)}
    assert np.allclose(recs[s].keypoints, round_keypoints(kps))


def test_plain_folder_of_images_gets_annotations_beside_it(tmp_path, phantoms):
    folder = tmp_path / "films"
    folder.mkdir()
    s = stems(phantoms)[0]
    shutil.copy(phantoms / "images" / f"{s}.png", folder)
    c = client(folder)
    assert c.get("/api/images").json()["images"][0]["status"] == "unannotated"
    kps = read_annotation(phantoms / "annotations" / f"{s}.csv")
    assert c.put(f"/api/images/{s}/keypoints", json={"keypoints": kps.tolist()}).status_code == 200
    assert np.allclose(read_annotation(folder / "annotations" / f"{s}.csv"), round_keypoints(kps))
    assert (folder / "detections" / f"{s}.json").is_file()
    assert c.get("/api/images").json()["images"][0]["status"] == "annotated"


BAD_BODIES = {
    "too few points": {"keypoints": [[10, 10]] * 11},
    "too many points": {"keypoints": [[10, 10]] * 13},
    "no keypoints key": {"points": [[10, 10]] * 12},
    "not a list": {"keypoints": "12 points"},
    "a string coordinate": {"keypoints": [["10", 10]] + [[10, 10]] * 11},
    "a triple": {"keypoints": [[10, 10, 1]] + [[10, 10]] * 11},
    "a boolean": {"keypoints": [[True, 10]] + [[10, 10]] * 11},
    "negative outside": {"keypoints": [[-0.6, 10]] + [[10, 10]] * 11},
    "beyond the width": {"keypoints": [[10, 10]] * 11 + [[SIZE - 0.4, 10]]},
    "beyond the height": {"keypoints": [[10, 10]] * 5 + [[10, 1e6]] + [[10, 10]] * 6},
}
RAW_BAD = {
    "NaN": '{"keypoints": [[NaN, 10]' + ', [10, 10]' * 11 + ']}',
    "Infinity": '{"keypoints": [[10, 10]' + ', [10, 10]' * 10 + ', [10, -Infinity]]}',
    "overflow to inf": '{"keypoints": [[1e999, 10]' + ', [10, 10]' * 11 + ']}',
    "not JSON": '{"keypoints": [[10, 10]',
}


@pytest.mark.parametrize("case", list(BAD_BODIES) + list(RAW_BAD))
def test_bad_put_is_422_and_writes_nothing(ds, case):
    s = stems(ds)[0]
    c = client(ds)
    before = snapshot(ds)
    if case in BAD_BODIES:
        r = c.put(f"/api/images/{s}/keypoints", json=BAD_BODIES[case])
    else:
        r = c.put(f"/api/images/{s}/keypoints", content=RAW_BAD[case].encode(),
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert snapshot(ds) == before
    if case in ("NaN", "Infinity", "overflow to inf"):
        assert "not finite" in r.json()["detail"]
    if case.startswith("beyond") or case == "negative outside":
        assert "outside" in r.json()["detail"]


def test_unknown_and_escaping_stems_are_404_and_write_nothing(ds, tmp_path):
    (tmp_path / "outside.png").write_bytes((ds / "images" / f"{stems(ds)[0]}.png").read_bytes())
    (tmp_path / "annotations").mkdir()
    c = client(ds)
    before, outside_before = snapshot(ds), snapshot(tmp_path)
    body = {"keypoints": read_annotation(ds / "annotations" / f"{stems(ds)[0]}.csv").tolist()}
    paths = ["nope", "..%2Foutside", "..%2F..%2Foutside", "%2E%2E%2Foutside", "%2Fetc%2Fpasswd",
             "..%5Coutside", str(tmp_path / "outside").replace("/", "%2F"), "images%2F" + stems(ds)[0],
             stems(ds)[0] + ".png", "%00"]
    for p in paths:
        for method, suffix, kw in (("GET", "", {}), ("GET", "/image", {}), ("PUT", "/keypoints", {"json": body}),
                                   ("POST", "/predict", {})):
            r = c.request(method, f"/api/images/{p}{suffix}", **kw)
            assert r.status_code in (404, 405), (method, p, suffix, r.status_code)
            assert r.status_code == 404 or method != "GET"
            assert b"\x89PNG" not in r.content
    assert snapshot(ds) == before
    assert snapshot(tmp_path) == outside_before
    # the store itself only answers for indexed stems, whatever string it is handed
    store = c.app.state.store
    for raw in ("../outside", str(tmp_path / "outside"), "images/" + stems(ds)[0], "", None):
        with pytest.raises(review.ApiError) as e:
            store.image_path(raw)
        assert e.value.status == 404


# ------------------------------------------------------------------ concurrency and atomicity
def test_concurrent_puts_of_one_stem_serialise(ds):
    s = stems(ds)[0]
    ann = ds / "annotations" / f"{s}.csv"
    base = read_annotation(ann)
    c = client(ds)
    versions = [moved(base, dx=0.5 * i, dy=0.25 * i, idx=i % 12) for i in range(1, 9)]
    codes = []
    real_write = review.write_annotation

    def slow_write(path, kps):               # widen the window in which two saves could interleave
        Path(path).write_text(format_annotation(kps)[:20])
        threading.Event().wait(0.02)
        real_write(path, kps)

    review.write_annotation = slow_write
    try:
        def put(k):
            codes.append(c.put(f"/api/images/{s}/keypoints", json={"keypoints": k.tolist()}).status_code)
        threads = [threading.Thread(target=put, args=(k,)) for k in versions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        review.write_annotation = real_write
    assert codes and all(code in (200, 409) for code in codes) and codes.count(200) >= 1
    final = read_annotation(ann)                     # never half-written
    assert any(np.array_equal(final, round_keypoints(k)) for k in versions)
    hist = sorted((ds / "annotations" / ".history").glob(f"{s}.*.csv"))
    assert len(hist) == codes.count(200)             # one kept version per save
    # saves ran one after another: each one's previous version is the one saved before it, so
    # the history plus the final file hold the original and every saved version exactly once
    kept = sorted([h.read_text() for h in hist] + [ann.read_text()])
    assert len(set(kept)) == len(kept) == codes.count(200) + 1
    assert format_annotation(base) + "\n" in kept
    assert set(kept) <= {format_annotation(base) + "\n"} | {format_annotation(k) + "\n" for k in versions}
    assert not list(ds.rglob("*.tmp"))


def test_put_while_a_save_holds_the_lock_is_409(ds, monkeypatch):
    s = stems(ds)[0]
    c = client(ds)
    monkeypatch.setattr(review, "SAVE_LOCK_TIMEOUT_S", 0.05)
    before = snapshot(ds)
    lock = c.app.state.store.lock(s)
    body = {"keypoints": moved(read_annotation(ds / "annotations" / f"{s}.csv")).tolist()}
    with lock:
        r = c.put(f"/api/images/{s}/keypoints", json=body)
    assert r.status_code == 409 and "under way" in r.json()["detail"]
    assert snapshot(ds) == before
    assert c.put(f"/api/images/{s}/keypoints", json=body).status_code == 200   # free again


def test_a_save_that_fails_midway_leaves_the_old_file(ds, monkeypatch):
    s = stems(ds)[0]
    ann = ds / "annotations" / f"{s}.csv"
    before = ann.read_text()

    def broken(path, kps):
        Path(path).write_text('"(1,2)",')
        raise OSError("disk full")

    monkeypatch.setattr(review, "write_annotation", broken)
    c = TestClient(review.create_app(ds), raise_server_exceptions=False)
    r = c.put(f"/api/images/{s}/keypoints", json={"keypoints": moved(read_annotation(ann)).tolist()})
    assert r.status_code == 500
    assert ann.read_text() == before
    assert not [p for p in ann.parent.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ predictions
def write_predictions(path, ds, offsets, flag_stem=None):
    """A predictions.csv in the real schema: each annotation shifted by ``offsets[stem]`` px in x."""
    import pandas as pd
    from utils.evaluation.metrics import prediction_row
    rows = []
    for s, off in offsets.items():
        gt = read_annotation(ds / "annotations" / f"{s}.csv")
        pred = gt + [off, 0.0]
        if s == flag_stem:                  # swap the triradiate points' roles: sides swapped
            pred = gt.copy()
            pred[2, 0], pred[6, 0] = gt[6, 0], gt[2, 0]
        boxes = read_detection(ds / "detections" / f"{s}.json")
        row = prediction_row(s, pred, "ihdi12", gt_kps=gt, pred_boxes=boxes, gt_boxes=boxes,
                             det_conf={"left": 0.9, "right": 0.8})
        row.update({"width": SIZE, "height": SIZE})
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_predictions_beside_annotations_error_and_flags(ds, tmp_path):
    s = stems(ds)
    offsets = {s[0]: 1.0, s[1]: 4.0, s[2]: 2.0, s[3]: 0.0}
    csv = write_predictions(tmp_path / "predictions.csv", ds, offsets, flag_stem=s[3])
    c = client(ds, predictions=csv)
    items = {it["stem"]: it for it in c.get("/api/images").json()["images"]}
    assert items[s[4]]["has_prediction"] is False and items[s[4]]["error_px"] is None
    for stem, off in list(offsets.items())[:3]:
        assert items[stem]["has_prediction"] and items[stem]["error_px"] == pytest.approx(off, abs=1e-6)
        assert not items[stem]["flagged"]
    assert items[s[3]]["flagged"] and "sides_swapped" in items[s[3]]["prediction_qc"]["left"]
    d = c.get(f"/api/images/{s[1]}").json()
    gt = read_annotation(ds / "annotations" / f"{s[1]}.csv")
    assert np.allclose(d["prediction"]["keypoints"], gt + [4.0, 0.0])
    ai = acetabular_index(gt + [4.0, 0.0])
    assert d["prediction"]["measures"]["left"]["ai_deg"] == pytest.approx(ai[0], abs=1e-9)
    assert d["prediction"]["det_conf"] == {"left": 0.9, "right": 0.8}
    # the error follows the annotation as it is corrected
    c.put(f"/api/images/{s[1]}/keypoints", json={"keypoints": (gt + [4.0, 0.0]).tolist()})
    items = {it["stem"]: it for it in c.get("/api/images").json()["images"]}
    assert items[s[1]]["error_px"] == pytest.approx(0.0, abs=1e-3)


def test_gate_on_predictions_without_and_with_low_confidence(ds, tmp_path):
    import pandas as pd
    from utils.evaluation.metrics import prediction_row
    s = stems(ds)
    rows = []
    for stem, conf in ((s[0], None), (s[1], {"left": 0.1, "right": 0.9})):
        gt = read_annotation(ds / "annotations" / f"{stem}.csv")
        boxes = read_detection(ds / "detections" / f"{stem}.json")
        rows.append(prediction_row(stem, gt, "ihdi12", pred_boxes=boxes, det_conf=conf))
    pd.DataFrame(rows).to_csv(tmp_path / "p.csv", index=False)
    items = {it["stem"]: it for it in client(ds, predictions=tmp_path / "p.csv").get("/api/images").json()["images"]}
    # ground-truth boxes (no confidence, as with --use_gt_box): the gate passes both hips
    assert items[s[0]]["prediction_qc"] == {"left": [], "right": []} and not items[s[0]]["flagged"]
    assert items[s[1]]["prediction_qc"] == {"left": ["low_confidence"], "right": []} and items[s[1]]["flagged"]


def test_predictions_in_another_layout_is_a_user_error(ds, tmp_path):
    import pandas as pd
    csv = write_predictions(tmp_path / "p.csv", ds, {stems(ds)[0]: 1.0})
    df = pd.read_csv(csv)
    df["layout"] = "mtddh8"
    df.to_csv(csv, index=False)
    with pytest.raises(UserError, match="layout"):
        review.create_app(ds, predictions=csv)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """An untrained convnext_atto keypoint checkpoint (64 px): enough to run the pipeline."""
    from models import build_model
    from models.checkpoint import save_checkpoint
    model = build_model("convnext_atto_custom", "simcc_2d", 6, 64)
    path = tmp_path_factory.mktemp("review_ckpt") / "tiny.pth"
    save_checkpoint(path, model, {"layout": "ihdi12", "side": "left", "mirror": True, "crop_expand": 0.10,
                                  "hist_eq": True, "sigma": 6.0})
    return path


def test_prefill_runs_the_pipeline_on_that_image_and_saves_nothing(ds, tiny_ckpt, tmp_path):
    s = stems(ds)[2]
    c = client(ds, kp_left_path=str(tiny_ckpt))
    before = snapshot(ds)
    r = c.post(f"/api/images/{s}/predict")
    assert r.status_code == 200, r.text
    got = np.array(r.json()["keypoints"], dtype=float)
    assert r.json()["use_gt_box"] is True and r.json()["missing_sides"] == []
    assert snapshot(ds) == before                      # pre-fill places points; saving is separate
    # the same as the pipeline's own output for this image
    from utils.evaluation.metrics import read_predictions
    from utils.pipelines.predict import run_prediction
    one = tmp_path / "one"
    for sub, ext in (("images", ".png"), ("detections", ".json")):
        (one / sub).mkdir(parents=True)
        shutil.copy(ds / sub / f"{s}{ext}", one / sub)
    run_prediction(one, tmp_path / "out", kp_left_path=str(tiny_ckpt), use_gt_box=True, device="cpu",
                   overlays=False, progress=False, make_plots=False, worst_n=0)
    row = read_predictions(tmp_path / "out" / "predictions.csv").iloc[0]
    want = np.array([[row[f"pred_x_{j}"], row[f"pred_y_{j}"]] for j in range(12)])
    assert np.allclose(got, want, atol=1e-6)
    boxes = read_detection(ds / "detections" / f"{s}.json")
    lay = get_layout("ihdi12")
    for side in SIDES:                                  # crops were taken on the image's own boxes
        assert np.allclose(r.json()["boxes"][side], boxes[side])
        assert (got[lay.side_slice(side), 0] >= boxes[side][0] - 0.1 * (boxes[side][2] - boxes[side][0]) - 1).all()


def test_prefill_without_weights_or_boxes_is_409(ds, tiny_ckpt):
    s = stems(ds)[0]
    assert client(ds).post(f"/api/images/{s}/predict").status_code == 409
    (ds / "detections" / f"{s}.json").unlink()
    r = client(ds, kp_left_path=str(tiny_ckpt)).post(f"/api/images/{s}/predict")
    assert r.status_code == 409 and "--yolo_weights" in r.json()["detail"]


# ------------------------------------------------------------------ start-up errors
def test_structural_problems_are_user_errors(tmp_path, ds):
    with pytest.raises(UserError, match="not found"):
        review.create_app(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        review.create_app(tmp_path / "empty")
    s = stems(ds)
    write_annotation(ds / "annotations" / f"{s[0]}.csv", np.full((8, 2), 20.0))
    with pytest.raises(UserError, match="mix keypoint layouts"):
        review.create_app(ds)
    with pytest.raises(UserError, match="--kp_left_path"):
        review.create_app(ds, layout="ihdi12", kp_left_path=str(tmp_path / "none.pth"))


def test_script_bad_input_exits_2_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "review_app.py"), "--data", str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: --data: folder not found")


def test_page_and_assets_are_served_from_the_repository(ds):
    c = client(ds)
    page = c.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    for asset in ("app.js", "app.css"):
        r = c.get(f"/static/{asset}")
        assert r.status_code == 200 and r.text == (review.STATIC_DIR / asset).read_text()
    for ref in ("/static/app.js", "/static/app.css"):
        assert ref in page.text
    assert "http://" not in page.text and "https://" not in page.text             # no CDN
    assert "http://" not in c.get("/static/app.js").text.replace("http://127.0.0.1", "")
