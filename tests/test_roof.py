"""The roof refiner, the second keypoint stage (``--stage roof``, ``--refine_path``; docs/accuracy.md).

- Geometry: the roof crop (``utils.cropping.roof_box`` + the hip crop's square maths) maps points
  to the crop and back exactly (< 1e-4 px), for both sides, mirrored or not, and its pixels are
  where the matrix says (a linear ramp image, which bilinear warping reproduces exactly); the
  training crops (``roof_crop_dataset``, jittered) map their targets back exactly too.
- A perfect refiner: a first stage that misplaces the roof points by a few pixels (a perfect
  model of ``tests/test_predict.py`` answering displaced ground truth), then a stand-in refiner
  that matches each roof crop to the training code's crop and answers the true roof points:
  ``run_prediction(..., refine_path=...)`` gives the ground truth exactly, with the flip test,
  an ensemble, a right-side refiner and mtddh8.
- Tiny real checkpoints: ``--stage roof`` trains and round-trips through its checkpoint, predicts
  through the script, and a checkpoint of the wrong stage exits 2 with one line.
- K-fold: ``--stage roof`` and ``--refine_tpl`` reach each fold's training and prediction.
"""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kfold_predict_hip_crop_keypoints as kfold_predict_script
import kfold_train_hip_crop_keypoints as kfold_train_script
import predict_hip_crop_keypoints as script
import train_hip_crop_keypoints as train_script
import utils.pipelines.predict as P
from datasets.crops import IMAGENET_MEAN, IMAGENET_STD, Augment, crop_to_image_points, roof_crop_dataset, roof_records
from datasets.formats import load_dataset
from datasets.layouts import (SIDES, get_layout, mirror_side_keypoints, roof_indices, roof_layout, roof_positions,
                              stage_layout)
from models.checkpoint import load_keypoint_model
from tests.helpers import train_tiny_keypoints
from tests.test_predict import KP_SIZE, PerfectModel, _check_exact, _csv, data, data_mtddh8  # noqa: F401 (fixtures)
from utils.cropping import (apply_matrix, crop_points_to_side, crop_to_image, roof_box, roof_crop_matrix,
                            side_points_to_crop, square_box, warp)
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 0.5


# ---------------------------------------------------------------------------- layouts and geometry
def test_roof_layout_is_the_roof_points_of_each_layout():
    ihdi, mt = roof_layout("ihdi12"), roof_layout("mtddh8")
    assert ihdi.point_names == ("lateral_edge", "mid_roof", "triradiate") and ihdi.mirror_perm == (2, 1, 0)
    assert mt.point_names == ("lateral_edge", "triradiate") and mt.mirror_perm == (0, 1)
    assert [roof_indices("ihdi12", s).tolist() for s in SIDES] == [[0, 1, 2], [6, 7, 8]]
    assert [roof_indices("mtddh8", s).tolist() for s in SIDES] == [[0, 1], [4, 5]]
    assert get_layout("ihdi12_roof") == ihdi and roof_layout(ihdi) is ihdi
    for name in ("ihdi12", "mtddh8"):
        lay, roof = get_layout(name), roof_layout(name)
        # the roof's AI points are the layout's, and mirroring the roof = the roof of the mirrored side
        full = np.random.default_rng(0).uniform(0, 100, (lay.num_points, 2))
        sub = np.concatenate([full[roof_indices(lay, s)] for s in SIDES])
        for s in SIDES:
            assert np.array_equal(sub[roof.lateral_edge[s]], full[lay.lateral_edge[s]])
            assert np.array_equal(sub[roof.triradiate[s]], full[lay.triradiate[s]])
            mirrored = mirror_side_keypoints(full[lay.side_slice(s)], 200, lay)   # left-shaped
            np.testing.assert_array_equal(mirror_side_keypoints(sub[roof.side_slice(s)], 200, roof),
                                          mirrored[list(roof_positions(lay, "left"))])


def _roof_side_points(rng, layout, side, centre=(180.0, 150.0)):
    """A plausible side's roof (stored order): lateral edge ~40 px lateral and above the triradiate point."""
    lay = get_layout(layout)
    sign = -1.0 if side == "left" else 1.0
    tri = np.array(centre) + rng.uniform(-5, 5, 2)
    edge = tri + [sign * rng.uniform(30, 50), -rng.uniform(8, 20)]
    named = {"lateral_edge": edge, "triradiate": tri, "mid_roof": (edge + tri) / 2 + [0, -3]}
    return np.array([named[lay.side_point_names(side)[j]] for j in roof_positions(lay, side)])


@pytest.mark.parametrize("layout", ["ihdi12", "mtddh8"])
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("mirrored", [False, True])
def test_roof_crop_round_trip_is_exact(layout, side, mirrored):
    rng = np.random.default_rng(hash((layout, side, mirrored)) % 2 ** 32)
    roof, size = roof_layout(layout), 96
    for _ in range(20):
        pts = _roof_side_points(rng, layout, side)
        M = roof_crop_matrix(pts, size, MARGIN, mirrored)
        crop = side_points_to_crop(pts, M, mirrored, roof)
        assert np.abs(crop_points_to_side(crop, M, mirrored, roof) - pts).max() < 1e-4
        # the square: the roof box's centre at the crop centre, its longer side plus the margins across the crop
        x1, y1, x2, y2 = roof_box(pts)
        side_px = max(x2 - x1, y2 - y1) * (1 + 2 * MARGIN)
        np.testing.assert_allclose(apply_matrix(M, [(x1 + x2) / 2, (y1 + y2) / 2]), [(size - 1) / 2] * 2, atol=1e-9)
        np.testing.assert_allclose(np.abs(M[0, 0]), size / side_px, rtol=1e-12)
        # the crop shows a left-shaped hip (lateral edge left of the triradiate point) when it is a left hip,
        # or a mirrored right one; its points are then in left-side order
        shape = "left" if (side == "left") != mirrored else "right"
        edge, tri = (crop[roof.local(shape, getattr(roof, k)[shape])] for k in ("lateral_edge", "triradiate"))
        assert (edge[0] < tri[0]) == (shape == "left")
        assert ((crop > -0.5) & (crop < size - 0.5)).all()


@pytest.mark.parametrize("mirrored", [False, True])
def test_roof_crop_pixels_are_where_the_matrix_says(mirrored):
    """Bilinear warping reproduces a linear ramp, so the x and y ramps of the image, warped into the
    roof crop, read back the image point that each crop pixel maps to: to within OpenCV's sampling
    grid (warpAffine computes source positions in fixed point, to 1/32 px), with no half-pixel offset."""
    H, W, size = 300, 360, 64
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    pts = _roof_side_points(np.random.default_rng(1), "ihdi12", "right")
    M = roof_crop_matrix(pts, size, MARGIN, mirrored)
    gx, gy = warp(xs, M, size), warp(ys, M, size)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    want = crop_to_image(M, np.stack([u, v], -1))
    grid = 1 / 32
    np.testing.assert_allclose(gx, want[..., 0], atol=grid)
    np.testing.assert_allclose(gy, want[..., 1], atol=grid)
    assert abs(np.mean(gx - want[..., 0])) < 0.01 and abs(np.mean(gy - want[..., 1])) < 0.01   # no offset


@pytest.mark.parametrize("augment", [None, Augment(rot=10, shift=0, scale=0, box_jitter=0.1)])
def test_training_roof_crops_map_their_targets_back_exactly(data, augment):
    recs = load_dataset(data / "train", require_annotations=True)
    lay, roof = get_layout("ihdi12"), roof_layout("ihdi12")
    ds = roof_crop_dataset(recs, lay, KP_SIZE, MARGIN, augment=augment, side="left", mirror=True, threads=1)
    assert len(ds) == 2 * len(recs) and {(s.side, s.mirrored) for s in ds.samples} == {("left", False),
                                                                                       ("right", True)}
    by_stem = {r.stem: r for r in recs}
    for index in range(3 * len(ds)):            # three epochs of draws
        it = ds[index]
        s = ds.samples[it["index"]]
        truth = np.asarray(by_stem[s.stem].keypoints, float)[roof_indices(lay, s.side)]
        np.testing.assert_array_equal(it["image_kps"].numpy(), truth)
        back = crop_to_image_points(it["keypoints"].numpy()[None], it["matrix"].numpy()[None], [s.mirrored], roof)
        assert np.abs(back[0] - truth).max() < 1e-4
        kp = it["keypoints"].numpy()
        assert ((kp > -0.5) & (kp < KP_SIZE - 0.5)).all()           # the jitter keeps the roof in its crop
        if augment is None:   # the crop's square: the roof box plus the margin
            sq = square_box(roof_box(truth), MARGIN)
            assert s.crop_side_px == pytest.approx(sq[2] - sq[0])


# ---------------------------------------------------------------------------- the perfect refiner
# image px; on these small films a roof is 10-20 px long, so this stays well under the gate's
# MAX_REFINE_SHIFT of the roof length (test_a_refiner_that_moves_the_roof_far_fails_the_gate)
ROOF_SHIFT = {"lateral_edge": (1.0, -0.6), "mid_roof": (0.6, 0.6), "triradiate": (-0.8, 0.5)}


def _misplaced(records, layout, shifts=None):
    """The records with every roof point moved by ``ROOF_SHIFT`` (what an imperfect first stage says),
    or the points named in ``shifts`` by theirs."""
    lay = get_layout(layout)
    shifts = ROOF_SHIFT if shifts is None else shifts
    out = []
    for r in records:
        kps = np.array(r.keypoints, float)
        for s in SIDES:
            for j, name in zip(lay.side_indices[s], lay.side_point_names(s)):
                kps[j] += shifts.get(name, (0.0, 0.0))
        out.append(dataclasses.replace(r, keypoints=kps))
    return out


class PerfectRefiner(PerfectModel):
    """A roof refiner that knows the answer: each roof crop is matched to the nearest crop that the
    TRAINING code (``roof_crop_dataset``, no augmentation) cuts around the misplaced roof, and
    answered with the TRUE roof points in that crop (model order), encoded as ``PerfectModel`` does.
    ``stage`` "femur": the same for the femur points (misplaced by ``shifts``)."""

    def __init__(self, true_records, layout, side, head_type, flipped=False, stage="roof", shifts=None):
        lay, roof = get_layout(layout), stage_layout(layout, stage)
        self.ds = roof_crop_dataset(_misplaced(true_records, lay, shifts), lay, KP_SIZE, MARGIN, side=side,
                                    mirror=True, threads=1, stage=stage)
        truth = {r.stem: r.keypoints for r in roof_records(true_records, lay, stage)}
        self.images = torch.stack([self.ds[i]["image"] for i in range(len(self.ds))])
        self.targets = torch.stack([torch.from_numpy(side_points_to_crop(
            truth[s.stem][roof.side_slice(s.side)], s.matrix, s.mirrored, roof)).float() for s in self.ds.samples])
        self.samples = list(self.ds.samples)
        self.n_flipped = 0
        if flipped:
            flip_t = self.targets[:, list(roof.mirror_perm)].clone()
            flip_t[..., 0] = (KP_SIZE - 1) - flip_t[..., 0]
            self.images = torch.cat([self.images, self.images.flip(-1)])
            self.targets = torch.cat([self.targets, flip_t])
            self.samples += self.samples
        self.head_type, self.size = head_type, KP_SIZE
        from models import build_codec   # (as the first-stage stand-in builds its own)
        self.codec = build_codec(head_type, KP_SIZE)
        self.served, self.conf = [], {}
        self.match_dist, self.runner_up = 0.0, np.inf
        self.config = dict(model_name="perfect_roof", head_type=head_type, input_size=KP_SIZE, split_ratio=2.0,
                           sigma=6.0, layout=lay.name, side=side, mirror=True, crop_expand=MARGIN, stage=stage,
                           num_keypoints=roof.points_per_side, hist_eq=True, mean=list(IMAGENET_MEAN),
                           std=list(IMAGENET_STD), hflip=0.5 if flipped else 0.0)


def _install(monkeypatch, tmp_path, fakes):
    """{name: fake model} -> {name: dummy checkpoint path}; ``load_keypoint_model`` returns the fake."""
    by_path = {}
    for name, fake in fakes.items():
        p = tmp_path / f"{name}.pth"
        p.write_bytes(b"not read")
        by_path[str(p)] = fake

    def load(path, device="cpu"):
        m = by_path[str(path)]
        return m, m.codec, m.config

    monkeypatch.setattr("models.checkpoint.load_keypoint_model", load)
    return {name: str(tmp_path / f"{name}.pth") for name in fakes}


REFINE_CASES = {
    # name: (layout, refiner side, refiner head, flip test, ensemble of two refiners)
    "left_simcc": ("ihdi12", "left", "simcc_2d", False, False),
    "left_simcc_flip_ensemble": ("ihdi12", "left", "simcc_2d", True, True),
    "right_regression_flip": ("ihdi12", "right", "direct_regression", True, False),
    "mtddh8_left_simcc": ("mtddh8", "left", "simcc_2d", False, False),
}


@pytest.mark.parametrize("case", list(REFINE_CASES))
def test_perfect_refiner_gives_the_true_roof_points(case, request, tmp_path, monkeypatch):
    layout, side, head, flip, ensemble = REFINE_CASES[case]
    split = request.getfixturevalue("data_mtddh8" if layout == "mtddh8" else "data") / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    lay = get_layout(layout)
    fakes = {"kp": PerfectModel(_misplaced(records, lay), layout, "left", "simcc_2d", flipped=flip),
             "R": PerfectRefiner(records, layout, side, head, flipped=flip)}
    if ensemble:
        fakes["R2"] = PerfectRefiner(records, layout, side, head, flipped=flip)
    paths = _install(monkeypatch, tmp_path, fakes)
    refine = [paths["R"], paths["R2"]] if ensemble else paths["R"]
    args = dict(use_gt_box=True, device="cpu", batch_size=3, progress=False, overlays=False, make_plots=False,
                flip_test=flip)
    # the first stage alone: its roof points are off by ROOF_SHIFT
    P.run_prediction(split, tmp_path / "first", kp_left_path=paths["kp"], **args)
    first = _csv(tmp_path / "first").set_index("stem")
    roof_cols = [f"pred_x_{j}" for s in SIDES for j in roof_indices(lay, s)]
    gt = first[[c.replace("pred", "gt") for c in roof_cols]].to_numpy()
    assert np.abs(first[roof_cols].to_numpy() - gt).min() > 0.4
    # refined: every point exact (the roof from the refiner, the rest from the first stage)
    s = P.run_prediction(split, tmp_path / "refined", kp_left_path=paths["kp"], refine_path=refine, **args)
    _check_exact(tmp_path / "refined", split, layout)
    assert s["refine_model"] == " + ".join([refine] if isinstance(refine, str) else refine)
    refined = _csv(tmp_path / "refined").set_index("stem")
    xy = [f"pred_{a}_{j}" for s in SIDES for j in roof_indices(lay, s) for a in "xy"]
    err = np.abs(refined[xy].to_numpy() - refined[[c.replace("pred", "gt") for c in xy]].to_numpy())
    assert err.max() < 1e-3, err.max()                                  # the roof points: the true ones
    other = [f"pred_{a}_{j}" for j in range(lay.num_points) if j not in np.concatenate(
        [roof_indices(lay, s) for s in SIDES]) for a in "xy"]
    np.testing.assert_array_equal(refined[other].to_numpy(), first[other].to_numpy())
    assert list(refined.columns) == list(first.columns)                 # predictions.csv's schema
    for name in [n for n in fakes if n.startswith("R")]:
        fake = fakes[name]
        # the first stage's points carry float32 decoding error (~1e-5 px), so the crop's square is that far
        # from the training one: a few pixels may round to the next gray level, which histogram equalisation
        # spreads; each crop is still far nearer its own training crop than any other
        assert fake.match_dist < 0.3 and fake.runner_up > 10 * fake.match_dist, (name, fake.match_dist,
                                                                                 fake.runner_up)
        # one crop per hip (both flips with the flip test), each side from the refiner's side or mirrored
        want = sorted((r.stem, sd, sd != side) for r in records for sd in SIDES)
        assert sorted(set(fake.served)) == want and len(fake.served) == (2 if flip else 1) * len(want)
        assert fake.n_flipped == (len(want) if flip else 0)
    if head == "simcc_2d":   # the roof points' confidences are the refiner's (stored order)
        fake = fakes["R"]
        roof = roof_layout(layout)
        if not ensemble and not flip:
            for (stem, sd), c in fake.conf.items():
                want = c[list(roof.mirror_perm)] if sd != side else c
                got = refined.loc[stem, [f"conf_{sd}_{j}" for j in roof_indices(lay, sd)]].to_numpy(float)
                np.testing.assert_allclose(got, want, atol=1e-4)


def test_refiner_layout_must_match_the_keypoint_model(data, tmp_path, monkeypatch):
    split = data / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    fake_kp = PerfectModel(records, "ihdi12", "left", "simcc_2d")
    fake_r = PerfectRefiner(records, "ihdi12", "left", "simcc_2d")
    fake_r.config = dict(fake_r.config, layout="mtddh8")
    paths = _install(monkeypatch, tmp_path, {"kp": fake_kp, "R": fake_r})
    with pytest.raises(UserError, match="--refine_path: .* refines layout mtddh8, the keypoint model's is ihdi12"):
        P.run_prediction(split, tmp_path / "out", kp_left_path=paths["kp"], refine_path=paths["R"], use_gt_box=True,
                         device="cpu", progress=False)


# ---------------------------------------------------------------------------- tiny real checkpoints
@pytest.fixture(scope="module")
def tiny(data, tmp_path_factory):
    """A tiny first-stage model and a tiny roof refiner (two steps each), trained by the one loop."""
    out = tmp_path_factory.mktemp("roof_ckpts")
    # (--hflip: the predict test runs them with --flip_test)
    return {"hip": train_tiny_keypoints(data, out, "tiny_hip", KP_SIZE, hflip=0.5),
            "roof": train_tiny_keypoints(data, out, "tiny_roof", KP_SIZE, stage="roof", roof_margin=0.4, hflip=0.5)}


def test_stage_roof_trains_and_round_trips_through_its_checkpoint(data, tiny, tmp_path):
    model, codec, cfg = load_keypoint_model(tiny["roof"])
    assert cfg["stage"] == "roof" and cfg["layout"] == "ihdi12" and cfg["num_keypoints"] == 3
    assert cfg["crop_expand"] == 0.4 and cfg["train"]["roof_margin"] == 0.4 and cfg["train"]["roof_jitter"] == 0.1
    assert cfg["train"]["stage"] == "roof" and load_keypoint_model(tiny["hip"])[2]["stage"] == "hip"
    ckpt = torch.load(tiny["roof"], weights_only=True)                   # plain types only
    assert ckpt["config"]["stage"] == "roof"
    # the loaded model is the trained one: its validation crops give the error the checkpoint recorded
    from datasets.formats import load_records
    from utils.pipelines.train_step import validate
    val = roof_crop_dataset(load_records(data / "val", require_annotations=True), "ihdi12", KP_SIZE, 0.4,
                            side="left", mirror=True, threads=1)
    m = validate(model, torch.utils.data.DataLoader(val, batch_size=8), codec, torch.device("cpu"),
                 roof_layout("ihdi12"))
    assert m["val_px_error"] == pytest.approx(cfg["metrics"]["val_px_error"], rel=1e-4)


def test_train_script_takes_stage_roof_and_resumes_it(data, tmp_path):
    common = ["--data_dir", str(data), "--model_name", "convnext_atto_custom", "--input_size", "32", "--epochs", "2",
              "--batch_size", "8", "--device", "cpu", "--out", str(tmp_path / "w"), "--log_dir", str(tmp_path / "l"),
              "--no-progress", "--max_steps", "1"]
    train_script.main(common + ["--stage", "roof", "--roof_jitter", "0.05"])
    last = next((tmp_path / "w").glob("*roofleft_mirror*_last.pth"))
    cfg = load_keypoint_model(last)[2]
    assert cfg["stage"] == "roof" and cfg["train"]["roof_jitter"] == 0.05
    # resumed without the flags: the checkpoint's stage and jitter are kept
    train_script.main(common[:-1] + ["2", "--resume", str(last)])     # --max_steps 2
    cfg = load_keypoint_model(last)[2]
    assert cfg["stage"] == "roof" and cfg["train"]["roof_jitter"] == 0.05 and cfg["num_keypoints"] == 3
    with pytest.raises(SystemExit) as e:
        train_script.main(common + ["--stage", "roof", "--pipeline", "full_image"])
    assert e.value.code == 2


def test_predict_script_with_a_tiny_refiner(data, tiny, tmp_path):
    out = {}
    for name, extra in (("plain", []), ("refined", ["--refine_path", str(tiny["roof"])]),
                        ("flip_ensemble", ["--refine_path", str(tiny["roof"]), str(tiny["roof"]), "--flip_test"])):
        out[name] = tmp_path / name
        script.main(["--kp_left_path", str(tiny["hip"]), "--data", str(data / "test"), "--output_dir", str(out[name]),
                     "--use_gt_box", "--device", "cpu", "--no_overlays", "--worst_n", "0"] + extra)
    plain, refined = _csv(out["plain"]).set_index("stem"), _csv(out["refined"]).set_index("stem")
    assert list(plain.columns) == list(refined.columns)
    lay = get_layout("ihdi12")
    roof = {int(j) for s in SIDES for j in roof_indices(lay, s)}
    for j in range(lay.num_points):
        cols = [f"pred_x_{j}", f"pred_y_{j}"]
        same = np.array_equal(plain[cols].to_numpy(), refined[cols].to_numpy())
        assert same == (j not in roof), j                  # only the roof points move
    assert np.isfinite(refined[[f"pred_ai_{s}" for s in SIDES]].to_numpy()).all()
    summary = json.loads((out["flip_ensemble"] / "summary.json").read_text())
    assert summary["refine_model"] == f"{tiny['roof']} + {tiny['roof']}"


@pytest.mark.parametrize("flags, message", [
    (["--kp_left_path", "{roof}"], "error: --kp_left_path: {roof} is a roof refiner (trained with --stage roof); "
                                   "give it as --refine_path"),
    (["--kp_left_path", "{hip}", "--refine_path", "{hip}"],
     "error: --refine_path: {hip} is a first-stage keypoint model, not a refiner (train one with "
     "train_hip_crop_keypoints.py --stage roof or --stage femur)"),
])
def test_a_checkpoint_of_the_wrong_stage_exits_2(flags, message, data, tiny, tmp_path, capsys):
    check_exits_2(flags, message, data, tiny, tmp_path, capsys)


def check_exits_2(flags, message, data, tiny, tmp_path, capsys):
    """predict_hip_crop_keypoints.py with ``flags`` ({name} filled from ``tiny``'s checkpoints) stops
    with exit 2 and the one line ``message``."""
    fill = {k: str(v) for k, v in tiny.items()}
    with pytest.raises(SystemExit) as e:
        script.main([f.format(**fill) for f in flags] + ["--data", str(data / "test"), "--output_dir",
                                                          str(tmp_path / "out"), "--use_gt_box", "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message.format(**fill)) and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- k-fold
def test_kfold_scripts_pass_the_roof_stage_through(tmp_path, monkeypatch):
    root = tmp_path / "data_kfold"
    for i in (1, 2):
        (root / f"fold{i}" / "images").mkdir(parents=True)
    seen = {"train": [], "predict": []}

    def fake_train(cfg):
        seen["train"].append(dict(cfg))
        return {"best_metrics": {}, "epochs_run": 1, "paths": {}}

    monkeypatch.setattr("utils.pipelines.kfold_train.train", fake_train)
    monkeypatch.setattr("utils.pipelines.kfold_train.summarize_kfold", lambda *a, **k: {})
    kfold_train_script.main(["--data_root", str(root), "--k", "2", "--mode", "val_as_test", "--stage", "roof",
                             "--roof_margin", "0.3", "--exp_name", "roof", "--out", str(tmp_path / "w"),
                             "--log_dir", str(tmp_path / "l"), "--device", "cpu"])
    assert [(c["stage"], c["roof_margin"], c["exp_name"]) for c in seen["train"]] == [("roof", 0.3, "roof_fold1"),
                                                                                      ("roof", 0.3, "roof_fold2")]
    assert json.loads((tmp_path / "w" / "roof_fold2_config.json").read_text())["stage"] == "roof"

    monkeypatch.setattr("utils.pipelines.kfold_predict.run_prediction",
                        lambda data, out, **kw: seen["predict"].append((Path(data).name, kw)))
    monkeypatch.setattr("utils.pipelines.kfold_predict.summarize_folds", lambda *a, **k: {})
    kfold_predict_script.main(["--data_root", str(root), "--k", "2", "--kp_left_tpl", "w/kp_fold{fold}_best.pth",
                               "--refine_tpl", "w/roof_fold{fold}_best.pth", "w/femur_fold{fold}_best.pth",
                               "--use_gt_box", "--flip_test", "--output_dir", str(tmp_path / "res")])
    assert [(d, kw["kp_left_path"], kw["refine_path"], kw["flip_test"]) for d, kw in seen["predict"]] == [
        ("fold1", "w/kp_fold1_best.pth", ["w/roof_fold1_best.pth", "w/femur_fold1_best.pth"], True),
        ("fold2", "w/kp_fold2_best.pth", ["w/roof_fold2_best.pth", "w/femur_fold2_best.pth"], True)]
    seen["predict"].clear()
    kfold_predict_script.main(["--data_root", str(root), "--k", "2", "--kp_left_tpl", "w/kp_fold{fold}_best.pth",
                               "--use_gt_box", "--output_dir", str(tmp_path / "res2")])
    assert [kw["refine_path"] for _, kw in seen["predict"]] == [None, None]
    with pytest.raises(SystemExit) as e:
        kfold_predict_script.main(["--data_root", str(root), "--k", "2", "--pipeline", "full_image", "--kp_left_tpl",
                                   "w/f{fold}.pth", "--refine_tpl", "w/r{fold}.pth", "--output_dir", str(tmp_path / "x")])
    assert e.value.code == 2


# ---------------------------------------------------------------------------- the bench
@pytest.mark.slow
def test_accuracy_bench_refine_variants(tmp_path):
    r = subprocess.run([sys.executable, "bench/accuracy.py", "--out", str(tmp_path), "--n", "24", "--size", "256",
                        "--epochs", "1", "--quick", "--input_size", "64", "--ensemble_seeds", "2", "--device", "cpu",
                        "--refine"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "accuracy.json").read_text())["rows"]
    names = [row["variant"] for row in rows]
    assert names[:8] == ["baseline", "+flip", "decode argmax", "decode argmax_refine", "+AI loss (w=0.1)",
                         "+AI loss (w=0.1) +flip", "+ensemble (2 seeds)", "+ensemble (2 seeds) +flip"]
    assert names[8:] == ["+refine", "+refine +flip", "+refine roof+femur", "+refine roof+femur +flip"]
    assert rows[8]["train_s"] > rows[0]["train_s"] and rows[8]["n_hips"] == rows[0]["n_hips"]
    assert "| +refine |" in (tmp_path / "accuracy.md").read_text()


def first_stage_item():
    """(layout, kps, item, roof length): one ihdi12 film as the first stage left it, both roofs 41.2 px long."""
    lay = get_layout("ihdi12")
    kps = np.array([[60, 80], [80, 85], [100, 90], [70, 110], [85, 110], [100, 110],
                    [200, 90], [220, 85], [240, 80], [200, 110], [215, 110], [230, 110]], float)
    item = P.ImageItem(rec=None, image=np.zeros((200, 300), np.uint8))
    item.points = {s: (kps[lay.side_slice(s)].copy(), np.ones(6)) for s in SIDES}
    return lay, kps, item, float(np.hypot(40, 10))


class StubRefiner:
    """A refiner's crop stand-in (``infer_stage`` is replaced in the tests that use it)."""

    def crop(self, image, box):
        return np.zeros((3, 8, 8), np.float32), np.eye(3)


def test_refine_stage_records_how_far_the_refiner_moved_the_roof(monkeypatch):
    """refine_stage stores, per side, the refiner's largest move of a roof point over the first
    stage's roof length; make_row's gate turns a move past MAX_REFINE_SHIFT into stages_disagree
    (and no IHDI grade), and leaves a small one alone."""
    from utils.evaluation.metrics import make_row
    from utils.hip_geometry import MAX_REFINE_SHIFT
    lay, kps, item, roof_len = first_stage_item()
    moves = {"left": np.array([0.1, 0.0]) * roof_len, "right": np.array([0.0, 0.4]) * roof_len}

    def fake_infer(items, models, layout, *a, **k):       # the refiner: the roof points, moved
        for it in items:
            for s in it.crops:
                first = kps[[j for j in roof_indices(lay, s)]]
                it.points[s] = (first + moves[s], np.ones(3))

    monkeypatch.setattr(P, "infer_stage", fake_infer)
    P.refine_stage([item], {s: StubRefiner() for s in SIDES}, lay)
    assert item.refine_shift["left"] == pytest.approx(0.1) and item.refine_shift["right"] == pytest.approx(0.4)
    pred = np.concatenate([item.points["left"][0], item.points["right"][0]])
    row = make_row("x", pred, lay, image_width=300, refine_shift=item.refine_shift)
    assert 0.1 < MAX_REFINE_SHIFT < 0.4
    assert row.hips["left"].qc == "" and row.hips["right"].qc == "stages_disagree"
    assert row.hips["right"].pred_ihdi == 0 and row.hips["left"].pred_ihdi > 0
