"""split.py / kfold_split.py and datasets.splits."""
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from datasets.formats import read_metadata
from datasets.splits import (make_kfold, make_splits, match_split_stems, ratio_assign, read_split_file)
from helpers import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args):
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def stems_in(folder):
    return sorted(p.stem for p in (Path(folder) / "images").iterdir())


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """40 images of 12 patients (some patients have several images)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("ds") / "tiny", n=40, size=64, patients=12, seed=1)


def test_ratio_split_layout_and_data_yaml(ds, tmp_path):
    out = tmp_path / "data"
    r = run("split.py", "--dataset", ds, "--out", out, "--train", 0.7, "--val", 0.2, "--test", 0.1, "--seed", 3)
    assert r.returncode == 0, r.stderr
    parts = {n: stems_in(out / n) for n in ("train", "val", "test")}
    assert {n: len(v) for n, v in parts.items()} == {"train": 28, "val": 8, "test": 4}
    everything = sum(parts.values(), [])
    assert sorted(everything) == stems_in(ds) and len(set(everything)) == 40   # disjoint and complete
    for name, stems in parts.items():
        d = out / name
        for sub, ext in (("annotations", ".csv"), ("detections", ".json"), ("yolo_labels", ".txt"),
                         ("labels", ".txt")):
            assert sorted(p.stem for p in (d / sub).glob(f"*{ext}") if p.name != "classes.txt") == stems
        assert (d / "yolo_labels" / "classes.txt").read_text().split() == ["LeftHip", "RightHip"]
        assert not (d / "labels" / "classes.txt").exists()
        assert (d / "labels" / f"{stems[0]}.txt").read_text() == (ds / "yolo_labels" / f"{stems[0]}.txt").read_text()
        assert sorted(read_metadata(d)) == stems
        assert not any(p.is_symlink() for p in (d / "images").iterdir())
    cfg = yaml.safe_load((out / "data.yaml").read_text())
    assert "download" not in cfg
    assert Path(cfg["path"]).is_absolute() and Path(cfg["path"]) == out.resolve()
    assert (cfg["train"], cfg["val"], cfg["test"]) == ("train/images", "val/images", "test/images")
    assert cfg["names"] == {0: "LeftHip", 1: "RightHip"} and cfg["nc"] == 2
    for k in ("train", "val", "test"):   # Ultralytics' image -> label rule finds every label
        for img in (Path(cfg["path"]) / cfg[k]).iterdir():
            lab = str(img).replace("/images/", "/labels/").rsplit(".", 1)[0] + ".txt"
            assert Path(lab).is_file()
    manifest = json.loads((out / "splits.json").read_text())
    assert manifest["seed"] == 3 and manifest["train"] == parts["train"]


def test_deterministic_for_a_seed(ds, tmp_path):
    a = make_splits(ds, tmp_path / "a", 0.6, 0.2, 0.2, seed=7)
    b = make_splits(ds, tmp_path / "b", 0.6, 0.2, 0.2, seed=7)
    c = make_splits(ds, tmp_path / "c", 0.6, 0.2, 0.2, seed=8)
    lists = [json.loads((tmp_path / x / "splits.json").read_text()) for x in "abc"]
    assert lists[0]["train"] == lists[1]["train"] and lists[0]["test"] == lists[1]["test"]
    assert lists[0]["train"] != lists[2]["train"]
    assert a["counts"] == b["counts"] == c["counts"] == {"train": 24, "val": 8, "test": 8}


def _patients_by_split(out, names):
    where = defaultdict(set)
    for n in names:
        for stem, row in read_metadata(out / n).items():
            where[row["patient_id"]].add(n)
    return where


def test_group_by_keeps_patients_together(ds, tmp_path):
    out = tmp_path / "g"
    r = run("split.py", "--dataset", ds, "--out", out, "--group_by", "patient_id", "--stratify", "--link")
    assert r.returncode == 0, r.stderr
    where = _patients_by_split(out, ["train", "val", "test"])
    assert len(where) == 12 and all(len(v) == 1 for v in where.values())
    n = sum(len(stems_in(out / s)) for s in ("train", "val", "test"))
    assert n == 40
    img = next((out / "train" / "images").iterdir())
    assert img.is_symlink() and Path(img.readlink()).is_absolute() and img.resolve().parent == (ds / "images").resolve()


def test_kfold_disjoint_covering_grouped(ds, tmp_path):
    dst = tmp_path / "kf"
    r = run("kfold_split.py", "--src", ds, "--dst", dst, "--k", 4, "--group_by", "patient_id", "--seed", 5)
    assert r.returncode == 0, r.stderr
    folds = {f"fold{i}": stems_in(dst / f"fold{i}") for i in range(1, 5)}
    allstems = sum(folds.values(), [])
    assert sorted(allstems) == stems_in(ds) and len(set(allstems)) == len(allstems)
    assert all(folds.values())
    where = _patients_by_split(dst, folds)
    assert all(len(v) == 1 for v in where.values())
    manifest = json.loads((dst / "folds.json").read_text())
    assert manifest["k"] == 4 and manifest["seed"] == 5 and manifest["group_by"] == "patient_id"
    assert manifest["folds"] == folds
    for i in range(1, 5):
        cfg = yaml.safe_load((dst / f"data_fold{i}.yaml").read_text())
        assert "download" not in cfg and Path(cfg["path"]).is_absolute()
        assert cfg["val"] == f"fold{i}/images"
        assert sorted(cfg["train"]) == sorted(f"fold{j}/images" for j in range(1, 5) if j != i)
        assert all((Path(cfg["path"]) / t).is_dir() for t in cfg["train"])
        assert sorted(p.stem for p in (dst / f"fold{i}" / "labels").iterdir()) == folds[f"fold{i}"]
    # same seed -> same folds (rerun over the old output)
    make_kfold(ds, dst, k=4, seed=5, group_by="patient_id", overwrite=True)
    assert json.loads((dst / "folds.json").read_text())["folds"] == folds


def test_stratified_ratio_assign_balances_grades():
    rng = np.random.default_rng(0)
    grades = rng.choice(["1", "2", "3", "4"], size=300, p=[0.6, 0.25, 0.1, 0.05])
    ratios = {"train": 0.7, "val": 0.15, "test": 0.15}
    for groups in (None, [f"p{i // 3}" for i in range(300)]):   # also with patients of 3 images
        split = np.array(ratio_assign(300, ratios, seed=1, strata=grades, groups=groups))
        for name, frac in ratios.items():
            assert abs((split == name).sum() - frac * 300) <= 3
            for g in "1234":
                n_g = (grades == g).sum()
                assert abs(((split == name) & (grades == g)).sum() - frac * n_g) <= 3, (name, g)
        if groups is not None:
            per_patient = defaultdict(set)
            for p, s in zip(groups, split):
                per_patient[p].add(s)
            assert all(len(v) == 1 for v in per_patient.values())
    # without stratification a rare grade may well be unbalanced; with it, it never is far off
    plain = np.array(ratio_assign(300, ratios, seed=1))
    assert Counter(plain) == {"train": 210, "val": 45, "test": 45}


def test_stratified_kfold_and_grades_from_annotations(tmp_path):
    ds = make_tiny_dataset(tmp_path / "s", n=60, size=48, seed=4)
    (ds / "metadata.csv").unlink()          # grades must then come from the annotations
    s = make_kfold(ds, tmp_path / "kf", k=3, seed=0, stratify=True)
    gc = s["grade_counts"]
    totals = Counter()
    for f in gc.values():
        totals.update(f)
    for g, n in totals.items():
        per_fold = [gc[f].get(g, 0) for f in gc]
        assert max(per_fold) - min(per_fold) <= 1, (g, per_fold)   # StratifiedKFold's guarantee
    assert sum(s["counts"].values()) == 60


def test_stratify_without_grades_warns(tmp_path, caplog):
    ds = make_tiny_dataset(tmp_path / "s", n=10, size=32)
    (ds / "metadata.csv").unlink()
    for f in (ds / "annotations").iterdir():
        f.unlink()
    s = make_splits(ds, tmp_path / "o", 0.8, 0.1, 0.1, stratify=True)
    assert "not stratifying" in caplog.text and s["counts"] == {"train": 8, "val": 1, "test": 1}


@pytest.mark.parametrize("args, message", [
    (["--train", 0.8, "--val", 0.1, "--test", 0.2], "sum to 1"),
    (["--train", 1.2, "--val", -0.1, "--test", -0.1], "non-negative"),
    (["--group_by", "hospital"], "no column 'hospital'"),
])
def test_split_errors(ds, tmp_path, args, message):
    r = run("split.py", "--dataset", ds, "--out", tmp_path / "o", *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()


def test_split_errors_missing_empty_existing(ds, tmp_path):
    r = run("split.py", "--dataset", tmp_path / "nope", "--out", tmp_path / "o")
    assert r.returncode == 2 and "not found" in r.stderr
    (tmp_path / "empty" / "images").mkdir(parents=True)
    r = run("split.py", "--dataset", tmp_path / "empty", "--out", tmp_path / "o")
    assert r.returncode == 2 and "empty dataset" in r.stderr
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = run("split.py", "--dataset", ds, "--out", out)
    assert r.returncode == 2 and "--overwrite" in r.stderr and not (out / "train").exists()
    assert len(r.stderr.strip().splitlines()) == 1
    r = run("split.py", "--dataset", ds, "--out", out, "--overwrite")
    assert r.returncode == 0 and (out / "keep.txt").exists() and (out / "data.yaml").exists()


@pytest.mark.parametrize("args, message", [
    (["--k", 1], "at least 2"),
    (["--k", 13, "--group_by", "patient_id"], "larger than the number of patient groups (12)"),
    (["--k", 41], "larger than the number of images (40)"),
])
def test_kfold_errors(ds, tmp_path, args, message):
    r = run("kfold_split.py", "--src", ds, "--dst", tmp_path / "kf", *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_splits_file_simple_form(ds, tmp_path, caplog):
    spec = {"train": ["img000", "img001", "img002.png"], "val": ["img003"], "test": ["img004", "ghost1", "ghost2"]}
    f = tmp_path / "s.json"
    f.write_text(json.dumps(spec))
    s = make_splits(ds, tmp_path / "o", splits_file=f)
    assert s["counts"] == {"train": 3, "val": 1, "test": 1}
    assert stems_in(tmp_path / "o" / "train") == ["img000", "img001", "img002"]
    assert s["missing"] == ["ghost1", "ghost2"] and len(s["unassigned"]) == 35
    assert "2 listed image(s) are not in" in caplog.text and "35 image(s)" in caplog.text
    # our own splits.json reads back as a split file and reproduces the split
    s2 = make_splits(ds, tmp_path / "o2", splits_file=tmp_path / "o" / "splits.json")
    assert s2["counts"] == s["counts"]
    f.write_text(json.dumps({"train": ["img000"], "test": ["img000"]}))
    r = run("split.py", "--dataset", ds, "--out", tmp_path / "o3", "--splits", f)
    assert r.returncode == 2 and "listed in two splits" in r.stderr


def test_match_split_stems_mtddh_names():
    lists = {"train": ["dataset1_train_a1", "dataset1_validation_h1"], "test": ["dataset2_00124348_img.jpg"]}
    assign, missing, unassigned = match_split_stems(lists, ["a1", "00124348", "other", "dataset1_validation_h1"])
    assert assign == {"a1": "train", "dataset1_validation_h1": "train", "00124348": "test"}
    assert missing == [] and unassigned == ["other"]


def test_real_mtddh_split_file(shared_dir, tmp_path):
    import cv2
    split_file = shared_dir / "mtddh_labels" / "dataset_splits.json"
    stems = sorted(p.stem for p in (shared_dir / "mtddh_labels").glob("dataset*_*.txt"))
    assert len(stems) == 48
    ds = tmp_path / "mtddh"
    (ds / "images").mkdir(parents=True)
    for s in stems:
        cv2.imwrite(str(ds / "images" / f"{s}.png"), np.zeros((8, 8), np.uint8))
    lists = read_split_file(split_file)
    total = sum(len(v) for v in lists.values())
    expect = {n: len(set(lists[n]) & set(stems)) for n in ("train", "val", "test")}
    s = make_splits(ds, tmp_path / "o", splits_file=split_file)
    assert s["counts"] == expect and sum(expect.values()) == 48
    assert s["unassigned"] == [] and len(s["missing"]) == total - 48
    assert stems_in(tmp_path / "o" / "val") == sorted(set(lists["val"]) & set(stems))
