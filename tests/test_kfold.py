"""K-fold training and evaluation end to end on a tiny phantom set (CPU, tiny model)."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from datasets.formats import load_image_list, read_metadata
from datasets.splits import make_kfold
from datasets.synthetic import generate_dataset
from utils.errors import UserError
from utils.pipelines.kfold_train import run_kfold_training, write_fold_lists
from utils.pipelines.train_setup import tensorboard_installed

ROOT = Path(__file__).resolve().parents[1]
K = 2


def _cfg(tmp, out):
    return dict(model_name="convnext_atto_custom", head_type="simcc_2d", input_size=32, epochs=1,
                batch_size=8, learning_rate=1e-3, seed=7, deterministic=True, progress=False,
                out=str(tmp / out / "weights"), log_dir=str(tmp / out / "logs"), exp_name="cv", workers=0)


@pytest.fixture(scope="module")
def kfold_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kfold")
    ds = generate_dataset(tmp / "ds", n=16, size=128, seed=3, patients=10, progress=False)
    make_kfold(ds, tmp / "data_kfold", k=K, seed=1, stratify=True, group_by="patient_id")
    return tmp


def _stems(paths):
    return {Path(p).stem for p in paths}


def test_inner_lists_disjoint_cover_and_keep_patients_whole(kfold_data):
    root = kfold_data / "data_kfold"
    meta = read_metadata(kfold_data / "ds")
    all_stems = set(meta)
    for fold in range(1, K + 1):
        lists = write_fold_lists(root, fold, K, "outer_inner", inner_val_ratio=0.25, inner_seed=5)
        train = _stems(Path(lists["train"]).read_text().split())
        val = _stems(Path(lists["val"]).read_text().split())
        test = {p.stem for p in (Path(lists["test"]) / "images").iterdir()}
        assert train and val and test
        assert not (train & val) and not (train & test) and not (val & test)
        assert train | val | test == all_stems
        pid = {s: meta[s]["patient_id"] for s in all_stems}
        assert not {pid[s] for s in train | val} & {pid[s] for s in test}, "a patient straddles train and test"
        assert not {pid[s] for s in train} & {pid[s] for s in val}, "a patient straddles inner train and val"
        # written once: a second call returns the same lists, other settings are refused
        again = write_fold_lists(root, fold, K, "outer_inner", inner_val_ratio=0.25, inner_seed=5)
        assert _stems(Path(again["train"]).read_text().split()) == train
        with pytest.raises(UserError, match="other inner-split settings"):
            write_fold_lists(root, fold, K, "outer_inner", inner_val_ratio=0.3, inner_seed=5)
        # the lists load as records with labels from their own dataset folders
        recs = load_image_list(lists["train"])
        assert all(r.keypoints is not None and r.boxes is not None for r in recs)


def test_folds_as_separate_jobs_equal_one_run(kfold_data):
    root = kfold_data / "data_kfold"
    kw = dict(k=K, inner_val_ratio=0.25, inner_seed=5)
    run_kfold_training(_cfg(kfold_data, "jobs"), root, folds="1", **kw)
    run_kfold_training(_cfg(kfold_data, "jobs"), root, folds="2", **kw)
    separate = run_kfold_training(_cfg(kfold_data, "jobs"), root, summarize_only=True, **kw)
    together = run_kfold_training(_cfg(kfold_data, "all"), root, **kw)
    a = Path(separate["paths"]["csv"]).read_text()
    b = Path(together["paths"]["csv"]).read_text()
    assert a == b
    rows = list(csv.DictReader(open(separate["paths"]["csv"])))
    assert [r["fold"] for r in rows] == ["1", "2", "mean", "sd"]
    for fold in (1, 2):
        w = kfold_data / "jobs" / "weights"
        assert (w / f"cv_fold{fold}_best.pth").is_file()
        cfg = json.loads((w / f"cv_fold{fold}_config.json").read_text())
        assert cfg["fold"] == fold and cfg["model_name"] == "convnext_atto_custom"
    assert Path(separate["paths"]["curves"]).stat().st_size > 0
    # TensorBoard (on by default where it is installed): one run per fold under logs/tb/<exp_name>
    if tensorboard_installed():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        tb = kfold_data / "all" / "logs" / "tb" / "cv"
        assert sorted(p.name for p in tb.iterdir()) == ["fold1", "fold2"]
        for fold in ("fold1", "fold2"):
            ea = EventAccumulator(str(tb / fold))
            ea.Reload()
            assert [e.step for e in ea.Scalars("val/px_error")] == [1], fold
    # finished folds are skipped, not retrained
    log = kfold_data / "jobs" / "logs" / "cv_fold1_training_log.csv"
    before = log.stat().st_mtime_ns
    run_kfold_training(_cfg(kfold_data, "jobs"), root, folds="1", **kw)
    assert log.stat().st_mtime_ns == before


def test_kfold_predict_writes_paper_table(kfold_data):
    w = kfold_data / "jobs" / "weights"
    if not (w / "cv_fold2_best.pth").exists():
        pytest.skip("needs the k-fold training test's weights")
    out = kfold_data / "results"
    r = subprocess.run([sys.executable, "kfold_predict_hip_crop_keypoints.py", "--data_root",
                        str(kfold_data / "data_kfold"), "--k", str(K), "--kp_left_tpl", str(w / "cv_fold{fold}_best.pth"),
                        "--use_gt_box", "--output_dir", str(out), "--device", "cpu", "--max_overlays", "2"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (out / "kfold_summary.md").read_text()
    assert "±" in md and "|" in md and "AI" in md
    assert (out / "kfold_summary.tex").read_text().count("\\begin{tabular}") == 1
    assert (out / "oof_predictions.csv").is_file() and (out / "oof_metrics.json").is_file()
    n_oof = sum(1 for _ in open(out / "oof_predictions.csv")) - 1
    assert n_oof == 16                                   # every image predicted once, out of fold
    r = subprocess.run([sys.executable, "kfold_predict_hip_crop_keypoints.py", "--compare", str(out / "fold1"),
                        str(out), "--names", "single", "cv", "--output_dir", str(kfold_data / "cmp")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    cmp_md = (kfold_data / "cmp" / "comparison.md").read_text()
    assert "single" in cmp_md and "cv" in cmp_md
    # the two runs share fold 1's hips: a paired test of their per-hip AI errors
    paired = json.loads((kfold_data / "cmp" / "paired_tests.json").read_text())["single vs cv"]
    n_fold1 = sum(1 for _ in open(out / "fold1" / "predictions.csv")) - 1
    assert paired["n_pairs"] + paired["n_missing"] == 2 * n_fold1 and paired["n_only_a"] == 0
    assert paired["n_only_b"] == 2 * (n_oof - n_fold1)
    assert "Paired tests of the per-hip AI errors" in cmp_md and "single vs cv" in cmp_md


def test_kfold_train_errors(tmp_path):
    r = subprocess.run([sys.executable, "kfold_train_hip_crop_keypoints.py", "--data_root", str(tmp_path / "nope"),
                        "--k", "2", "--out", str(tmp_path / "w"), "--log_dir", str(tmp_path / "l")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "kfold_train_hip_crop_keypoints.py", "--k", "2", "--exp_name", "none",
                        "--summarize_only", "--out", str(tmp_path / "w"), "--log_dir", str(tmp_path / "l")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "no finished folds" in r.stderr


def test_a_finished_fold_is_skipped_only_with_the_same_settings(tmp_path, monkeypatch, capsys):
    """A finished fold with other settings is refused with one line naming them (never skipped
    silently); the same settings skip it; --overwrite retrains it; run-only settings may differ."""
    import kfold_train_hip_crop_keypoints as script
    root = tmp_path / "data_kfold"
    for i in (1, 2):
        (root / f"fold{i}" / "images").mkdir(parents=True)
    trained = []

    def fake_train(cfg):
        trained.append(cfg["exp_name"])
        return {"best_metrics": {}, "epochs_run": 1, "paths": {}}

    monkeypatch.setattr("utils.pipelines.kfold_train.train", fake_train)
    monkeypatch.setattr("utils.pipelines.kfold_train.summarize_kfold", lambda *a, **k: {})
    base = ["--data_root", str(root), "--k", "2", "--mode", "val_as_test", "--exp_name", "cv", "--out",
            str(tmp_path / "w"), "--log_dir", str(tmp_path / "l"), "--input_size", "64", "--head_type", "simcc_2d"]
    script.main([*base, "--device", "cpu"])
    assert trained == ["cv_fold1", "cv_fold2"]
    script.main([*base, "--device", "auto", "--workers", "0", "--no-progress"])      # run-only settings: skipped
    assert trained == ["cv_fold1", "cv_fold2"]
    assert "fold 1: already finished with the same settings" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:                               # another size and head: refused
        script.main([*base[:-4], "--input_size", "96", "--head_type", "heatmap", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and trained == ["cv_fold1", "cv_fold2"]
    assert "fold 1 finished with other settings" in err[0]
    assert "input_size 64 -> 96" in err[0] and "head_type 'simcc_2d' -> 'heatmap'" in err[0] and "--overwrite" in err[0]
    with pytest.raises(SystemExit):                                     # the k-fold settings count too
        script.main([*base, "--mode", "outer_inner", "--device", "cpu"])
    assert "mode 'val_as_test' -> 'outer_inner'" in capsys.readouterr().err
    script.main([*base[:-4], "--input_size", "96", "--folds", "2", "--overwrite", "--device", "cpu"])
    assert trained == ["cv_fold1", "cv_fold2", "cv_fold2"]              # --overwrite retrains it
    (tmp_path / "w" / "cv_fold1_config.json").unlink()                 # settings unknown: not skipped either
    with pytest.raises(SystemExit):
        script.main([*base, "--folds", "1", "--device", "cpu"])
    assert "its settings were not saved" in capsys.readouterr().err
