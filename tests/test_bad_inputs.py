"""Bad input never crashes with a traceback and never loses work.

- Structural problems (missing folder or file, empty dataset, bad ratios, unknown names,
  a checkpoint that does not fit the data, an output folder in the way) exit with code 2 and
  one line ``error: ...`` on stderr.
- Per-item problems (``tests.helpers.BAD_ITEM_CASES``) are skipped with a warning naming the
  file, counted and listed in the run's summary; the good items are still processed, and
  ``--strict`` makes them errors.
- Untrusted files: a checkpoint whose pickle would run code is refused without running it,
  and the source tree loads torch files with ``weights_only=True`` and YAML with ``safe_load``.
- Interrupted runs leave no complete-looking partial outputs; degenerate geometry is a NaN AI
  and grade 0, never an exception.

The bad inputs are generated here. Scripts run as subprocesses from the repo root; checks of
the same code path that would need another torch start-up call the script's ``main`` in-process.
"""
import ast
import functools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import BAD_ITEM_CASES, add_bad_item, make_tiny_dataset, sigterm_after_first_epoch

ROOT = Path(__file__).resolve().parents[1]
SPLIT_ARGS = ["--train", "0.6", "--val", "0.2", "--test", "0.2"]
TRAIN_FAST = ["--model_name", "convnext_atto_custom", "--head_type", "simcc_2d", "--input_size", "32",
              "--batch_size", "4", "--sigma", "3", "--no-progress"]


def run(*args, timeout=300):
    """A script (or ``-m module``) run with this interpreter from the repo root."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def error_line(returncode, stderr, *needles) -> str:
    """Assert exit 2 and one ``error:`` line (the last, no traceback) containing ``needles``."""
    assert returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    errors = [l for l in lines if l.startswith("error:")]
    assert errors == [lines[-1]], stderr[-3000:]
    for n in needles:
        assert str(n) in errors[0], errors[0]
    return errors[0]


def user_error(main, argv, capsys, *needles) -> str:
    """Run a script's ``main(argv)`` in-process: the same ``cli`` path as the command line."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    return error_line(e.value.code, capsys.readouterr().err, *needles)


def spoil_all(root, start: int = 0):
    """One item per BAD_ITEM_CASES case, on stems img{start}, img{start+1}, ...; returns {case: file}."""
    out, i = {}, start
    for case in BAD_ITEM_CASES:
        out[case] = add_bad_item(root, case, f"img{i:03d}")
        i += case != "non_image_file"
    return out


def assert_listed(entries, spoilt):
    """Every spoilt file is named, with its problem, in a summary file's ``skipped`` entries."""
    text = [f"{e['item']}: {e['problem']}" for e in entries]
    assert len(entries) == len(spoilt), text
    for case, path in spoilt.items():
        assert any(str(path) in t and BAD_ITEM_CASES[case][1] in t for t in text), (case, text)


# ============================================================ split.py / kfold_split.py
@pytest.mark.parametrize("case", list(BAD_ITEM_CASES))
def test_split_skips_lists_and_goes_on(case, tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=5, size=64)
    bad = add_bad_item(ds, case, "img002")
    r = run("split.py", "--dataset", ds, "--out", tmp_path / "out", *SPLIT_ARGS)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "WARNING: skipped" in r.stderr and str(bad) in r.stderr          # the warning names the file
    assert "1 item(s) skipped, listed in splits.json" in r.stdout
    manifest = json.loads((tmp_path / "out" / "splits.json").read_text())
    placed = sorted(s for n in ("train", "val", "test") for s in manifest[n])
    assert placed == [f"img{i:03d}" for i in range(5) if case == "non_image_file" or i != 2]
    assert_listed(manifest["skipped"], {case: bad})
    copied = {p.stem for n in ("train", "val", "test") for p in (tmp_path / "out" / n / "images").glob("*")}
    assert copied == set(placed)


def test_split_strict_stops_at_the_bad_item(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=4, size=64)
    bad = add_bad_item(ds, "corrupt_image", "img001")
    r = run("split.py", "--dataset", ds, "--out", tmp_path / "out", *SPLIT_ARGS, "--strict")
    error_line(r.returncode, r.stderr, bad, "cannot decode image", "--strict")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, needle", [
    ("missing_folder", "dataset folder not found"),
    ("empty_dataset", "empty dataset: no images in"),
    ("all_items_bad", "no usable images in"),
    ("bad_ratios", "split ratios must sum to 1, got 0.5 + 0.1 + 0.1 = 0.7"),
    ("output_not_empty", "(use --overwrite"),
    ("bad_metadata", "metadata.csv: unreadable metadata file"),
])
def test_split_structural_errors_exit_2(case, needle, tmp_path):
    ds, out, extra = tmp_path / "ds", tmp_path / "out", SPLIT_ARGS
    if case == "empty_dataset":
        (ds / "images").mkdir(parents=True)
    elif case == "all_items_bad":
        make_tiny_dataset(ds, n=2, size=64)
        for stem in ("img000", "img001"):
            add_bad_item(ds, "corrupt_image", stem)
    elif case != "missing_folder":
        make_tiny_dataset(ds, n=3, size=64)
    if case == "bad_ratios":
        extra = ["--train", "0.5", "--val", "0.1", "--test", "0.1"]
    if case == "bad_metadata":
        (ds / "metadata.csv").write_bytes(bytes(range(128, 256)))
    if case == "output_not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("earlier work")
    r = run("split.py", "--dataset", ds, "--out", out, *extra)
    error_line(r.returncode, r.stderr, needle)
    if case == "output_not_empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_kfold_split_skips_lists_and_strict_stops(tmp_path):
    ds = make_tiny_dataset(tmp_path / "ds", n=6, size=64)
    spoilt = {c: add_bad_item(ds, c, s) for c, s in (("truncated_image", "img001"), ("keypoint_outside", "img004"))}
    r = run("kfold_split.py", "--src", ds, "--dst", tmp_path / "kf", "--k", "2")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert all(str(p) in r.stderr for p in spoilt.values())
    manifest = json.loads((tmp_path / "kf" / "folds.json").read_text())
    assert sorted(s for f in manifest["folds"].values() for s in f) == ["img000", "img002", "img003", "img005"]
    assert_listed(manifest["skipped"], spoilt)
    r = run("kfold_split.py", "--src", ds, "--dst", tmp_path / "kf2", "--k", "2", "--strict")
    error_line(r.returncode, r.stderr, "--strict", spoilt["truncated_image"])


@pytest.mark.parametrize("case, needle", [
    ("missing_src", "dataset folder not found"),
    ("k_too_large", "--k 9 is larger than the number of images (3)"),
    ("dst_not_empty", "(use --overwrite"),
])
def test_kfold_split_structural_errors_exit_2(case, needle, tmp_path):
    ds, dst = tmp_path / "ds", tmp_path / "kf"
    if case != "missing_src":
        make_tiny_dataset(ds, n=3, size=64)
    if case == "dst_not_empty":
        dst.mkdir()
        (dst / "keep.txt").write_text("earlier work")
    r = run("kfold_split.py", "--src", ds, "--dst", dst, "--k", "9" if case == "k_too_large" else "2")
    error_line(r.returncode, r.stderr, needle)


# ============================================================ data-making scripts
def test_make_synthetic_dataset_structural_errors(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier work")
    r = run("make_synthetic_dataset.py", "--out", tmp_path / "out", "--n", "2", "--no_progress")
    error_line(r.returncode, r.stderr, tmp_path / "out", "--overwrite")
    r = run("make_synthetic_dataset.py", "--out", tmp_path / "new", "--n", "0", "--no_progress")
    error_line(r.returncode, r.stderr, "--n must be at least 1")


MTDDH_GOOD = ["0 0.325 0.545 0.13 0.2 0.28 0.52 2 0.37 0.57 2", "1 0.305 0.64 0.1 0.125 0.31 0.62 2 0.30 0.66 2",
              "0 0.72 0.535 0.12 0.19 0.76 0.51 2 0.68 0.56 2", "1 0.748 0.63 0.1 0.125 0.745 0.61 2 0.75 0.65 2"]


def test_mtddh_converter_skips_lists_and_strict_stops(tmp_path):
    import cv2
    src = tmp_path / "labels"
    src.mkdir()
    for stem, lines in (("good", MTDDH_GOOD), ("short", MTDDH_GOOD[:3])):
        (src / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        cv2.imwrite(str(src / f"{stem}.png"), np.zeros((400, 500), np.uint8))
    r = run("-m", "datasets.mtddh", "--src", src, "--out", tmp_path / "out")
    assert r.returncode == 0 and "converted 1, skipped 1" in r.stdout, r.stderr[-3000:]
    assert "skipped short.txt: wrong line count" in r.stderr
    assert 'short.txt,skipped,"wrong line count' in (tmp_path / "out" / "conversion_log.csv").read_text()
    r = run("-m", "datasets.mtddh", "--src", src, "--out", tmp_path / "out2", "--strict")
    error_line(r.returncode, r.stderr, src / "short.txt", "wrong line count", "--strict")
    r = run("-m", "datasets.mtddh", "--src", tmp_path / "none", "--out", tmp_path / "out3")
    error_line(r.returncode, r.stderr, "label folder not found")


# ============================================================ prediction
class _Evil:
    """Unpickling this object runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(path, marker):
    torch.save({"format": "hipkp-keypoint-checkpoint", "state_dict": {}, "x": _Evil(marker),
                "config": {"model_name": "convnext_atto_custom", "head_type": "simcc_2d", "num_keypoints": 6,
                           "input_size": 32, "layout": "ihdi12"}, "optimizer": {}}, path)
    return path


@pytest.fixture(scope="module")
def kp(tmp_path_factory):
    """Tiny untrained checkpoints (ihdi12 and mtddh8, input 32) and a dataset with every bad item."""
    from models import build_model
    from models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("bad_inputs")
    cfg = dict(side="left", mirror=True, crop_expand=0.10, hist_eq=True, sigma=3.0, epoch=0, metrics={})
    paths = {}
    for layout, k in (("ihdi12", 6), ("mtddh8", 4)):
        model = build_model("convnext_atto_custom", "simcc_2d", k, 32)
        paths[layout] = save_checkpoint(root / f"{layout}.pth", model, dict(cfg, layout=layout))
    ds = make_tiny_dataset(root / "ds", n=12, size=64)
    spoilt = spoil_all(ds)
    good = [f"img{i:03d}" for i in range(8, 12)]
    return {"root": root, "ckpt": paths, "ds": ds, "spoilt": spoilt, "good": good}


def test_predict_skips_lists_and_goes_on(kp, tmp_path):
    out = tmp_path / "pred"
    r = run("predict_hip_crop_keypoints.py", "--kp_left_path", kp["ckpt"]["ihdi12"], "--data", kp["ds"],
            "--output_dir", out, "--use_gt_box", "--device", "cpu", "--no_overlays", "--worst_n", "0")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for path in kp["spoilt"].values():
        assert str(path) in r.stderr, path                        # a warning names each file
    assert f"{len(kp['spoilt'])} item(s) skipped, listed in {out / 'skipped.json'}" in r.stdout
    import pandas as pd
    assert pd.read_csv(out / "predictions.csv")["stem"].tolist() == kp["good"]
    assert_listed(json.loads((out / "skipped.json").read_text())["skipped"], kp["spoilt"])
    assert json.loads((out / "summary.json").read_text())["n_skipped"] == len(kp["spoilt"])
    assert not (out / "predictions.csv.partial").exists()


def test_predict_strict_stops_at_the_first_bad_item(kp, tmp_path, capsys):
    import predict_hip_crop_keypoints as P
    user_error(P.main, ["--kp_left_path", kp["ckpt"]["ihdi12"], "--data", kp["ds"], "--output_dir", tmp_path / "o",
                        "--use_gt_box", "--device", "cpu", "--strict"], capsys, "--strict", kp["ds"])
    assert not (tmp_path / "o" / "predictions.csv").exists()


def test_predict_structural_errors_exit_2(kp, tmp_path, capsys):
    import predict_hip_crop_keypoints as P
    ds, ck = make_tiny_dataset(tmp_path / "ds", n=2, size=64), kp["ckpt"]
    base = ["--data", ds, "--output_dir", tmp_path / "o", "--device", "cpu"]
    user_error(P.main, ["--kp_left_path", ck["ihdi12"], "--use_gt_box", "--data", tmp_path / "none",
                        "--output_dir", tmp_path / "o"], capsys, "dataset folder not found", tmp_path / "none")
    user_error(P.main, ["--kp_left_path", ck["mtddh8"], "--use_gt_box", *base], capsys,
               "the keypoint model uses layout mtddh8 but", "is annotated in ihdi12")
    user_error(P.main, ["--kp_left_path", tmp_path / "none.pth", "--use_gt_box", *base], capsys,
               "keypoint checkpoint not found", "none.pth")
    user_error(P.main, ["--use_gt_box", *base], capsys, "--kp_left_path")
    user_error(P.main, ["--kp_left_path", ck["ihdi12"], "--use_gt_box", "--batch_size", "0", *base], capsys,
               "--batch_size must be at least 1")
    user_error(P.main, ["--kp_left_path", ck["ihdi12"], *base], capsys, "--yolo_weights", "--use_gt_box")
    user_error(P.main, ["--kp_left_path", ck["ihdi12"], "--yolo_weights", tmp_path / "none.pt", *base], capsys,
               "none.pt")
    ckpt = torch.load(ck["ihdi12"], weights_only=True)
    ckpt["config"]["model_name"] = "no_such_backbone"
    torch.save(ckpt, tmp_path / "renamed.pth")
    user_error(P.main, ["--kp_left_path", tmp_path / "renamed.pth", "--use_gt_box", *base], capsys,
               "renamed.pth", "unknown backbone 'no_such_backbone'")
    assert not (tmp_path / "o" / "predictions.csv").exists()


def test_malicious_checkpoint_is_refused_by_predict(kp, tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pth", marker)
    r = run("predict_hip_crop_keypoints.py", "--kp_left_path", evil, "--data", kp["ds"], "--use_gt_box",
            "--output_dir", tmp_path / "o", "--device", "cpu")
    error_line(r.returncode, r.stderr, evil, "refused")
    assert not marker.exists()


def test_predictions_csv_never_looks_complete_after_a_crash(kp, tmp_path, monkeypatch):
    """A run that dies half-way leaves predictions.csv.partial, and no earlier predictions.csv."""
    import utils.pipelines.predict as UP
    out = tmp_path / "o"
    ds = make_tiny_dataset(tmp_path / "ds", n=3, size=64)
    args = dict(kp_left_path=kp["ckpt"]["ihdi12"], use_gt_box=True, device="cpu", batch_size=1, overlays=False,
                progress=False, make_plots=False)
    UP.run_prediction(ds, out, **args)
    assert (out / "predictions.csv").is_file() and (out / "metrics.json").is_file()
    real_row, calls = UP.build_row, []

    def row_then_crash(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash mid-run")
        return real_row(*a, **k)

    monkeypatch.setattr(UP, "build_row", row_then_crash)
    with pytest.raises(RuntimeError, match="simulated"):
        UP.run_prediction(ds, out, **args)
    assert not (out / "predictions.csv").exists() and not (out / "metrics.json").exists()
    partial = (out / "predictions.csv.partial").read_text().splitlines()
    assert len(partial) == 2 and partial[1].startswith("img000,")     # header and the one finished image


# ============================================================ training
def _train_data(root):
    train = make_tiny_dataset(root / "train", n=12, size=64, seed=0)
    make_tiny_dataset(root / "val", n=2, size=64, seed=1)
    return spoil_all(train)


def test_train_skips_bad_items_and_goes_on(tmp_path):
    spoilt = _train_data(tmp_path / "data")
    r = run("train_hip_crop_keypoints.py", "--data_dir", tmp_path / "data", *TRAIN_FAST, "--epochs", "1",
            "--max_steps", "1", "--out", tmp_path / "w", "--log_dir", tmp_path / "logs", "--exp_name", "bad")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    for path in spoilt.values():
        assert str(path) in r.stderr, path
    assert f"{len(spoilt)} item(s) skipped" in r.stderr
    assert (tmp_path / "w" / "bad_best.pth").is_file() and (tmp_path / "w" / "bad_last.pth").is_file()
    skipped = tmp_path / "logs" / "bad_skipped.json"
    assert_listed(json.loads(skipped.read_text())["skipped"], spoilt)


def test_train_structural_errors_exit_2(tmp_path, capsys):
    import train_hip_crop_keypoints as TR
    spoilt = _train_data(tmp_path / "data")
    base = ["--data_dir", tmp_path / "data", *TRAIN_FAST, "--epochs", "1", "--max_steps", "1",
            "--out", tmp_path / "w", "--log_dir", tmp_path / "logs"]
    user_error(TR.main, [*base, "--strict"], capsys, "--strict", tmp_path / "data" / "train")
    user_error(TR.main, [*base, "--model_name", "resnet_nope"], capsys,
               "unknown backbone 'resnet_nope'; known backbones: ")
    user_error(TR.main, [*base, "--head_type", "hourglass"], capsys, "unknown head 'hourglass'; known heads: ")
    # a last checkpoint trained on the other layout cannot resume on this data
    from models import build_model
    from models.checkpoint import save_checkpoint
    other = save_checkpoint(tmp_path / "mtddh_last.pth", build_model("convnext_atto_custom", "simcc_2d", 4, 32),
                            {"layout": "mtddh8", "exp_name": "m8"}, optimizer={}, epoch=1)
    user_error(TR.main, [*base, "--resume", other], capsys,
               "--resume: the checkpoint was trained on mtddh8, the data is ihdi12")
    evil = _evil_checkpoint(tmp_path / "evil.pth", tmp_path / "pwned")    # backbone weights are read safely too
    user_error(TR.main, [*base, "--pretrained", evil], capsys, evil, "not a readable weights file")
    assert not (tmp_path / "pwned").exists()
    assert not list((tmp_path / "w").glob("*_best.pth")) and len(spoilt) == len(BAD_ITEM_CASES)


def test_kfold_scripts_structural_errors_exit_2(kp, tmp_path, capsys):
    import kfold_predict_hip_crop_keypoints as KP
    import kfold_train_hip_crop_keypoints as KT
    user_error(KT.main, ["--data_root", tmp_path / "none", *TRAIN_FAST, "--k", "2", "--out", tmp_path / "w"],
               capsys, "--data_root not found", tmp_path / "none")
    user_error(KP.main, ["--data_root", tmp_path / "none", "--kp_left_tpl", kp["ckpt"]["ihdi12"], "--use_gt_box",
                         "--k", "2", "--output_dir", tmp_path / "o"], capsys, "--data_root not found")
    for i in (1, 2):
        (tmp_path / "kf" / f"fold{i}").mkdir(parents=True)
    user_error(KP.main, ["--data_root", tmp_path / "kf", "--kp_left_tpl", kp["ckpt"]["ihdi12"], "--use_gt_box",
                         "--k", "2", "--output_dir", tmp_path / "o"], capsys, "has no {fold} placeholder")


def test_malicious_checkpoint_is_refused_by_train_resume(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil_last.pth", marker)
    make_tiny_dataset(tmp_path / "data" / "train", n=2, size=64)
    make_tiny_dataset(tmp_path / "data" / "val", n=2, size=64)
    r = run("train_hip_crop_keypoints.py", "--data_dir", tmp_path / "data", *TRAIN_FAST, "--resume", evil,
            "--out", tmp_path / "w", "--log_dir", tmp_path / "logs")
    error_line(r.returncode, r.stderr, "--resume", evil, "refused")
    assert not marker.exists()


@pytest.mark.slow
def test_sigterm_leaves_a_loadable_last_checkpoint_and_resume_continues(tmp_path):
    make_tiny_dataset(tmp_path / "data" / "train", n=4, size=64, seed=0)
    make_tiny_dataset(tmp_path / "data" / "val", n=2, size=64, seed=1)
    out, logs = tmp_path / "w", tmp_path / "logs"
    cmd = [sys.executable, "train_hip_crop_keypoints.py", "--data_dir", str(tmp_path / "data"), *TRAIN_FAST,
           "--epochs", "1000", "--out", str(out), "--log_dir", str(logs), "--exp_name", "sig"]
    returncode, err = sigterm_after_first_epoch(cmd, ROOT, logs / "sig_training_log.csv", 240, 120)
    assert returncode == 143 and "Traceback" not in err, err[-3000:]
    from models.checkpoint import load_keypoint_model, read_checkpoint
    last = read_checkpoint(out / "sig_last.pth")                  # weights_only=True
    load_keypoint_model(out / "sig_last.pth")
    done = int(last["epoch"])
    assert done >= 1 and not list(out.glob(".*.tmp"))             # no temporary file left behind
    r = run("train_hip_crop_keypoints.py", "--data_dir", tmp_path / "data", *TRAIN_FAST, "--out", out,
            "--log_dir", logs, "--resume", out / "sig_last.pth", "--epochs", done + 1)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming sig from {out / 'sig_last.pth'} (epoch {done} done)" in r.stderr
    resumed = read_checkpoint(out / "sig_last.pth")
    assert resumed["epoch"] == done + 1 and resumed["global_step"] > last["global_step"]
    assert len(resumed["history"]) == done + 1


# ============================================================ numerics
def test_degenerate_prediction_gives_nan_ai_and_grade_0_through_evaluate():
    import pandas as pd

    from tests.helpers import _side_points
    from utils.evaluation.metrics import evaluate, prediction_row

    rng = np.random.default_rng(0)
    gt = np.concatenate([_side_points(rng, "left", 1, 256, "ihdi12"), _side_points(rng, "right", 2, 256, "ihdi12")])
    flat = gt.copy()
    flat[8] = flat[6]                                  # right roof line of zero length
    same = gt.copy()
    same[6] = same[2]                                  # both triradiate points equal
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # prediction_row itself stays quiet
        rows = [prediction_row(f"s{i}", p, "ihdi12", gt_kps=gt) for i, p in enumerate((gt, flat, same))]
    assert rows[1]["pred_ihdi_right"] == 0 and np.isnan(rows[1]["pred_ai_right"])
    assert rows[1]["pred_ihdi_left"] == rows[1]["gt_ihdi_left"] and np.isfinite(rows[1]["pred_ai_left"])
    assert rows[2]["pred_ihdi_left"] == rows[2]["pred_ihdi_right"] == 0   # no H-line: both hips
    assert np.isnan(rows[2]["pred_ai_left"]) and np.isnan(rows[2]["pred_ai_right"])
    m = evaluate(pd.DataFrame(rows), layout="ihdi12")
    assert m["n_images"] == 3 and m["ihdi"]["pooled"]["n_ungradable_pred"] == 3
    assert m["ihdi"]["pooled"]["n"] == 3 and m["ihdi"]["pooled"]["accuracy"] == 1.0
    assert m["ai"]["pooled"]["mae"] == pytest.approx(0.0, abs=1e-6)
    json.dumps(m, allow_nan=False)                     # NaN became null: valid JSON


# ============================================================ untrusted files: source greps
@functools.lru_cache(maxsize=1)
def _source_calls():
    """[(file:line, ast.Call)] of every call in the repository's own Python files (no .venv, outputs)."""
    skip = {"runs", "dataset", "weights", "logs", "results", "node_modules", "__pycache__"}
    calls = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
        for name in sorted(f for f in files if f.endswith(".py")):
            path = Path(folder) / name
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call):
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def _calls(pred):
    """file:line of every call in the source tree for which ``pred(node)``."""
    return [where for where, node in _source_calls() if pred(node)]


def _is(node, module, names):
    f = node.func
    return isinstance(f, ast.Attribute) and f.attr in names and isinstance(f.value, ast.Name) and f.value.id == module


def test_every_torch_load_uses_weights_only():
    def unsafe(node):
        if not _is(node, "torch", {"load"}):
            return False
        kw = {k.arg: k.value for k in node.keywords}
        return not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True)

    assert _calls(lambda n: _is(n, "torch", {"load"}))          # the check does see the calls
    assert _calls(unsafe) == []


def test_yaml_is_read_with_safe_load_only():
    unsafe = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all"}
    assert _calls(lambda n: _is(n, "yaml", {"safe_load"}))
    assert _calls(lambda n: _is(n, "yaml", unsafe)) == []
    assert _calls(lambda n: _is(n, "pickle", {"load", "loads"})) == []
