"""Training with --hflip and the flip test's guard.

- A tiny model (and a tiny roof refiner) trained with ``--hflip 0.5`` for two steps carries the
  setting in its checkpoint (top-level ``hflip`` and the flat ``train`` config, plain types) and
  predicts with ``--flip_test``.
- ``--flip_test`` with a model trained on one orientation only (``hflip`` 0, or a checkpoint from
  before the setting) exits 2 with one ``error:`` line: first-stage models, every member of an
  ensemble, and roof refiners (``--refine_path``).
The dataset's flip itself (exact labels, consistent with ``flip_outputs``) is tested in
tests/test_crops.py.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

import predict_hip_crop_keypoints as script
from models.checkpoint import load_keypoint_model
from tests.helpers import train_tiny_keypoints
from tests.test_predict import KP_SIZE, _csv, data  # noqa: F401 (fixtures)
from utils.config import TrainConfig


@pytest.fixture(scope="module")
def tiny(data, tmp_path_factory):
    """{name: checkpoint}: hip and roof models trained with --hflip 0.5, a hip model without it, and
    that one as a checkpoint from before the setting (no hflip key at all)."""
    out = tmp_path_factory.mktemp("hflip_ckpts")
    ck = {"hip": train_tiny_keypoints(data, out, "hflip_hip", KP_SIZE, hflip=0.5),
          "roof": train_tiny_keypoints(data, out, "hflip_roof", KP_SIZE, stage="roof", hflip=0.5),
          "plain": train_tiny_keypoints(data, out, "plain_hip", KP_SIZE),
          "plain_roof": train_tiny_keypoints(data, out, "plain_roof", KP_SIZE, stage="roof")}
    old = torch.load(ck["plain"], map_location="cpu", weights_only=True)
    del old["config"]["hflip"], old["config"]["train"]["hflip"]
    ck["old"] = out / "old_hip.pth"
    torch.save(old, ck["old"])
    return ck


def _predict(ck, data, out, *extra):
    script.main(["--kp_left_path", str(ck), "--data", str(data / "test"), "--output_dir", str(out), "--use_gt_box",
                 "--device", "cpu", "--no_overlays", "--worst_n", "0", *map(str, extra)])


def test_hflip_is_saved_in_the_checkpoint_and_the_model_predicts_with_the_flip_test(data, tiny, tmp_path):
    for name, stage in (("hip", "hip"), ("roof", "roof")):
        ckpt = torch.load(tiny[name], map_location="cpu", weights_only=True)      # plain types only
        assert ckpt["config"]["hflip"] == 0.5 and ckpt["config"]["train"]["hflip"] == 0.5
        cfg = load_keypoint_model(tiny[name])[2]
        assert cfg["stage"] == stage and TrainConfig.from_flat(cfg["train"]).data.hflip == 0.5
    assert load_keypoint_model(tiny["plain"])[2]["hflip"] == 0.0                    # the default: off
    _predict(tiny["hip"], data, tmp_path / "flip", "--flip_test", "--refine_path", tiny["roof"])
    _predict(tiny["hip"], data, tmp_path / "plain")
    flip, plain = _csv(tmp_path / "flip"), _csv(tmp_path / "plain")
    cols = [c for c in flip.columns if c.startswith(("pred_x_", "pred_y_"))]
    assert len(flip) == len(plain) > 0 and np.isfinite(flip[cols].to_numpy(float)).all()
    assert not np.allclose(flip[cols].to_numpy(float), plain[cols].to_numpy(float))   # the flip did something


@pytest.mark.parametrize("kp, refine, culprit", [
    (["plain"], [], "--kp_left_path {plain}"),
    (["old"], [], "--kp_left_path {old}"),                      # a checkpoint from before --hflip
    (["hip", "plain"], [], "--kp_left_path {plain}"),           # every member of an ensemble
    (["hip"], ["plain_roof"], "--refine_path {plain_roof}"),    # the roof refiner too
    (["hip"], ["roof", "plain_roof"], "--refine_path {plain_roof}"),
])
def test_flip_test_refuses_a_model_trained_on_one_orientation(kp, refine, culprit, data, tiny, tmp_path, capsys):
    fill = {k: str(v) for k, v in tiny.items()}
    argv = ["--kp_left_path", *(fill[k] for k in kp), "--data", str(data / "test"), "--output_dir",
            str(tmp_path / "out"), "--use_gt_box", "--device", "cpu", "--flip_test"]
    if refine:
        argv += ["--refine_path", *(fill[k] for k in refine)]
    with pytest.raises(SystemExit) as e:
        script.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --flip_test needs a model trained with --hflip > 0 ({culprit.format(**fill)} was "
                   "trained on one orientation only; its mirrored crops are out of distribution)"), err
    assert not (tmp_path / "out" / "predictions.csv").exists()
    if kp == ["old"]:   # an old checkpoint still predicts without --flip_test
        _predict(fill["old"], data, tmp_path / "no_flip")
        assert Path(tmp_path / "no_flip" / "predictions.csv").is_file()


def test_the_accuracy_bench_trains_every_model_with_hflip(monkeypatch, tmp_path):
    """bench/accuracy.py (and bench/decoding.py, which reuses its parser and train_model) trains with
    --hflip 0.5 by default, so its baseline and +flip rows use one valid model."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    import accuracy   # (bench/accuracy.py: a script folder, not a package)

    seen = []
    monkeypatch.setattr("utils.pipelines.train.train", lambda cfg: seen.append(cfg) or {"paths": {"best": "b.pth"}})
    a = accuracy.parse_args(["--out", str(tmp_path)])
    assert a.hflip == 0.5
    accuracy.train_model(a, tmp_path, tmp_path, "base", 1)
    accuracy.train_model(a, tmp_path, tmp_path, "roof", 1, stage="roof")
    assert [c["hflip"] for c in seen] == [0.5, 0.5]
    assert accuracy.parse_args(["--hflip", "0"]).hflip == 0.0
