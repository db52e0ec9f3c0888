"""The femur refiner (``--stage femur``): the roof refiner's machinery on the proximal femur's
points (ihdi12's three metaphysis points, mtddh8's head centre and H-point).

- Layout: ``stage_layout(layout, "femur")`` is those points, mirrored consistently, with no AI points.
- Training crops around the femur points map their targets back exactly.
- Perfect refiners after a first stage that misplaces every point: the roof and the femur refiner
  together give every point exactly, in either order on the command line; the femur refiner alone
  moves the femur points only; the gate's shift is the largest move over both stages.
- Tiny real checkpoints: ``--stage femur`` trains, saves its stage, predicts through the script
  with a roof refiner, and the wrong-stage and AI-loss cases exit 2 with one line.
"""
import numpy as np
import pytest

import predict_hip_crop_keypoints as script
import train_hip_crop_keypoints as train_script
import utils.pipelines.predict as P
from datasets.crops import Augment, crop_to_image_points, roof_crop_dataset
from datasets.formats import load_dataset
from datasets.layouts import SIDES, get_layout, mirror_side_keypoints, stage_indices, stage_layout, stage_positions
from models.checkpoint import load_keypoint_model
from tests.helpers import train_tiny_keypoints
from tests.test_predict import KP_SIZE, PerfectModel, _check_exact, _csv, data, data_mtddh8  # noqa: F401 (fixtures)
from tests.test_roof import (MARGIN, ROOF_SHIFT, PerfectRefiner, StubRefiner, _install, _misplaced, check_exits_2,
                             first_stage_item)

FEMUR_SHIFT = {"metaphysis_lateral": (0.9, 0.7), "metaphysis_mid": (-0.7, 0.8), "metaphysis_medial": (0.6, -0.9),
               "head_centre": (0.8, -0.7), "h_point": (-0.9, 0.6)}
ALL_SHIFT = {**ROOF_SHIFT, **FEMUR_SHIFT}


def test_femur_layout_is_the_femur_points_of_each_layout():
    ihdi, mt = stage_layout("ihdi12", "femur"), stage_layout("mtddh8", "femur")
    assert ihdi.name == "ihdi12_femur" and mt.name == "mtddh8_femur"
    assert ihdi.point_names == ("metaphysis_lateral", "metaphysis_mid", "metaphysis_medial")
    assert ihdi.mirror_perm == (2, 1, 0)
    assert mt.point_names == ("head_centre", "h_point") and mt.mirror_perm == (0, 1)
    assert [stage_indices("ihdi12", s, "femur").tolist() for s in SIDES] == [[3, 4, 5], [9, 10, 11]]
    assert [stage_indices("mtddh8", s, "femur").tolist() for s in SIDES] == [[2, 3], [6, 7]]
    assert get_layout("ihdi12_femur") == ihdi and stage_layout(ihdi, "femur") is ihdi
    assert ihdi.lateral_edge == {} and ihdi.triradiate == {}          # no AI on the femur's points
    for name in ("ihdi12", "mtddh8"):
        lay, fem = get_layout(name), stage_layout(name, "femur")
        full = np.random.default_rng(0).uniform(0, 100, (lay.num_points, 2))
        sub = np.concatenate([full[stage_indices(lay, s, "femur")] for s in SIDES])
        for s in SIDES:   # mirroring the femur points = the femur points of the mirrored side
            mirrored = mirror_side_keypoints(full[lay.side_slice(s)], 200, lay)
            np.testing.assert_array_equal(mirror_side_keypoints(sub[fem.side_slice(s)], 200, fem),
                                          mirrored[list(stage_positions(lay, "left", "femur"))])
    with pytest.raises(ValueError, match="unknown refiner stage 'hip'"):
        stage_layout("ihdi12", "hip")


@pytest.mark.parametrize("augment", [None, Augment(rot=10, shift=0, scale=0, box_jitter=0.1)])
def test_training_femur_crops_map_their_targets_back_exactly(data, augment):
    recs = load_dataset(data / "train", require_annotations=True)
    lay, fem = get_layout("ihdi12"), stage_layout("ihdi12", "femur")
    ds = roof_crop_dataset(recs, lay, KP_SIZE, MARGIN, augment=augment, side="left", mirror=True, threads=1,
                           stage="femur")
    by_stem = {r.stem: r for r in recs}
    for index in range(2 * len(ds)):
        it = ds[index]
        s = ds.samples[it["index"]]
        truth = np.asarray(by_stem[s.stem].keypoints, float)[stage_indices(lay, s.side, "femur")]
        np.testing.assert_array_equal(it["image_kps"].numpy(), truth)
        back = crop_to_image_points(it["keypoints"].numpy()[None], it["matrix"].numpy()[None], [s.mirrored], fem)
        assert np.abs(back[0] - truth).max() < 1e-4
        kp = it["keypoints"].numpy()
        assert ((kp > -0.5) & (kp < KP_SIZE - 0.5)).all()


def _points(df, lay, idx):
    return df[[f"pred_{a}_{j}" for j in idx for a in "xy"]].to_numpy()


@pytest.mark.parametrize("layout", ["ihdi12", "mtddh8"])
def test_roof_and_femur_refiners_together_give_every_point(layout, request, tmp_path, monkeypatch):
    split = request.getfixturevalue("data_mtddh8" if layout == "mtddh8" else "data") / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    lay = get_layout(layout)
    fakes = {"kp": PerfectModel(_misplaced(records, lay, ALL_SHIFT), layout, "left", "simcc_2d"),
             "R": PerfectRefiner(records, layout, "left", "simcc_2d", shifts=ALL_SHIFT),
             "F": PerfectRefiner(records, layout, "right", "simcc_2d", stage="femur", shifts=ALL_SHIFT)}
    paths = _install(monkeypatch, tmp_path, fakes)
    args = dict(use_gt_box=True, device="cpu", batch_size=3, progress=False, overlays=False, make_plots=False)
    P.run_prediction(split, tmp_path / "first", kp_left_path=paths["kp"], **args)
    first = _csv(tmp_path / "first").set_index("stem")
    roof = np.concatenate([stage_indices(lay, s, "roof") for s in SIDES])
    femur = np.concatenate([stage_indices(lay, s, "femur") for s in SIDES])
    assert sorted(np.concatenate([roof, femur]).tolist()) == list(range(lay.num_points))   # together: every point
    # the femur refiner before the roof one on the command line: the roof is still refined first
    s = P.run_prediction(split, tmp_path / "both", kp_left_path=paths["kp"], refine_path=[paths["F"], paths["R"]],
                         **args)
    assert s["refine_model"] == f"{paths['R']} + {paths['F']}"
    _check_exact(tmp_path / "both", split, layout)
    # the femur refiner alone: the femur points exact, the roof points the first stage's
    P.run_prediction(split, tmp_path / "femur", kp_left_path=paths["kp"], refine_path=paths["F"], **args)
    only = _csv(tmp_path / "femur").set_index("stem")
    gt = only[[f"gt_{a}_{j}" for j in femur for a in "xy"]].to_numpy()
    assert np.abs(_points(only, lay, femur) - gt).max() < 1e-3
    assert np.abs(_points(first, lay, femur) - gt).min() > 0.4
    np.testing.assert_array_equal(_points(only, lay, roof), _points(first, lay, roof))
    # each refiner saw one crop per hip, the other side mirrored
    for fake, side in ((fakes["R"], "left"), (fakes["F"], "right")):
        want = sorted((r.stem, sd, sd != side) for r in records for sd in SIDES)
        assert sorted(set(fake.served)) == want


def test_the_gate_shift_is_the_largest_move_over_both_refiners(monkeypatch):
    lay, kps, item, roof_len = first_stage_item()
    moves = {"roof": {"left": 0.1, "right": 0.05}, "femur": {"left": 0.02, "right": 0.3}}

    for stage in ("roof", "femur"):
        def fake_infer(items, models, layout, *a, **k):   # the refiner: its points moved down
            for it in items:
                for s in it.crops:
                    first = kps[stage_indices(lay, s, stage)]
                    it.points[s] = (first + [0.0, moves[stage][s] * roof_len], np.ones(3))
        monkeypatch.setattr(P, "infer_stage", fake_infer)
        P.refine_stage([item], {s: StubRefiner() for s in SIDES}, lay, stage=stage)
    assert item.refine_shift["left"] == pytest.approx(0.1) and item.refine_shift["right"] == pytest.approx(0.3)
    moved = item.points["right"][0]
    np.testing.assert_allclose(moved[3:] - kps[9:], [[0, 0.3 * roof_len]] * 3)   # the femur block moved


# ---------------------------------------------------------------------------- tiny real checkpoints
@pytest.fixture(scope="module")
def tiny(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("femur_ckpts")
    return {"hip": train_tiny_keypoints(data, out, "tiny_hip", KP_SIZE),
            "roof": train_tiny_keypoints(data, out, "tiny_roof", KP_SIZE, stage="roof"),
            "femur": train_tiny_keypoints(data, out, "tiny_femur", KP_SIZE, stage="femur", roof_margin=0.4)}


def test_stage_femur_trains_and_predicts_with_the_roof_refiner(data, tiny, tmp_path):
    cfg = load_keypoint_model(tiny["femur"])[2]
    assert cfg["stage"] == "femur" and cfg["num_keypoints"] == 3 and cfg["crop_expand"] == 0.4
    out = {}
    for name, extra in (("plain", []), ("roof", [str(tiny["roof"])]), ("both", [str(tiny["roof"]), str(tiny["femur"])])):
        out[name] = tmp_path / name
        script.main(["--kp_left_path", str(tiny["hip"]), "--data", str(data / "test"), "--output_dir", str(out[name]),
                     "--use_gt_box", "--device", "cpu", "--no_overlays", "--worst_n", "0"]
                    + (["--refine_path", *extra] if extra else []))
    plain, roof, both = (_csv(out[n]).set_index("stem") for n in ("plain", "roof", "both"))
    lay = get_layout("ihdi12")
    femur = [int(j) for s in SIDES for j in stage_indices(lay, s, "femur")]
    for j in range(lay.num_points):
        cols = [f"pred_x_{j}", f"pred_y_{j}"]
        assert np.array_equal(roof[cols].to_numpy(), both[cols].to_numpy()) == (j not in femur), j
        assert not np.array_equal(plain[cols].to_numpy(), both[cols].to_numpy()), j   # every point refined


@pytest.mark.parametrize("flags, message", [
    (["--kp_left_path", "{femur}"], "error: --kp_left_path: {femur} is a femur refiner (trained with --stage femur); "
                                    "give it as --refine_path"),
])
def test_a_femur_refiner_as_the_first_stage_exits_2(flags, message, data, tiny, tmp_path, capsys):
    check_exits_2(flags, message, data, tiny, tmp_path, capsys)


def test_stage_femur_refuses_the_ai_loss(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train_script.main(["--data_dir", str(data), "--stage", "femur", "--ai_loss_weight", "0.1", "--epochs", "1",
                           "--device", "cpu", "--out", str(tmp_path / "w"), "--log_dir", str(tmp_path / "l")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --ai_loss_weight needs the roof's points: it is for --stage hip or roof, not femur")
