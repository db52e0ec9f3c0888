"""The detection stage: offline YOLO training (one split, k folds) and the YoloDetector helper.

The training runs are tiny (96 px images, imgsz 64, 1 epoch) and run with the network blocked:
any socket connect or DNS lookup during training is recorded and fails the test.
"""
import csv
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import kfold_train_yolo
import train_yolo
from utils.pipelines.detection import (Detection, YoloDetector, as_bgr, best_per_side, box_iou, evaluate_detector,
                             side_class_ids)
from utils.errors import UserError
from utils.pipelines.folds import parse_folds
from utils.pipelines.yolo import _merge_csv, load_data_yaml

ROOT = Path(__file__).resolve().parents[1]
SIZE = 96
FAST = ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0", "--device", "cpu"]


def make_yolo_dataset(root: Path, n_train: int = 8, n_val: int = 4, seed: int = 0) -> Path:
    """Two bright discs per image (image-left = LeftHip, class 0) with matching YOLO labels."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(n):
            img = rng.normal(40, 8, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
            lines = []
            for cls, xc in ((0, 0.28), (1, 0.72)):
                cx, cy, r = SIZE * xc + rng.uniform(-4, 4), SIZE * 0.55 + rng.uniform(-6, 6), SIZE * 0.12
                cv2.circle(img, (int(cx), int(cy)), int(r), 220, -1)
                lines.append(f"{cls} {cx / SIZE:.6f} {cy / SIZE:.6f} {2.4 * r / SIZE:.6f} {2.4 * r / SIZE:.6f}")
            cv2.imwrite(str(root / split / "images" / f"{split}{i}.png"), img)
            (root / split / "labels" / f"{split}{i}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text("train: train/images\nval: val/images\nnames:\n  0: LeftHip\n  1: RightHip\n")
    return data


class NetworkBlocked:
    """Record and refuse every outgoing connection or DNS lookup."""

    def __init__(self, mp: pytest.MonkeyPatch):
        self.attempts = []
        for obj, attr in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                          (socket, "create_connection"), (socket, "getaddrinfo")):
            mp.setattr(obj, attr, self._refuse(attr))

    def _refuse(self, what):
        def refuse(*args, **kwargs):
            self.attempts.append((what, args[1:] if what.startswith("connect") else args))
            raise OSError("network blocked by test")
        return refuse


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_yolo_dataset(tmp_path_factory.mktemp("yolo_ds"))


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("yolo_run")
    with pytest.MonkeyPatch.context() as mp:
        net = NetworkBlocked(mp)
        result = train_yolo.main(["--data", str(tiny), "--model", "yolo12n.yaml", *FAST, "--plots",
                                  "--project", str(out / "runs"), "--name", "tiny",
                                  "--weights_dir", str(out / "weights")])
    return {"result": result, "attempts": net.attempts, "out": out}


# ---------------------------------------------------------------- training
def test_training_is_offline_and_copies_weights(trained):
    assert trained["attempts"] == []  # includes --plots (font) and the dataset checks
    out, res = trained["out"], trained["result"]
    weights = out / "weights" / "tiny.pt"
    assert Path(res["weights"]) == weights and weights.stat().st_size > 100_000
    assert Path(res["save_dir"]).parent == out / "runs"
    m = res["metrics"]
    for k in ("mAP50", "mAP50-95", "precision", "recall"):
        assert 0.0 <= m[k] <= 1.0
    assert set(m["per_class"]) == {"LeftHip", "RightHip"}
    assert set(res["detector"]) == {"left", "right"} and res["detector"]["left"]["n"] == 4
    # Ultralytics was given a resolved copy of data.yaml: absolute paths, no download key
    copy = yaml.safe_load((out / "runs" / "tiny.data.yaml").read_text())
    assert Path(copy["train"]).is_absolute() and Path(copy["val"]).is_dir() and "download" not in copy


def test_detector_boxes_in_image_pixels(trained, tiny):
    # conf ~0 so an untrained 1-epoch model still returns boxes to check
    det = YoloDetector(trained["result"]["weights"], device="cpu", imgsz=64, conf=0.001)
    assert det.class_ids == {"left": 0, "right": 1}
    paths = sorted((tiny.parent / "val" / "images").glob("*.png"))
    gray = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]
    big = cv2.resize(gray[0], (SIZE * 3, SIZE * 2))         # other size and aspect in the same batch
    images = [gray[0], as_bgr(gray[1]), big, gray[2]]
    preds = det.predict(images, batch_size=3)
    assert len(preds) == len(images)
    found = 0
    for im, pred in zip(images, preds):
        assert set(pred) == {"left", "right"}
        h, w = im.shape[:2]
        for d in pred.values():
            if d is None:
                continue
            found += 1
            assert isinstance(d, Detection) and d.box.shape == (4,) and d.box.dtype == float
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h and 0 < d.conf <= 1
    assert found > 0
    assert any(d is not None and d.box[2] > SIZE for d in preds[2].values())  # boxes scale with the image
    by_path = det.predict_paths(paths[:3], batch_size=2)
    for a, b in zip(by_path, det.predict(gray[:3])):
        for side in ("left", "right"):
            assert (a[side] is None) == (b[side] is None)
            if a[side] is not None:
                np.testing.assert_allclose(a[side].box, b[side].box, atol=1e-3)


def test_finished_run_cannot_be_resumed(trained, tiny, capsys):
    args = ["--data", str(tiny), *FAST, "--project", str(trained["out"] / "runs"), "--name", "tiny",
            "--weights_dir", str(trained["out"] / "w2"), "--resume"]
    with pytest.raises(SystemExit) as e:
        train_yolo.main(args)
    assert e.value.code == 2 and "finished run" in capsys.readouterr().err


def test_kfold_trains_requested_folds_and_writes_table(tiny, tmp_path, capsys):
    for fold, (tr, va) in ((1, ("train", "val")), (2, ("val", "train"))):
        (tmp_path / f"data_fold{fold}.yaml").write_text(yaml.safe_dump(
            {"path": str(tiny.parent), "train": f"{tr}/images", "val": f"{va}/images",
             "names": {0: "LeftHip", 1: "RightHip"}}))
    with pytest.MonkeyPatch.context() as mp:
        net = NetworkBlocked(mp)
        rows = kfold_train_yolo.main(["--data_tpl", str(tmp_path / "data_fold{fold}.yaml"), "--k", "2",
                                      "--folds", "2", *FAST, "--name", "kf", "--project", str(tmp_path / "runs"),
                                      "--weights_dir", str(tmp_path / "weights"), "--log_dir", str(tmp_path / "logs")])
    assert net.attempts == []
    assert [r["fold"] for r in rows] == [2]
    assert (tmp_path / "weights" / "kf_fold2.pt").is_file() and not (tmp_path / "weights" / "kf_fold1.pt").exists()
    with open(tmp_path / "logs" / "kf_kfold_yolo.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["fold"] for r in table] == ["2"]
    assert all(0.0 <= float(table[0][k]) <= 1.0 for k in ("mAP50", "mAP50-95", "precision", "recall"))
    assert "k-fold detector metrics" in capsys.readouterr().out


def test_download_paths_fail_fast_without_network(tmp_path, monkeypatch):
    import urllib.request

    from utils.pipelines.yolo_env import yolo_class

    YOLO = yolo_class()
    net = NetworkBlocked(monkeypatch)
    with pytest.raises(OSError):  # the guard itself works
        urllib.request.urlopen("http://example.org", timeout=1)
    assert net.attempts
    net.attempts.clear()
    monkeypatch.chdir(tmp_path)
    # what Ultralytics' AMP check on CUDA loads; it catches ConnectionError and keeps AMP on
    with pytest.raises(ConnectionError, match="offline"):
        YOLO("yolo26n.pt")
    from ultralytics.utils.checks import check_font
    assert check_font("NoSuchFont.ttf") is None and Path(check_font("Arial.ttf")).is_file()
    assert net.attempts == []


# ---------------------------------------------------------------- errors: exit 2, one line
def _yaml(tmp_path, text, name="data.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("case, needle", [
    ("missing_yaml", "not found"),
    ("download_key", "download"),
    ("missing_images", "images not found"),
    ("no_labels", "label files"),
    ("wrong_names", "names must be"),
    ("missing_weights", "weights file not found"),
    ("corrupt_weights", "cannot load"),
    ("missing_pretrained", "not found"),
    ("fliplr", "LeftHip"),
    ("url_model", "URL"),
    ("resume_nothing", "no checkpoint"),
])
def test_structural_errors_exit_2(case, needle, tiny, tmp_path, capsys):
    data, extra = str(tiny), []
    if case == "missing_yaml":
        data = str(tmp_path / "nope.yaml")
    elif case == "download_key":
        data = str(_yaml(tmp_path, tiny.read_text() + f"path: {tiny.parent}\ndownload: https://x.org/d.zip\n"))
    elif case == "missing_images":
        data = str(_yaml(tmp_path, f"path: {tmp_path}\ntrain: a/images\nval: b/images\nnames: [LeftHip, RightHip]\n"))
    elif case == "no_labels":
        (tmp_path / "ds" / "images").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "ds" / "images" / "a.png"), np.zeros((32, 32), np.uint8))
        data = str(_yaml(tmp_path, "train: ds/images\nval: ds/images\nnames: [LeftHip, RightHip]\n"))
    elif case == "wrong_names":
        data = str(_yaml(tmp_path, tiny.read_text().replace("LeftHip", "hip") + f"path: {tiny.parent}\n"))
    elif case == "missing_weights":
        extra = ["--model", str(tmp_path / "missing.pt")]
    elif case == "corrupt_weights":
        (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
        extra = ["--model", str(tmp_path / "bad.pt")]
    elif case == "missing_pretrained":
        extra = ["--pretrained", str(tmp_path / "missing.pt")]
    elif case == "fliplr":
        extra = ["--fliplr", "0.5"]
    elif case == "url_model":
        extra = ["--model", "https://example.org/yolo12n.pt"]
    elif case == "resume_nothing":
        extra = ["--resume", "--name", "never"]
    with pytest.raises(SystemExit) as e:
        train_yolo.main(["--data", data, *FAST, "--project", str(tmp_path / "runs"),
                         "--weights_dir", str(tmp_path / "w"), *extra])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2
    assert err.startswith("error:") and "\n" not in err and needle in err
    assert not (tmp_path / "w").exists()  # nothing trained


def test_kfold_errors_before_training(tiny, tmp_path, capsys):
    (tmp_path / "data_fold1.yaml").write_text(f"path: {tiny.parent}\n" + tiny.read_text())
    with pytest.raises(SystemExit) as e:  # fold 2 is missing: refused before fold 1 trains
        kfold_train_yolo.main(["--data_tpl", str(tmp_path / "data_fold{fold}.yaml"), "--k", "2", *FAST,
                               "--project", str(tmp_path / "runs"), "--weights_dir", str(tmp_path / "w")])
    assert e.value.code == 2 and "data_fold2.yaml" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(UserError, match="numbered 1..5"):
        parse_folds("0,3", 5)
    assert parse_folds("3, 1", 5) == [1, 3] and parse_folds(None, 3) == [1, 2, 3]


def test_script_exit_code_in_subprocess(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train_yolo.py"), "--data", str(tmp_path / "x.yaml"),
                        "--fliplr", "0.5"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: --fliplr 0.5 refused") and r.stderr.count("\n") == 1


def test_detector_missing_or_foreign_weights(tmp_path):
    with pytest.raises(UserError, match="not found"):
        YoloDetector(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load"):
        YoloDetector(bad)


# ---------------------------------------------------------------- data YAML resolution
def test_data_yaml_paths_resolve_near_the_yaml(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative entries are not read from the working folder
    nested = tiny.parent / "cfg"
    nested.mkdir(exist_ok=True)
    p = _yaml(nested, "path: ..\ntrain: train/images\nval: [val/images]\nnames: [LeftHip, RightHip]\n")
    d = load_data_yaml(p)
    assert Path(d["path"]) == tiny.parent.resolve()
    assert d["train"] == str(tiny.parent.resolve() / "train/images") and d["val"] == [str(tiny.parent.resolve() / "val/images")]
    assert d["names"] == {0: "LeftHip", 1: "RightHip"} and d["nc"] == 2


# ---------------------------------------------------------------- pure helpers
def test_best_per_side_keeps_top_box_per_class():
    xyxy = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 0, 60, 10], [2, 2, 12, 12]], float)
    conf = np.array([0.3, 0.9, 0.8, 0.5])
    cls = np.array([0, 0, 1, 0])
    out = best_per_side(xyxy, conf, cls, {"left": 0, "right": 1})
    np.testing.assert_array_equal(out["left"].box, [1, 1, 11, 11])
    assert out["left"].conf == pytest.approx(0.9) and out["right"].conf == pytest.approx(0.8)
    none = best_per_side(xyxy[:2], conf[:2], cls[:2], {"left": 0, "right": 1})
    assert none["right"] is None  # a missing side is reported as None, not dropped
    swapped = best_per_side(xyxy, conf, cls, side_class_ids({0: "RightHip", 1: "LeftHip"}))
    np.testing.assert_array_equal(swapped["right"].box, [1, 1, 11, 11])


def test_side_class_ids_needs_both_hips():
    assert side_class_ids({0: "LeftHip", 1: "RightHip"}) == {"left": 0, "right": 1}
    with pytest.raises(UserError, match="LeftHip"):
        side_class_ids({0: "person", 1: "car"})


def test_as_bgr():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    b = as_bgr(g)
    assert b.shape == (3, 4, 3) and b.dtype == np.uint8 and (b[..., 2] == g).all()
    assert as_bgr(g[..., None]).shape == (3, 4, 3)
    c = np.zeros((3, 4, 3), np.uint8)
    assert as_bgr(c) is not None and as_bgr(c).shape == c.shape
    with pytest.raises(ValueError):
        as_bgr(np.zeros((3, 4, 4), np.uint8))


def test_evaluate_detector_counts_iou_hits(tiny):
    images = sorted((tiny.parent / "val" / "images").glob("*.png"))
    labels = [tiny.parent / "val" / "labels" / f"{p.stem}.txt" for p in images]

    class FromLabels:  # a "detector" that returns the ground truth, shifted for the right side
        def predict(self, ims, batch_size=8):
            from datasets.formats import read_yolo_label
            out = []
            for lab in self.queue[:len(ims)]:
                gt = read_yolo_label(lab, SIZE, SIZE)
                out.append({"left": Detection(gt["left"], 0.9),
                            "right": Detection(gt["right"] + [25, 0, 25, 0], 0.9) if self.shift else None})
            del self.queue[:len(ims)]
            return out

    det = FromLabels()
    det.queue, det.shift = list(labels), True
    r = evaluate_detector(det, images, labels, batch_size=3)
    assert r["left"]["recall"] == 1.0 and r["left"]["mean_iou"] == pytest.approx(1.0) and r["left"]["n"] == 4
    assert r["right"]["recall"] == 0.0 and 0 < r["right"]["mean_iou"] < 0.5
    det.queue, det.shift = list(labels), False
    r = evaluate_detector(det, images, labels)
    assert r["right"]["missing"] == 4 and r["right"]["recall"] == 0.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)


def test_kfold_csv_merges_separate_jobs(tmp_path):
    path = tmp_path / "logs" / "x_kfold_yolo.csv"
    cols = ["fold", "mAP50", "weights"]
    _merge_csv(path, [{"fold": 3, "mAP50": 0.5, "weights": "a"}], cols)
    _merge_csv(path, [{"fold": 1, "mAP50": 0.7, "weights": "b"}], cols)
    merged = _merge_csv(path, [{"fold": 3, "mAP50": 0.9, "weights": "c"}], cols)
    assert [(int(r["fold"]), float(r["mAP50"])) for r in merged] == [(1, 0.7), (3, 0.9)]
    with open(path) as f:
        assert [r["weights"] for r in csv.DictReader(f)] == ["b", "c"]


def test_training_keeps_the_process_cpu_threads(tiny, tmp_path, monkeypatch):
    """Ultralytics' select_device sets torch's CPU threads to min(8, CPUs - 1) when a trainer starts (one
    on a 2-core machine); train_detector's keep_cpu_threads sets them back before the first epoch."""
    import torch

    import utils.pipelines.yolo as Y
    from ultralytics.utils import NUM_THREADS

    seen = []
    original = Y.keep_cpu_threads

    def keep_and_record(yolo):
        original(yolo)
        yolo.add_callback("on_train_epoch_start", lambda trainer: seen.append(torch.get_num_threads()))

    monkeypatch.setattr(Y, "keep_cpu_threads", keep_and_record)
    n0 = torch.get_num_threads()
    want = 5 if NUM_THREADS != 5 else 3          # a count Ultralytics would not set by itself
    torch.set_num_threads(want)
    try:
        train_yolo.main(["--data", str(tiny), "--model", "yolo12n.yaml", *FAST, "--project", str(tmp_path / "runs"),
                         "--name", "threads", "--weights_dir", str(tmp_path / "weights")])
    finally:
        torch.set_num_threads(n0)
    assert seen == [want]


def test_no_val_validates_after_the_last_epoch_only(tiny, tmp_path, monkeypatch):
    """--no_val: Ultralytics validates once, after the last epoch (then its final check of best.pt),
    where by default it validates after every epoch."""
    import utils.pipelines.yolo as Y

    calls = {}
    original = Y.keep_cpu_threads

    def keep_and_count(yolo):
        original(yolo)
        yolo.add_callback("on_val_start", lambda validator: calls.__setitem__(name, calls.get(name, 0) + 1))

    monkeypatch.setattr(Y, "keep_cpu_threads", keep_and_count)
    for name, extra in (("every", []), ("last", ["--no_val"])):
        args = ["--data", str(tiny), "--model", "yolo12n.yaml", *FAST, "--epochs", "3", "--project",
                str(tmp_path / "runs"), "--name", name, "--weights_dir", str(tmp_path / "weights")]
        train_yolo.main(args + extra)
    assert calls["every"] - calls["last"] == 2     # epochs 1 and 2 are not validated


# ---------------------------------------------------------------- the recall guard
def _fake_result(left, right):
    return {"weights": "w.pt", "save_dir": "runs/x", "metrics": {},
            "detector": {"left": {"recall": left, "mean_iou": 0.1, "missing": 0, "n": 4},
                         "right": {"recall": right, "mean_iou": 0.1, "missing": 0, "n": 4}}}


def test_a_detector_that_finds_too_few_hips_is_warned_about_and_fails_under_strict(tiny, tmp_path, monkeypatch,
                                                                                   capsys, caplog):
    results = {}
    monkeypatch.setattr("utils.pipelines.yolo.train_detector", lambda data, **kw: results["next"])
    argv = ["--data", str(tiny), *FAST, "--project", str(tmp_path / "runs"), "--weights_dir", str(tmp_path / "w")]
    results["next"] = _fake_result(0.25, 1.0)
    with caplog.at_level("WARNING", logger="hipkp"):
        assert train_yolo.main(argv) is results["next"]            # a warning, exit 0
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "top-1 recall left 0.25 on the validation images" in msg and "right 1.00" not in msg
    assert "--epochs" in msg and "more films" in msg and "--imgsz" in msg
    with pytest.raises(SystemExit) as e:                           # --strict: exit 2, that line
        train_yolo.main([*argv, "--strict"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("error: the detector finds too few hips") and "--imgsz" in err[-1]
    results["next"] = _fake_result(0.5, 0.75)                       # both sides at 0.5 or more: no guard
    caplog.clear()
    with caplog.at_level("WARNING", logger="hipkp"):
        train_yolo.main([*argv, "--strict"])
    assert not [r for r in caplog.records if "too few hips" in r.getMessage()]


def test_kfold_detectors_are_guarded_per_fold(tiny, tmp_path, monkeypatch, capsys):
    for fold in (1, 2):
        (tmp_path / f"data_fold{fold}.yaml").write_text(yaml.safe_dump(
            {"path": str(tiny.parent), "train": "train/images", "val": "val/images",
             "names": {0: "LeftHip", 1: "RightHip"}}))
    recall = {"kf_fold1": 0.9, "kf_fold2": 0.0}
    monkeypatch.setattr("utils.pipelines.yolo.train_detector",
                        lambda data, name=None, **kw: dict(_fake_result(recall[name], 0.9), weights=f"{name}.pt"))
    with pytest.raises(SystemExit) as e:
        kfold_train_yolo.main(["--data_tpl", str(tmp_path / "data_fold{fold}.yaml"), "--k", "2", *FAST, "--name", "kf",
                               "--log_dir", str(tmp_path / "logs"), "--strict"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "fold 2's detector finds too few hips: top-1 recall left 0.00" in err[-1]
    assert "fold 1's" not in err[-1]
    assert (tmp_path / "logs" / "kf_kfold_yolo.csv").is_file()      # the table is written before the guard


def test_detector_batches_hold_one_image_shape():
    """Ultralytics letterboxes a mixed-shape batch differently from a lone image, so the detector
    sends each shape in batches of its own: every call sees one shape, results come back in order."""
    import types
    from utils.pipelines.detection import YoloDetector

    calls = []

    def fake_predict(chunk, **kw):
        calls.append({im.shape for im in chunk})
        out = []
        for im in chunk:    # one LeftHip box whose x1 encodes the image's width
            boxes = types.SimpleNamespace(xyxy=torch.tensor([[float(im.shape[1]), 0.0, 400.0, 10.0]]),
                                          conf=torch.tensor([0.9]), cls=torch.tensor([0.0]))
            out.append(types.SimpleNamespace(boxes=boxes))
        return out

    det = object.__new__(YoloDetector)
    det.model = types.SimpleNamespace(predict=fake_predict)
    det.imgsz, det.conf, det.device, det.class_ids = 64, 0.25, "cpu", {"left": 0, "right": 1}
    widths = [30, 40, 30, 50, 40, 30, 30]
    images = [np.zeros((20, w), np.uint8) for w in widths]
    res = det.predict(images, batch_size=2)
    assert all(len(shapes) == 1 for shapes in calls)
    assert [r["left"].box[0] for r in res] == widths
    assert sum(len(s) for s in calls) >= 3
