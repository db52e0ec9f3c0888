"""One trained pipeline, one file (utils/pipelines/manifest.py): the detector's own input size,
the pipeline manifest, and the same points through every consumer.

Tiny real models on a tiny phantom split (CPU): a YOLO detector trained one epoch at imgsz 64,
a keypoint model and a roof refiner after two optimizer steps each. The untrained detector
finds boxes at a confidence threshold near 0, which the manifest records (``conf``), so every
consumer has boxes to crop on: predict_hip_crop_keypoints.py (--pipeline, and the same models
given flag by flag without --imgsz), kfold_predict_hip_crop_keypoints.py (a {fold} template)
and the review app's pre-fill must give the same points to 0.01 px.
"""
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import kfold_predict_hip_crop_keypoints as kfold_script
import predict_hip_crop_keypoints as script
from datasets.layouts import get_layout
from datasets.splits import make_splits
from datasets.synthetic import generate_dataset
from tests.helpers import train_tiny_keypoints
from utils.errors import UserError
from utils.evaluation.metrics import read_predictions
from utils.pipelines.manifest import FORMAT, load_pipeline, prediction_options, write_pipeline

SIZE, KP_SIZE, YOLO_SIZE = 160, 64, 64
SETTINGS = ["--conf", "0.001", "--min_conf", "0", "--ai_interval_scale", "0.5", "--ai_samples", "20"]
LAY = get_layout("ihdi12")
POINT_COLS = [f"pred_{a}_{j}" for j in range(LAY.num_points) for a in "xy"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A phantom split, its three tiny models and their manifest (written by the predict script)."""
    from utils.pipelines.yolo import train_detector
    root = tmp_path_factory.mktemp("pipeline")
    generate_dataset(root / "ds", 12, seed=4, size=SIZE, layout="ihdi12", progress=False)
    make_splits(root / "ds", root / "data", train=0.5, val=0.17, test=0.33, seed=1)
    weights = root / "weights"
    yolo = train_detector(root / "data" / "data.yaml", epochs=1, imgsz=YOLO_SIZE, batch=4, device="cpu", workers=0,
                          project=root / "runs", name="tiny_yolo", weights_dir=weights, evaluate=False)["weights"]
    kp = train_tiny_keypoints(root / "data", root, "tiny_kp", KP_SIZE)
    roof = train_tiny_keypoints(root / "data", root, "tiny_roof", KP_SIZE, stage="roof")
    manifest = weights / "tiny_pipeline.json"
    script.main(["--kp_left_path", str(kp), "--refine_path", str(roof), "--yolo_weights", str(yolo),
                 *SETTINGS, "--write_pipeline", str(manifest)])
    return {"root": root, "test": root / "data" / "test", "yolo": Path(yolo), "kp": kp, "roof": roof,
            "manifest": manifest}


def _points(out: Path):
    df = read_predictions(out / "predictions.csv").set_index("stem").sort_index()
    return df, df[POINT_COLS].to_numpy(float)


def _predict(argv, out):
    script.main([*argv, "--output_dir", str(out), "--device", "cpu", "--no_overlays", "--worst_n", "0",
                 "--hip_sheet", "0"])
    return _points(out)


# ---------------------------------------------------------------------------- the manifest
def test_the_written_manifest_names_the_models_relative_to_itself(trained):
    data = json.loads(trained["manifest"].read_text())
    assert data["format"] == FORMAT and data["version"] == 1
    assert data["detector"] == "tiny_yolo.pt" and data["kp_left"] == ["tiny_kp_best.pth"] and data["kp_right"] == []
    assert data["refiners"] == ["tiny_roof_best.pth"]
    assert data["settings"] == {"imgsz": None, "conf": 0.001, "min_conf": 0.0, "ai_samples": 20,
                                "ai_interval_scale": 0.5, "flip_test": False, "decode": None}
    # moved elsewhere with its models, it still finds them
    moved = trained["root"] / "moved"
    shutil.copytree(trained["manifest"].parent, moved)
    p = load_pipeline(moved / "tiny_pipeline.json")
    assert p.models == {"yolo_weights": str(moved / "tiny_yolo.pt"), "kp_left_path": [str(moved / "tiny_kp_best.pth")],
                        "kp_right_path": None, "refine_path": [str(moved / "tiny_roof_best.pth")]}
    assert p.settings["conf"] == 0.001 and p.predict_kwargs()["use_gt_box"] is False


def test_explicit_flags_override_the_manifest(trained):
    m = str(trained["manifest"])
    argv = ["--pipeline", m, "--data", "d", "--ai_interval_scale", "2", "--no-flip_test"]
    kw = script.prediction_kwargs(script.parse_args(argv), argv)
    assert kw["ai_interval_scale"] == 2.0 and kw["flip_test"] is False          # given
    assert kw["conf"] == 0.001 and kw["min_conf"] == 0.0 and kw["imgsz"] is None  # the manifest's
    assert kw["kp_left_path"] == [str(trained["kp"])] and kw["yolo_weights"] == str(trained["yolo"])
    assert "batch_size" not in kw                                   # not given: run_prediction's default
    argv = ["--pipeline", m, "--data", "d", "--refine_path", str(trained["kp"])]
    assert script.prediction_kwargs(script.parse_args(argv), argv)["refine_path"] == [str(trained["kp"])]


def _manifest(tmp_path, trained, **changes):
    data = json.loads(trained["manifest"].read_text())
    base = trained["manifest"].parent
    for key in ("detector",):
        data[key] = str(base / data[key])
    for key in ("kp_left", "refiners"):
        data[key] = [str(base / p) for p in data[key]]
    data.update(changes)
    p = tmp_path / "m.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize("changes, needle", [
    ({"kp_left": ["nope.pth"]}, "kp_left file not found"),
    ({"detector": "nope.pt"}, "detector file not found"),
    ({"refiner": []}, "unknown key(s) refiner"),
    ({"settings": {"ai_scale": 1.0}}, "unknown setting(s) ai_scale"),
    ({"settings": {"min_conf": "high"}}, "settings.min_conf must be a number"),
    ({"settings": {"flip_test": 1}}, "settings.flip_test must be true or false"),
    ({"version": 2}, "version 2 is newer"),
    ({"format": "other"}, "not a pipeline manifest"),
    ({"kp_left": [], "kp_right": []}, "names no keypoint model"),
])
def test_bad_manifests_are_one_line_errors(changes, needle, trained, tmp_path, capsys):
    bad = _manifest(tmp_path, trained, **changes)
    with pytest.raises(UserError, match=None) as e:
        load_pipeline(bad)
    assert needle in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as ex:            # through the script: exit 2, one line
        script.main(["--pipeline", str(bad), "--data", str(trained["test"]), "--output_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == 2 and len(err) == 1 and needle in err[0]


def test_missing_and_unreadable_manifests(tmp_path):
    with pytest.raises(UserError, match="pipeline manifest not found"):
        load_pipeline(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(UserError, match="not a JSON pipeline manifest"):
        load_pipeline(tmp_path / "x.json")
    with pytest.raises(UserError, match="needs a keypoint model"):
        write_pipeline(tmp_path / "w.json", yolo_weights=None)
    with pytest.raises(UserError, match="file not found"):
        write_pipeline(tmp_path / "w.json", kp_left_path=str(tmp_path / "none.pth"))
    assert prediction_options(None, {"conf": 0.5}) == {"conf": 0.5}


# ---------------------------------------------------------------------------- the detector's own size
def test_the_detector_runs_at_its_training_size_and_warns_on_another(trained, caplog):
    from utils.pipelines.detection import YoloDetector
    det = YoloDetector(trained["yolo"], device="cpu")
    assert det.trained_imgsz == YOLO_SIZE and det.imgsz == YOLO_SIZE
    seen = []
    det.model.predict = lambda images, **kw: seen.append(kw["imgsz"]) or []
    det.predict([np.zeros((SIZE, SIZE), np.uint8)])
    assert seen == [YOLO_SIZE]                                  # what Ultralytics is asked to run at
    with caplog.at_level(logging.WARNING, logger="hipkp"):
        assert YoloDetector(trained["yolo"], device="cpu", imgsz=YOLO_SIZE).imgsz == YOLO_SIZE
        assert not caplog.records
        assert YoloDetector(trained["yolo"], device="cpu", imgsz=96).imgsz == 96
    assert len(caplog.records) == 1 and "trained at 64" in caplog.records[0].getMessage()


# ---------------------------------------------------------------------------- one pipeline, every consumer
@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    """predict_hip_crop_keypoints.py --pipeline: the points every other consumer must give."""
    out = tmp_path_factory.mktemp("ref") / "out"
    df, pts = _predict(["--pipeline", str(trained["manifest"]), "--data", str(trained["test"])], out)
    assert json.loads((out / "summary.json").read_text())["imgsz"] == YOLO_SIZE
    assert np.isfinite(pts).sum() >= LAY.points_per_side        # the detector found boxes to crop on
    return df, pts


def test_flags_without_imgsz_give_the_pipelines_points(trained, reference, tmp_path):
    _, pts = _predict(["--kp_left_path", str(trained["kp"]), "--refine_path", str(trained["roof"]), "--yolo_weights",
                       str(trained["yolo"]), *SETTINGS, "--data", str(trained["test"])], tmp_path / "flags")
    np.testing.assert_allclose(pts, reference[1], atol=0.01)
    # an explicit --imgsz wins over the detector's own size
    _predict(["--pipeline", str(trained["manifest"]), "--imgsz", "160", "--data", str(trained["test"])],
             tmp_path / "big")
    assert json.loads((tmp_path / "big" / "summary.json").read_text())["imgsz"] == 160


def test_kfold_predictor_gives_the_pipelines_points(trained, reference, tmp_path):
    root = tmp_path / "data_kfold"
    for i in (1, 2):
        shutil.copytree(trained["test"], root / f"fold{i}")
        shutil.copy(trained["manifest"], trained["manifest"].parent / f"cv_fold{i}_pipeline.json")
    tpl = str(trained["manifest"].parent / "cv_fold{fold}_pipeline.json")
    kfold_script.main(["--data_root", str(root), "--k", "2", "--pipeline", tpl, "--output_dir", str(tmp_path / "res"),
                       "--device", "cpu", "--no_overlays", "--worst_n", "0", "--hip_sheet", "0"])
    for i in (1, 2):
        _, pts = _points(tmp_path / "res" / f"fold{i}")
        np.testing.assert_allclose(pts, reference[1], atol=0.01)
    assert (tmp_path / "res" / "kfold_summary.md").is_file()


def test_review_prefill_gives_the_pipelines_points(trained, reference, tmp_path):
    from fastapi.testclient import TestClient

    from utils.pipelines.review import server as review
    ds = tmp_path / "ds"
    shutil.copytree(trained["test"], ds)
    c = TestClient(review.create_app(ds, pipeline=str(trained["manifest"]), device="cpu"))
    df, pts = reference
    for stem, want in zip(df.index, pts):
        r = c.post(f"/api/images/{stem}/predict")
        assert r.status_code == 200, r.text
        assert r.json()["use_gt_box"] is False
        got = np.array([[np.nan if v is None else v for v in p] for p in r.json()["keypoints"]], float).ravel()
        np.testing.assert_allclose(got, want, atol=0.01, err_msg=stem)
        for s in ("left", "right"):       # the plausibility gate's verdict comes with the pre-fill
            assert r.json()["qc"][s] == [q for q in str(df.loc[stem, f"qc_{s}"] or "").split(";") if q and q != "nan"]


def test_export_onnx_pipeline_writes_a_manifest_of_the_onnx_set(trained, reference, tmp_path):
    import export_onnx
    from utils.pipelines.detection import YoloDetector
    out = tmp_path / "onnx"
    res = export_onnx.main(["--pipeline", str(trained["manifest"]), "--out", str(out)])
    assert set(res) == {"kp_left", "refiner_1", "yolo", "pipeline"}
    m = json.loads((out / "tiny_pipeline.json").read_text())
    assert (m["detector"], m["kp_left"], m["refiners"]) == ("tiny_yolo.onnx", ["tiny_kp_best_kp_left.onnx"],
                                                            ["tiny_roof_best_refiner.onnx"])
    assert m["settings"] == json.loads(trained["manifest"].read_text())["settings"]
    assert YoloDetector(out / "tiny_yolo.onnx").imgsz == YOLO_SIZE      # exported at, and read back as, 64
    _, pts = _predict(["--pipeline", str(out / "tiny_pipeline.json"), "--data", str(trained["test"])], tmp_path / "p")
    assert np.array_equal(np.isfinite(pts), np.isfinite(reference[1]))
    np.testing.assert_allclose(pts, reference[1], atol=0.05)            # ONNX Runtime against torch


def _bench(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_calibration_bench_takes_the_pipeline_but_chooses_the_scale(trained, monkeypatch):
    seen = {}

    def fake(val, test, **kw):
        seen.update(kw)
        return {"val": [], "scale": 1.0, "crossed": True, "informative": True, "note": "", "test_raw": {},
                "test_calibrated": {}}

    monkeypatch.setattr("utils.pipelines.calibration.calibrate_ai_interval", fake)
    monkeypatch.setattr("utils.pipelines.calibration.calibration_markdown", lambda r: "")
    _bench("ai_interval_calibration").main(["--pipeline", str(trained["manifest"]), "--val", "v", "--test", "t",
                                            "--ai_samples", "7", "--device", "cpu"])
    assert "ai_interval_scale" not in seen                        # the setting the bench chooses
    assert seen["ai_samples"] == 7 and seen["device"] == "cpu"    # given
    assert seen["conf"] == 0.001 and seen["refine_path"] == [str(trained["roof"])] and seen["imgsz"] is None


def test_latency_bench_times_the_pipelines_models(trained):
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]     # a subprocess: the bench wraps the prediction module's functions
    r = subprocess.run([sys.executable, "bench/predict_latency.py", "--pipeline", str(trained["manifest"]), "--images",
                        "2", "--size", "160", "--batch_size", "2", "--repeats", "1", "--device", "cpu"],
                       cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"pipeline: convnext_atto@{KP_SIZE} + tiny_yolo@{YOLO_SIZE}" in r.stdout
    assert "onnx/eager speedup (pipeline configuration)" in r.stdout
