"""ONNX export (models/onnx_export.py, utils/pipelines/export.py, export_onnx.py) and ONNX Runtime
prediction (models/onnx_runtime.py, through ``run_prediction``) against the torch models.

- Export round trip: the checkpoint's config comes back from the ONNX metadata unchanged, the
  batch axis is dynamic, the graph passes onnx.checker, and ONNX Runtime gives the torch
  model's outputs (raw and decoded) for batches of 1 and 5, from tensors and numpy arrays.
- The whole prediction on a phantom test split with ``.onnx`` paths gives the same keypoints
  as with the ``.pth`` (max abs difference < 0.05 px), one model serving both sides by
  mirroring, and with an ``.onnx`` left model next to a ``.pth`` right model (the backend is
  picked per path).
- The YOLO detector exported by Ultralytics: same raw outputs, same per-side confidences and
  detections inside run_prediction. An untrained detector's scores tie across many anchors,
  so which tied box wins may differ between backends; box coordinates are compared in the
  slow end-to-end test, on a trained detector whose top boxes are distinct.
- Bad input: one ``error:`` line and exit 2 for the script; a file that is not one of our
  keypoint ONNX models is refused by name.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import train_tiny_keypoints
import torch

import export_onnx
from datasets.splits import make_splits
from datasets.synthetic import generate_dataset
from models.checkpoint import load_keypoint_model, read_checkpoint
from models.onnx_export import CONFIG_KEY, export_checkpoint_onnx
from models.onnx_runtime import OnnxKeypointModel, load_onnx_keypoint_model
from utils.errors import UserError
from utils.pipelines.predict import run_prediction

ROOT = Path(__file__).resolve().parents[1]
SIZE = 160          # phantom films, pixels
KP_SIZE = 64        # keypoint model input
YOLO_SIZE = 128     # detector input
TOL_PX = 0.05       # the acceptance figure: ONNX vs torch keypoints, image pixels


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_data")
    generate_dataset(root / "ds", 12, seed=3, size=SIZE, progress=False)
    make_splits(root / "ds", root / "data", train=0.5, val=0.17, test=0.33, seed=1)
    return root / "data"



def _train_kp(data_dir: Path, out: Path, exp: str, **kw) -> Path:
    return train_tiny_keypoints(data_dir, out, exp, KP_SIZE, **kw)


@pytest.fixture(scope="module")
def kp(data, tmp_path_factory):
    """A tiny trained left model (mirror on) and its ONNX export."""
    out = tmp_path_factory.mktemp("onnx_kp")
    pth = _train_kp(data, out, "tiny_left")
    onnx_path, diffs = export_checkpoint_onnx(pth, out / "tiny_left.onnx")
    return {"pth": pth, "onnx": onnx_path, "diffs": diffs}


def _untrained_yolo(path: Path) -> Path:
    """An untrained two-class (LeftHip, RightHip) yolo12n from its YAML, offline."""
    from utils.pipelines.yolo_env import ultralytics
    ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo12n.yaml", nc=2, verbose=False)
    model.names = {0: "LeftHip", 1: "RightHip"}
    torch.save({"model": model, "train_args": {"task": "detect"}}, path)
    return path


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    from utils.pipelines.export import export_yolo_onnx
    out = tmp_path_factory.mktemp("onnx_yolo")
    pt = _untrained_yolo(out / "hip_yolo.pt")
    r = export_yolo_onnx(pt, out / "onnx" / "hip_yolo.onnx", imgsz=YOLO_SIZE)
    return {"pt": pt, "onnx": r["path"], "diff": r["max_abs_diff"], "dir": out}


def _predict(data, out, kp_left, yolo_weights=None, kp_right=None, **kw):
    kw.setdefault("use_gt_box", yolo_weights is None)
    run_prediction(data / "test", out, kp_left_path=str(kp_left), kp_right_path=kp_right and str(kp_right),
                   yolo_weights=yolo_weights and str(yolo_weights), device="cpu", batch_size=3,
                   imgsz=YOLO_SIZE, overlays=False, make_plots=False, progress=False, **kw)
    return pd.read_csv(out / "predictions.csv", dtype={"stem": str})


def _kp_cols(df):
    return [c for c in df.columns if c.startswith(("pred_x_", "pred_y_"))]


def _max_abs(a: pd.DataFrame, b: pd.DataFrame, cols) -> float:
    assert list(a["stem"]) == list(b["stem"])
    va, vb = a[cols].to_numpy(float), b[cols].to_numpy(float)
    assert np.array_equal(np.isnan(va), np.isnan(vb))
    return float(np.nanmax(np.abs(va - vb)))


# ---------------------------------------------------------------------------- export round trip
@pytest.mark.parametrize("head", ["simcc_2d", "direct_regression", "heatmap"])
def test_export_round_trip(head, tmp_path):
    import onnx

    from models import build_model
    from models.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model = build_model("convnext_atto_custom", head, 6, KP_SIZE)
    cfg = dict(layout="ihdi12", side="right", mirror=False, crop_expand=0.15, hist_eq=False, sigma=4.0,
               decode="argmax", mean=(0.5, 0.4, 0.3), std=[0.2, 0.25, 0.3], metrics={"val_px": 3.5})
    pth = save_checkpoint(tmp_path / "m.pth", model, cfg)
    path, diffs = export_checkpoint_onnx(pth, tmp_path / "out" / "m.onnx")
    assert diffs["outputs"] < 1e-4 and diffs["keypoints_px"] < 1e-3

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {m.key: m.value for m in proto.metadata_props}
    saved = read_checkpoint(pth)["config"]
    assert json.loads(meta[CONFIG_KEY]) == json.loads(json.dumps(saved))  # tuples come back as lists
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")      # dynamic batch

    om, codec, ocfg = load_onnx_keypoint_model(path)
    tm, tcodec, _ = load_keypoint_model(pth)
    assert ocfg["side"] == "right" and ocfg["mean"] == [0.5, 0.4, 0.3] and ocfg["crop_expand"] == 0.15
    assert type(codec) is type(tcodec) and repr(codec) == repr(tcodec)     # sigma / decode mode too
    assert om.providers[0] == "CPUExecutionProvider"
    for b in (1, 5):
        x = torch.randn(b, 3, KP_SIZE, KP_SIZE)
        with torch.inference_mode():
            ref = tm(x)
        for inp in (x, x.numpy()):
            got = om(inp)
            assert list(got) == list(ref)
            for k in ref:
                assert got[k].shape == ref[k].shape and got[k].dtype == torch.float32
                assert float((got[k] - ref[k]).abs().max()) < 1e-4
            assert float((codec.decode(got)[0] - tcodec.decode(ref)[0]).abs().max()) < 1e-3
    with pytest.raises(ValueError, match=r"takes \(B, 3, 64, 64\)"):
        om(torch.zeros(1, 3, 32, 32))


# ---------------------------------------------------------------------------- keypoints in the pipeline
def test_prediction_with_onnx_matches_torch(data, kp, tmp_path):
    ref = _predict(data, tmp_path / "torch", kp["pth"])
    got = _predict(data, tmp_path / "onnx", kp["onnx"])
    cols = _kp_cols(ref)
    assert len(ref) == 4 and len(cols) == 24 and np.isfinite(ref[cols].to_numpy(float)).all()
    diff = _max_abs(ref, got, cols)
    print(f"ONNX vs torch keypoints on the phantom test split (gt boxes): max abs diff {diff:.2e} px")
    assert diff < TOL_PX
    conf = [c for c in ref.columns if c.startswith("conf_")]
    assert _max_abs(ref, got, conf) < 1e-3
    assert _max_abs(ref, got, ["pred_ai_left", "pred_ai_right"]) < 0.05       # degrees
    summary = json.loads((tmp_path / "onnx" / "summary.json").read_text())
    assert summary["kp_models"]["right"].endswith(".onnx")


def test_backend_is_picked_per_path(data, kp, tmp_path):
    # the .onnx serves the left hip, the .pth (the same weights) the right one, mirrored
    ref = _predict(data, tmp_path / "torch", kp["pth"], kp_right=kp["pth"])
    got = _predict(data, tmp_path / "mixed", kp["onnx"], kp_right=kp["pth"])
    assert _max_abs(ref, got, _kp_cols(ref)) < TOL_PX
    from utils.pipelines.predict import load_side_models
    models = load_side_models(str(kp["onnx"]), str(kp["pth"]))
    assert isinstance(models["left"].model, OnnxKeypointModel)
    assert isinstance(models["right"].model, torch.nn.Module) and models["right"].mirrored


# ---------------------------------------------------------------------------- the detector
def test_yolo_onnx_export_and_detector(data, kp, yolo, tmp_path):
    import onnx

    from utils.pipelines.detection import YoloDetector

    assert yolo["onnx"].name == "hip_yolo.onnx" and yolo["diff"] < 1e-3
    proto = onnx.load(str(yolo["onnx"]))
    onnx.checker.check_model(proto)
    assert not list(yolo["dir"].glob("*.onnx"))          # nothing written next to the .pt
    det = YoloDetector(yolo["onnx"], device="cpu", imgsz=YOLO_SIZE, conf=1e-4)
    assert det.class_ids == {"left": 0, "right": 1}       # names read from the ONNX metadata

    # run_prediction with both models as .onnx against both as torch
    ref = _predict(data, tmp_path / "torch", kp["pth"], yolo["pt"], conf=1e-4)
    got = _predict(data, tmp_path / "onnx", kp["onnx"], yolo["onnx"], conf=1e-4)
    assert ref["detected_left"].all()          # (this untrained detector's best class is LeftHip everywhere)
    for s in ("left", "right"):
        assert (ref[f"detected_{s}"] == got[f"detected_{s}"]).all()
        c_ref, c_got = ref[f"det_conf_{s}"].to_numpy(float), got[f"det_conf_{s}"].to_numpy(float)
        assert np.allclose(c_ref, c_got, rtol=1e-3, atol=1e-6, equal_nan=True)


# ---------------------------------------------------------------------------- bad input
def test_export_script_errors(kp, yolo, tmp_path, capsys):
    def error(argv, *needles):
        with pytest.raises(SystemExit) as e:
            export_onnx.main([str(a) for a in argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and err[-1].startswith("error:"), err
        for n in needles:
            assert str(n) in err[-1], err[-1]

    error(["--kp_left_path", tmp_path / "none.pth", "--out", tmp_path / "o"], "--kp_left_path", "none.pth")
    (tmp_path / "afile").write_text("x")
    error(["--kp_left_path", kp["pth"], "--out", tmp_path / "afile"], "afile", "not a folder")
    error(["--out", tmp_path / "o"], "nothing to export")
    error(["--kp_left_path", kp["onnx"], "--out", tmp_path / "o"], "tiny_left.onnx", "not a valid checkpoint")
    error(["--yolo_weights", yolo["onnx"], "--out", tmp_path / "o"], "not a .pt detector")


def test_foreign_onnx_is_refused(data, yolo, tmp_path):
    with pytest.raises(ValueError, match="not a hip keypoint ONNX model"):
        load_onnx_keypoint_model(yolo["onnx"])
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="broken.onnx"):
        load_onnx_keypoint_model(bad)
    with pytest.raises(UserError, match="not a hip keypoint ONNX model"):
        _predict(data, tmp_path / "o", yolo["onnx"])


# ---------------------------------------------------------------------------- end to end (slow)
def _run(*args, cwd):
    r = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_end_to_end_scripts_onnx_equals_torch(tmp_path):
    """make_synthetic_dataset -> split -> train both models -> export_onnx.py -> predict twice."""
    w = tmp_path
    _run(ROOT / "make_synthetic_dataset.py", "--out", w / "ds", "--n", 24, "--size", 256, "--no_progress", cwd=w)
    _run(ROOT / "split.py", "--dataset", w / "ds", "--out", w / "data", "--train", 0.67, "--val", 0.16,
         "--test", 0.17, "--seed", 1, cwd=w)
    _run(ROOT / "train_hip_crop_keypoints.py", "--data_dir", w / "data", "--model_name", "convnext_atto_custom",
         "--input_size", 128, "--epochs", 2, "--batch_size", 8, "--device", "cpu", "--out", w / "weights",
         "--log_dir", w / "logs", "--exp_name", "kp", "--no-progress", cwd=w)
    _run(ROOT / "train_yolo.py", "--data", w / "data" / "data.yaml", "--model", "yolo12n.yaml", "--epochs", 15,
         "--imgsz", 256, "--batch", 8, "--nbs", 8, "--workers", 0, "--device", "cpu", "--project", w / "runs",
         "--name", "hip_yolo", "--weights_dir", w / "weights", cwd=w)
    r = _run(ROOT / "export_onnx.py", "--kp_left_path", w / "weights" / "kp_best.pth", "--yolo_weights",
             w / "weights" / "hip_yolo.pt", "--imgsz", 256, "--out", w / "onnx", cwd=w)
    assert "kp_best_kp_left.onnx" in r.stdout and "hip_yolo.onnx" in r.stdout
    runs = {}
    for name, k, y in (("torch", w / "weights" / "kp_best.pth", w / "weights" / "hip_yolo.pt"),
                       ("onnx", w / "onnx" / "kp_best_kp_left.onnx", w / "onnx" / "hip_yolo.onnx")):
        _run(ROOT / "predict_hip_crop_keypoints.py", "--kp_left_path", k, "--yolo_weights", y, "--data",
             w / "data" / "test", "--output_dir", w / name, "--imgsz", 256, "--conf", 0.001, "--device", "cpu",
             "--no_overlays", cwd=w)
        runs[name] = pd.read_csv(w / name / "predictions.csv", dtype={"stem": str})
    ref, got = runs["torch"], runs["onnx"]
    boxes = [c for c in ref.columns if c.startswith("pred_box_")]
    box_diff = _max_abs(ref, got, boxes)
    kp_diff = _max_abs(ref, got, _kp_cols(ref))
    print(f"end to end, {len(ref)} test films: max abs diff boxes {box_diff:.2e} px, keypoints {kp_diff:.2e} px")
    # a detector this undertrained may miss a side; the two backends must agree on which
    assert ref[["detected_left", "detected_right"]].to_numpy().any()
    assert (ref[["detected_left", "detected_right"]] == got[["detected_left", "detected_right"]]).all().all()
    assert box_diff < 0.05 and kp_diff < TOL_PX
