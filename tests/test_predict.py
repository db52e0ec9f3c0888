"""Prediction and evaluation (utils/pipelines/predict.py, predict_hip_crop_keypoints.py), end to end on CPU.

- A *perfect model* proves the crop -> image mapping exact: a stand-in network matches each
  crop it is given to the crop the TRAINING code (``HipCropDataset``, no augmentation) makes
  for the same image and side, and answers with that sample's training target (the GT
  keypoints in crop pixels, model order, mirrored where the training code mirrors). Run
  through ``run_prediction`` unchanged, the GT keypoints must come back to < 0.05 px on
  both sides, for one model serving both hips, a right-side model, two models, and mtddh8.
- Tiny real checkpoints (convnext_atto_custom, input 64, two optimizer steps on phantoms):
  the script as a subprocess, ``--model_name`` mismatch, two keypoint paths, mtddh8.
- Unlabelled real films (../shared/real_xray, JPEG and JPEG 2000 DICOM) and an undetected
  side, with the YOLO detector replaced by a fake that returns fixed boxes.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.helpers import train_tiny_keypoints
import torch

import predict_hip_crop_keypoints as script
import utils.pipelines.detection
import utils.pipelines.predict as P
from datasets.crops import IMAGENET_MEAN, IMAGENET_STD, HipCropDataset, preprocess_crop
from datasets.formats import load_dataset, read_annotation
from datasets.layouts import SIDES, get_layout
from datasets.splits import make_splits
from datasets.synthetic import generate_dataset
from models import build_codec
from models.checkpoint import load_keypoint_model
from utils.cropping import crop_points_to_side, side_crop_matrix, warp
from utils.pipelines.detection import Detection
from utils.errors import UserError
from utils.hip_geometry import acetabular_index, ihdi_grade
from utils.evaluation.metrics import read_predictions

ROOT = Path(__file__).resolve().parents[1]
SIZE = 160          # phantom films, pixels
KP_SIZE = 64        # keypoint model input


# ---------------------------------------------------------------------------- fixtures
def _phantom_split(root: Path, layout: str, seed: int) -> Path:
    generate_dataset(root / "ds", 12, seed=seed, size=SIZE, layout=layout, progress=False)
    make_splits(root / "ds", root / "data", train=0.5, val=0.17, test=0.33, seed=1)
    return root / "data"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny phantom split (ihdi12): 6 train, 2 val, 4 test films."""
    return _phantom_split(tmp_path_factory.mktemp("pred_ihdi12"), "ihdi12", seed=0)


@pytest.fixture(scope="module")
def data_mtddh8(tmp_path_factory):
    return _phantom_split(tmp_path_factory.mktemp("pred_mtddh8"), "mtddh8", seed=5)



def _train_tiny(data_dir: Path, out: Path, exp: str, **kw) -> Path:
    return train_tiny_keypoints(data_dir, out, exp, KP_SIZE, **kw)


@pytest.fixture(scope="module")
def ckpt_left(data, tmp_path_factory):
    """side=left, mirror on: one model serves both hips."""
    return _train_tiny(data, tmp_path_factory.mktemp("kp_left"), "tiny_left")


@pytest.fixture(scope="module")
def ckpt_right(data, tmp_path_factory):
    """side=right, mirror off: serves only the right hip, unmirrored."""
    return _train_tiny(data, tmp_path_factory.mktemp("kp_right"), "tiny_right", side="right", mirror=False)


def _csv(out: Path) -> pd.DataFrame:
    return read_predictions(out / "predictions.csv")


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


# ---------------------------------------------------------------------------- the perfect model
class PerfectModel:
    """Stands in for a keypoint network of one side (``side``; the other side mirrored in).

    Each input crop is matched to the nearest training-time sample of ``HipCropDataset``
    (same records, no augmentation); the match must be exact, which also shows that
    prediction crops and training crops agree. The output is that sample's training target,
    encoded so that the codec decodes it back exactly: SimCC logits with all the mass on the
    two bins around the point (soft-argmax then returns the point itself), regression
    coordinates, or the heatmap codec's own Gaussian targets (``sigma`` input pixels; DARK
    decodes them exactly where the blur's zero padding does not reach the peak).
    """

    def __init__(self, records, layout, side, head_type, input_size=KP_SIZE, flipped=False, sigma=6.0):
        self.ds = HipCropDataset(records, input_size, side=side, mirror=True, augment=None, layout=layout,
                                 threads=1)
        items = [self.ds[i] for i in range(len(self.ds))]
        self.images = torch.stack([it["image"] for it in items])         # (N, 3, S, S)
        self.targets = torch.stack([it["keypoints"] for it in items])    # (N, P, 2) crop px, model order
        self.samples = list(self.ds.samples)
        self.n_flipped = 0               # crops answered that were horizontally flipped samples
        if flipped:   # an exactly mirror-equivariant model: also knows every sample flipped (flip test)
            flip_t = self.targets[:, list(get_layout(layout).mirror_perm)].clone()
            flip_t[..., 0] = (input_size - 1) - flip_t[..., 0]
            self.images = torch.cat([self.images, self.images.flip(-1)])
            self.targets = torch.cat([self.targets, flip_t])
            self.samples += self.samples
        self.head_type, self.size = head_type, input_size
        self.codec = build_codec(head_type, input_size, sigma=sigma)
        self.served = []                 # (stem, image side, mirrored) of every crop answered
        self.conf = {}                   # (stem, image side) -> the confidence answered, model order
        self.match_dist, self.runner_up = 0.0, np.inf
        self.config = dict(model_name="perfect", head_type=head_type, input_size=input_size, split_ratio=2.0,
                           sigma=sigma, layout=get_layout(layout).name, side=side, mirror=True, crop_expand=0.10,
                           num_keypoints=get_layout(layout).points_per_side, hist_eq=True,
                           mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
                           hflip=0.5 if flipped else 0.0)   # the flip test needs a model that knows both orientations

    def to(self, *a, **k):
        return self

    def eval(self):
        return self

    def __call__(self, x):
        d = (x[:, None].float() - self.images[None]).abs().flatten(2).amax(-1)    # (B, N) max abs diff
        best = d.topk(2, dim=1, largest=False)
        self.match_dist = max(self.match_dist, float(best.values[:, 0].max()))
        self.runner_up = min(self.runner_up, float(best.values[:, 1].min()))
        idx = best.indices[:, 0]
        for i in idx.tolist():
            s = self.samples[i]
            self.served.append((s.stem, s.side, s.mirrored))
            self.n_flipped += int(i >= len(self.ds.samples))
        kps = self.targets[idx].double()                                    # (B, P, 2)
        if self.head_type == "direct_regression":
            return {"coords": ((kps + 0.5) / self.size).float()}
        if self.head_type == "heatmap":
            return self.codec.encode(kps.float())[0]
        mu = kps * self.codec.split_ratio                                   # in bins
        lo = mu.floor().long()
        frac = mu - lo
        for (stem, side, _), c in zip(self.served[-len(idx):], torch.maximum(frac, 1 - frac).mean(-1)):
            self.conf[(stem, side)] = c.numpy()
        n = self.codec.num_bins
        assert lo.min() >= 0 and lo.max() + 1 < n, "a GT keypoint lies outside its crop"
        p = torch.zeros(*kps.shape, n, dtype=torch.float64)
        p.scatter_(-1, lo[..., None], (1 - frac)[..., None])
        p.scatter_add_(-1, (lo + 1)[..., None], frac[..., None])
        logits = torch.where(p > 0, p.clamp_min(1e-300).log(), torch.full_like(p, -1e4)).float()
        return {"x": logits[:, :, 0], "y": logits[:, :, 1]}


def _install_perfect(monkeypatch, tmp_path, records, layout, models, flipped=False, sigma=6.0):
    """``models``: {name: (side, head_type)} -> dummy checkpoint paths; ``load_keypoint_model``
    returns the matching PerfectModel (``flipped``: one that also answers flipped crops)."""
    fakes, paths = {}, {}
    for name, (side, head) in models.items():
        p = tmp_path / f"{name}.pth"
        p.write_bytes(b"not read")
        fakes[str(p)] = PerfectModel(records, layout, side, head, flipped=flipped, sigma=sigma)
        paths[name] = str(p)

    def load(path, device="cpu"):
        m = fakes[str(path)]
        return m, m.codec, m.config

    monkeypatch.setattr("models.checkpoint.load_keypoint_model", load)
    return paths, fakes


def _check_exact(out: Path, split: Path, layout: str):
    """predictions.csv == GT to < 0.05 px; GT AI/IHDI columns == hip_geometry on the files;
    metrics: IHDI accuracy 1, AI MAE ~0."""
    lay = get_layout(layout)
    df = _csv(out)
    stems = sorted(p.stem for p in (split / "images").iterdir())
    assert sorted(df["stem"]) == stems                                  # one row per image
    assert (df["status"] == "ok").all() and (df["layout"] == lay.name).all()
    # ground-truth boxes: IoU 1 and no detector confidence
    assert (df[[f"iou_{s}" for s in SIDES]] == 1.0).all().all()
    assert df[[f"det_conf_{s}" for s in SIDES]].isna().all().all()
    for _, row in df.iterrows():
        gt = read_annotation(split / "annotations" / f"{row['stem']}.csv")
        pred = np.array([[row[f"pred_x_{j}"], row[f"pred_y_{j}"]] for j in range(lay.num_points)])
        gt_cols = np.array([[row[f"gt_x_{j}"], row[f"gt_y_{j}"]] for j in range(lay.num_points)])
        np.testing.assert_allclose(gt_cols, gt, atol=1e-9)
        err = np.linalg.norm(pred - gt, axis=1)
        assert err.max() < 0.05, (row["stem"], err)
        ai, grades = acetabular_index(gt, lay.name), ihdi_grade(gt, lay.name)
        for k, s in enumerate(SIDES):
            assert row[f"gt_ai_{s}"] == pytest.approx(ai[k], abs=1e-9)
            assert int(row[f"gt_ihdi_{s}"]) == int(grades[k])
            assert int(row[f"pred_ihdi_{s}"]) == int(grades[k])
            assert abs(row[f"pred_ai_{s}"] - ai[k]) < 0.05
    m = _metrics(out)
    assert m["n_images"] == len(stems)
    assert m["ihdi"]["pooled"]["accuracy"] == 1.0 and m["ihdi"]["pooled"]["n"] == 2 * len(stems)
    assert m["ai"]["pooled"]["mae"] < 0.05
    assert m["keypoints"]["px"]["pooled"]["max"] < 0.05
    assert m["detection"]["pooled"]["recall"] == 1.0
    return df


PERFECT_CASES = {
    # name: (layout, {checkpoint: (model side, head)}, predict args, crops each model must serve)
    "one_left_model_simcc": ("ihdi12", {"L": ("left", "simcc_2d")}, {"kp_left_path": "L"},
                             {"L": {("left", False), ("right", True)}}),
    "one_right_model_regression": ("ihdi12", {"R": ("right", "direct_regression")}, {"kp_right_path": "R"},
                                   {"R": {("right", False), ("left", True)}}),
    "left_and_right_models": ("ihdi12", {"L": ("left", "simcc_2d"), "R": ("right", "simcc_2d")},
                              {"kp_left_path": "L", "kp_right_path": "R"},
                              {"L": {("left", False)}, "R": {("right", False)}}),
    "mtddh8_one_left_model": ("mtddh8", {"L": ("left", "simcc_2d")}, {"kp_left_path": "L"},
                              {"L": {("left", False), ("right", True)}}),
}


@pytest.mark.parametrize("case", list(PERFECT_CASES))
def test_perfect_model_maps_crops_back_exactly(case, request, tmp_path, monkeypatch):
    layout, models, args, expect = PERFECT_CASES[case]
    split = request.getfixturevalue("data_mtddh8" if layout == "mtddh8" else "data") / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    paths, fakes = _install_perfect(monkeypatch, tmp_path, records, layout, models)
    out = tmp_path / "out"
    # batch_size 3 over 4 images: a full and a partial batch
    summary = P.run_prediction(split, out, use_gt_box=True, device="cpu", batch_size=3, progress=False,
                               overlays=False, make_plots=False, **{k: paths[v] for k, v in args.items()})
    assert summary["n_images"] == len(records) and summary["n_skipped"] == 0
    _check_exact(out, split, layout)
    for name, fake in ((n, fakes[paths[n]]) for n in models):
        # every crop matched its training sample exactly, and nothing else came close
        assert fake.match_dist < 1e-5, (name, fake.match_dist)
        assert fake.runner_up > 0.1, (name, fake.runner_up)
        # each model saw exactly the (side, mirrored) crops it should, once per image
        assert sorted(fake.served) == sorted((r.stem, s, m) for r in records for s, m in expect[name]), name
        # per-keypoint confidences are reported in the side's stored order (mirror-permuted back)
        lay = get_layout(layout)
        df = _csv(out).set_index("stem")
        for stem, side, mirrored in fake.served:
            want = fake.conf.get((stem, side), np.ones(lay.points_per_side))   # regression: confidence 1
            want = want[list(lay.mirror_perm)] if mirrored else want
            got = df.loc[stem, [f"conf_{side}_{j}" for j in lay.side_indices[side]]].to_numpy(float)
            np.testing.assert_allclose(got, want, atol=1e-4)


FLIP_CASES = {"simcc_ihdi12": ("ihdi12", "simcc_2d"), "regression_ihdi12": ("ihdi12", "direct_regression"),
              "simcc_mtddh8": ("mtddh8", "simcc_2d"), "heatmap_ihdi12": ("ihdi12", "heatmap"),
              "heatmap_mtddh8": ("mtddh8", "heatmap")}


@pytest.mark.parametrize("case", list(FLIP_CASES))
def test_flip_test_with_the_perfect_model_changes_nothing(case, request, tmp_path, monkeypatch):
    """Each crop is also run mirrored; the mirrored answer, mapped back (codec.flip_outputs and the
    layout's mirror permutation) and averaged, leaves the exact points exact (< 1e-3 px)."""
    layout, head = FLIP_CASES[case]
    split = request.getfixturevalue("data_mtddh8" if layout == "mtddh8" else "data") / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    # heatmap: sigma 4 px (one cell), so that DARK's blur stays clear of the crop borders at 64 px
    paths, fakes = _install_perfect(monkeypatch, tmp_path, records, layout, {"L": ("left", head)}, flipped=True,
                                    sigma=4.0 if head == "heatmap" else 6.0)
    out = {}
    for flip in (False, True):
        out[flip] = tmp_path / f"flip{flip}"
        P.run_prediction(split, out[flip], kp_left_path=paths["L"], use_gt_box=True, device="cpu", batch_size=3,
                         progress=False, overlays=False, make_plots=False, flip_test=flip)
        _check_exact(out[flip], split, layout)
    fake = fakes[paths["L"]]
    assert fake.match_dist < 1e-5
    assert fake.n_flipped == 2 * len(records)            # every crop of the flip run, once mirrored
    lay = get_layout(layout)
    cols = [f"pred_{a}_{j}" for j in range(lay.num_points) for a in "xy"]
    plain, flipped = (_csv(out[f]).set_index("stem")[cols].to_numpy(float) for f in (False, True))
    assert np.abs(plain - flipped).max() < 1e-3


def test_ensemble_of_perfect_models_is_exact_and_serves_every_member(data, tmp_path, monkeypatch):
    split = data / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    models = {"A": ("left", "simcc_2d"), "B": ("left", "simcc_2d")}
    paths, fakes = _install_perfect(monkeypatch, tmp_path, records, "ihdi12", models)
    out = tmp_path / "out"
    s = P.run_prediction(split, out, kp_left_path=[paths["A"], paths["B"]], use_gt_box=True, device="cpu",
                         progress=False, overlays=False, make_plots=False)
    _check_exact(out, split, "ihdi12")
    for name in models:
        assert len(fakes[paths[name]].served) == 2 * len(records)
    assert s["kp_models"]["left"] == f"{paths['A']} + {paths['B']}"


def test_ensemble_members_must_agree(data, tmp_path, monkeypatch):
    split = data / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    paths, _ = _install_perfect(monkeypatch, tmp_path, records, "ihdi12",
                                {"A": ("left", "simcc_2d"), "R": ("right", "simcc_2d")})
    with pytest.raises(UserError, match="ensemble.*differs.*side"):
        P.run_prediction(split, tmp_path / "out", kp_left_path=[paths["A"], paths["R"]], use_gt_box=True,
                         device="cpu", progress=False, overlays=False, make_plots=False)


def test_kp_path_flags_take_several_checkpoints():
    a = script.parse_args(["--data", "d", "--kp_left_path", "a.pth", "b.pth", "--no-flip_test"])
    assert a.kp_left_path == ["a.pth", "b.pth"] and a.flip_test is False and a.kp_right_path is None
    assert script.parse_args(["--data", "d", "--kp_left_path", "a.pth", "--flip_test"]).flip_test is True
    assert P.checkpoint_paths("a.pth") == ["a.pth"] and P.checkpoint_paths(None) == []


# ---------------------------------------------------------------------------- real tiny checkpoints
def test_script_with_tiny_checkpoint(data, ckpt_left, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, MPLBACKEND="Agg", YOLO_OFFLINE="1")
    r = subprocess.run([sys.executable, "predict_hip_crop_keypoints.py", "--kp_left_path", str(ckpt_left),
                        "--data", str(data / "test"), "--output_dir", str(out), "--use_gt_box",
                        "--device", "cpu", "--batch_size", "3"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    df = _csv(out)
    stems = sorted(p.stem for p in (data / "test" / "images").iterdir())
    assert sorted(df["stem"]) == stems
    assert sorted(p.stem for p in (out / "overlays").glob("*.png")) == stems
    for f in ("metrics.json", "metrics.csv", "summary.json", "skipped.json"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    sheet = cv2.imread(str(out / "hip_sheet.png"))          # two hips a film, four cells a row
    assert sheet.shape[:2] == (256 * -(-2 * len(stems) // 4), 4 * 256)
    assert len(list((out / "plots").glob("*.png"))) >= 3
    assert len(list((out / "worst_cases").glob("*.png"))) == len(stems)
    m = _metrics(out)
    assert m["n_images"] == len(stems) and m["detection"]["pooled"]["recall"] == 1.0
    lay = get_layout("ihdi12")
    pred = df[[f"pred_{c}_{j}" for j in range(lay.num_points) for c in "xy"]].to_numpy()
    assert np.isfinite(pred).all()
    assert np.isfinite(df[[f"pred_ai_{s}" for s in SIDES]].to_numpy()).all()
    for s in SIDES:   # a hip is graded 1-4, or failed by the plausibility gate: 0 with its reasons
        failed = df[f"qc_{s}"].fillna("") != ""
        assert df.loc[~failed, f"pred_ihdi_{s}"].isin([1, 2, 3, 4]).all() and (df.loc[failed, f"pred_ihdi_{s}"] == 0).all()
    assert "image(s) predicted" in r.stdout and "hips ungradable" in r.stdout


def test_model_name_mismatch_exits_2(data, ckpt_left, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        script.main(["--kp_left_path", str(ckpt_left), "--data", str(data / "test"), "--output_dir",
                     str(tmp_path / "out"), "--use_gt_box", "--device", "cpu", "--model_name", "hrnet_w32_custom"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --model_name hrnet_w32_custom does not match") and "convnext_atto_custom" in err
    assert len(err.strip().splitlines()) == 1
    # the matching name is accepted
    script.main(["--kp_left_path", str(ckpt_left), "--data", str(data / "test"), "--output_dir",
                 str(tmp_path / "ok"), "--use_gt_box", "--device", "cpu", "--model_name", "convnext_atto_custom",
                 "--no_overlays", "--worst_n", "0"])
    assert (tmp_path / "ok" / "predictions.csv").is_file()


def _direct_side_prediction(loaded, image_path, box, mirrored):
    """One side's keypoints (image px, stored order) from a loaded checkpoint run by hand."""
    from datasets.image_io import read_image
    model, codec, cfg = loaded
    img, _ = read_image(image_path)
    M = side_crop_matrix(box, cfg["input_size"], cfg["crop_expand"], mirrored)
    x = preprocess_crop(warp(img, M, cfg["input_size"]), cfg["hist_eq"], cfg["mean"], cfg["std"])
    with torch.inference_mode():
        xy, _ = codec.decode(model(torch.from_numpy(x)[None]))
    return crop_points_to_side(xy[0].numpy(), M, mirrored, cfg["layout"])


def test_two_keypoint_paths_right_model_unmirrored(data, ckpt_left, ckpt_right, tmp_path):
    sm = P.load_side_models(str(ckpt_left), str(ckpt_right))
    assert sm["left"].path == str(ckpt_left) and not sm["left"].mirrored
    assert sm["right"].path == str(ckpt_right) and not sm["right"].mirrored
    assert sm["right"].config["side"] == "right" and sm["right"].config["mirror"] is False
    # a lone right-side model serves the left hip mirrored
    alone = P.load_side_models(None, str(ckpt_right))
    assert alone["right"].mirrored is False and alone["left"].mirrored is True

    split = data / "test"
    out = tmp_path / "two"
    s = P.run_prediction(split, out, kp_left_path=str(ckpt_left), kp_right_path=str(ckpt_right),
                         use_gt_box=True, device="cpu", batch_size=3, progress=False, overlays=False,
                         make_plots=False)
    assert s["kp_models"] == {"left": str(ckpt_left), "right": str(ckpt_right)}
    df = _csv(out)
    assert len(df) == 4 and (df["status"] == "ok").all()
    lay = get_layout("ihdi12")
    rec = {r.stem: r for r in load_dataset(split)}
    loaded = {"left": load_keypoint_model(ckpt_left), "right": load_keypoint_model(ckpt_right)}
    for _, row in df.iterrows():
        r = rec[row["stem"]]
        for side in SIDES:
            want = _direct_side_prediction(loaded[side], r.image_path, r.boxes[side], mirrored=False)
            got = np.array([[row[f"pred_x_{j}"], row[f"pred_y_{j}"]] for j in lay.side_indices[side]])
            np.testing.assert_allclose(got, want, atol=1e-3, err_msg=f"{row['stem']} {side}")
    assert (out / "metrics.json").is_file()


def test_mtddh8_end_to_end(data_mtddh8, data, tmp_path):
    ckpt = _train_tiny(data_mtddh8, tmp_path, "tiny_mtddh8")
    model, codec, cfg = load_keypoint_model(ckpt)
    assert cfg["layout"] == "mtddh8" and cfg["num_keypoints"] == 4
    out = tmp_path / "out"
    s = P.run_prediction(data_mtddh8 / "test", out, kp_left_path=str(ckpt), use_gt_box=True, device="cpu",
                         progress=False)
    assert s["layout"] == "mtddh8"
    df = _csv(out)
    stems = sorted(p.stem for p in (data_mtddh8 / "test" / "images").iterdir())
    assert sorted(df["stem"]) == stems and (df["layout"] == "mtddh8").all()
    assert "pred_x_7" in df.columns and "pred_x_8" not in df.columns
    assert {c for c in df.columns if c.startswith("conf_right_")} == {f"conf_right_{j}" for j in range(4, 8)}
    assert np.isfinite(df[[f"pred_ai_{s}" for s in SIDES]].to_numpy()).all()
    assert sorted(p.stem for p in (out / "overlays").glob("*.png")) == stems
    m = _metrics(out)
    # every hip is scored: graded, or failed by the plausibility gate (an error, docs/outputs.md)
    assert m["keypoints"]["layout"] == "mtddh8"
    assert m["ihdi"]["pooled"]["n"] == 2 * len(stems)
    assert m["ihdi"]["pooled"]["n_graded"] + m["ihdi"]["pooled"]["n_failed_as_error"] == 2 * len(stems)
    assert len(list((out / "plots").glob("*.png"))) >= 3
    # an mtddh8 model on ihdi12 data is refused with one clear error
    with pytest.raises(UserError, match="layout mtddh8 but .* ihdi12"):
        P.run_prediction(data / "test", tmp_path / "bad", kp_left_path=str(ckpt), use_gt_box=True, device="cpu",
                         progress=False)


# ---------------------------------------------------------------------------- detector stand-ins
class FakeDetector:
    """Replaces ``utils.pipelines.detection.YoloDetector``: the image-left and image-right thirds of each
    image (middle half of its height) as LeftHip / RightHip boxes; ``miss`` = {call index: side}
    leaves that side undetected in that image."""
    miss = {}
    instances = []

    def __init__(self, weights, device="cpu", imgsz=640, conf=0.25):
        self.weights, self.n = weights, 0
        FakeDetector.instances.append(self)

    def predict(self, images, batch_size=8):
        out = []
        for img in images:
            H, W = img.shape[:2]
            y1, y2 = 0.25 * H, 0.75 * H
            d = {"left": Detection(np.array([0.0, y1, W / 3, y2]), 0.9),
                 "right": Detection(np.array([2 * W / 3, y1, W - 1.0, y2]), 0.8)}
            if self.n in self.miss:
                d[self.miss[self.n]] = None
            out.append(d)
            self.n += 1
        return out


@pytest.fixture
def fake_detector(monkeypatch):
    monkeypatch.setattr(utils.pipelines.detection, "YoloDetector", FakeDetector)
    monkeypatch.setattr(FakeDetector, "miss", {})
    monkeypatch.setattr(FakeDetector, "instances", [])
    return FakeDetector


@pytest.mark.parametrize("fmt", ["jpg", "dicom"])
def test_unlabelled_real_films(fmt, shared_dir, ckpt_left, fake_detector, tmp_path):
    folder = shared_dir / "real_xray" / fmt
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".md"))
    out = tmp_path / "out"
    s = P.run_prediction(folder, out, kp_left_path=str(ckpt_left), yolo_weights="fake.pt", device="cpu",
                         batch_size=4, progress=False)
    assert fake_detector.instances and fake_detector.instances[0].weights == "fake.pt"
    assert s["with_ground_truth"] is False and s["metrics"] is None and s["n_skipped"] == 0
    df = _csv(out)
    assert sorted(df["stem"]) == sorted(p.stem for p in files)               # one row per image
    assert sorted(p.stem for p in (out / "overlays").glob("*.png")) == sorted(p.stem for p in files)
    assert not (out / "metrics.json").exists() and not (out / "metrics.csv").exists()
    assert (df["status"] == "ok").all() and (df["width"] == 331).all() and (df["height"] == 331).all()
    assert df["detected_left"].all() and df["detected_right"].all()
    assert (df["det_conf_left"] == 0.9).all() and (df["det_conf_right"] == 0.8).all()
    lay = get_layout("ihdi12")
    pred = df[[f"pred_{c}_{j}" for j in range(lay.num_points) for c in "xy"]].to_numpy()
    assert np.isfinite(pred).all()
    assert df[[f"gt_x_{j}" for j in range(lay.num_points)]].isna().all().all()
    # predictions land inside their boxes' crops (left hip points in the left part of the film)
    assert (df[[f"pred_x_{j}" for j in lay.side_indices["left"]]].to_numpy() < 331 / 2).all()
    assert (df[[f"pred_x_{j}" for j in lay.side_indices["right"]]].to_numpy() > 331 / 2).all()
    if fmt == "dicom":  # read from the DICOM header
        assert (df["pixel_spacing_mm"] == 1.0).all()
    else:
        assert df["pixel_spacing_mm"].isna().all()


def test_undetected_side_is_reported_not_dropped(data, ckpt_left, fake_detector, tmp_path):
    fake_detector.miss = {1: "right"}
    split = data / "test"
    out = tmp_path / "out"
    s = P.run_prediction(split, out, kp_left_path=str(ckpt_left), yolo_weights="fake.pt", device="cpu",
                         batch_size=3, progress=False, worst_n=4)
    df = _csv(out)
    stems = sorted(p.stem for p in (split / "images").iterdir())
    assert sorted(df["stem"]) == stems and len(df) == 4
    missed = stems[1]                                  # the second image read
    row = df.set_index("stem").loc[missed]
    assert row["status"] == "not detected: right"
    assert not row["detected_right"] and row["detected_left"]
    assert row["iou_right"] == 0.0
    assert np.isnan([row[f"pred_x_{j}"] for j in range(6, 12)]).all()
    assert np.isfinite([row[f"pred_x_{j}"] for j in range(6)]).all()
    assert (df.set_index("stem").drop(missed)["status"] == "ok").all()
    assert s["undetected"] == {"left": [], "right": [missed]}
    m = _metrics(out)
    assert m["detection"]["right"]["recall"] == pytest.approx(0.75)
    assert m["detection"]["left"]["recall"] == 1.0 and m["detection"]["pooled"]["recall"] < 1
    assert m["keypoints"]["n_missing_right"] == 1 and m["keypoints"]["n_missing_left"] == 0
    assert m["ai"]["right"]["n"] == 3
    assert (out / "overlays" / f"{missed}.png").is_file()
    assert len(list((out / "worst_cases").glob("*.png"))) == 4
