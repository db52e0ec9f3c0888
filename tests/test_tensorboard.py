"""TensorBoard events of a keypoint run, and the ConvNeXt V2 backbones trained through the loop.

- Every ConvNeXt V2 backbone trains a step through ``train`` and writes events that
  TensorBoard's own reader (``EventAccumulator``) reads back: the tags, one event per step or
  epoch, and the image of validation predictions.
- A longer run: the per-step loss at every step, the epoch scalars at every epoch, the
  validation ones only where it validated, the same numbers as the CSV log, the image every
  ``tb_image_every`` epochs and after the last, its size the crop sheet's.
- ``--no_tensorboard`` writes no events; ``--tensorboard`` without the package exits 2 in one line.
"""
import csv
import math
from pathlib import Path

import pytest

pytest.importorskip("tensorboard", reason="tensorboard is in requirements.txt; the events need it to be read")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import train_hip_crop_keypoints as train_script  # noqa: E402
import utils.pipelines.train_setup as setup  # noqa: E402
from models import list_backbones, load_keypoint_model  # noqa: E402
from test_bad_inputs import user_error  # noqa: E402
from test_predict import _phantom_split  # noqa: E402
from utils.pipelines.train import train  # noqa: E402

V2 = [n for n in list_backbones() if n.startswith("convnextv2_")]
EPOCH_TAGS = {"loss/train", "loss/val", "val/px_error", "val/nme", "lr", "time/epoch_s"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny phantom split (ihdi12): 6 train, 2 val, 4 test films."""
    return _phantom_split(tmp_path_factory.mktemp("tb_ihdi12"), "ihdi12", seed=0)


def _cfg(data, tmp_path, **kw):
    cfg = dict(data_dir=str(data), model_name="convnextv2_atto_custom", head_type="simcc_2d", input_size=32,
               epochs=1, batch_size=8, learning_rate=1e-3, out=str(tmp_path / "w"), log_dir=str(tmp_path / "logs"),
               exp_name="run", progress=False, device="cpu", seed=0, tensorboard=True)
    cfg.update(kw)
    return cfg


def _events(folder: Path) -> EventAccumulator:
    assert list(folder.glob("events.out.tfevents.*")), f"no event file in {folder}"
    ea = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


def _steps(ea, tag):
    return [e.step for e in ea.Scalars(tag)]


def test_the_convnext_v2_family_is_registered():
    assert set(V2) == {"convnextv2_atto_custom", "convnextv2_atto_ms", "convnextv2_nano_custom",
                       "convnextv2_tiny_custom", "convnextv2_tiny_ms"}
    assert {"convnextv2_atto_custom", "convnextv2_atto_ms"} == set(V2) & set(list_backbones(tiny=True))


@pytest.mark.parametrize("name", V2)
def test_each_convnext_v2_backbone_trains_a_step_and_writes_events(name, data, tmp_path):
    res = train(_cfg(data, tmp_path, model_name=name, max_steps=1, batch_size=4, tb_image_every=1))
    assert res["global_step"] == 1 and math.isfinite(res["history"][0]["train_loss"])
    model, _, conf = load_keypoint_model(res["paths"]["best"])
    assert conf["model_name"] == name and model.model_name == name
    ea = _events(tmp_path / "logs" / "tb" / "run")
    tags = ea.Tags()
    assert set(tags["scalars"]) == EPOCH_TAGS | {"loss/train_step"}
    assert all(_steps(ea, t) == [1] for t in tags["scalars"])
    assert tags["images"] == ["val/predictions"] and [e.step for e in ea.Images("val/predictions")] == [1]
    assert ea.Scalars("val/px_error")[0].value == pytest.approx(res["history"][0]["val_px_error"], rel=1e-5)


def test_events_per_step_and_epoch_match_the_csv_log(data, tmp_path):
    # 6 films x 2 sides = 12 crops a epoch, batch 8: 2 steps; validated at epochs 2 and 3 (the last)
    res = train(_cfg(data, tmp_path, epochs=3, val_every=2, tb_image_every=2, tb_name="ablation/atto"))
    ea = _events(tmp_path / "logs" / "tb" / "ablation" / "atto")
    assert _steps(ea, "loss/train_step") == [1, 2, 3, 4, 5, 6] == list(range(1, res["global_step"] + 1))
    for tag in ("loss/train", "lr", "time/epoch_s"):
        assert _steps(ea, tag) == [1, 2, 3], tag
    for tag in ("loss/val", "val/px_error", "val/nme"):
        assert _steps(ea, tag) == [2, 3], tag      # no NaN points for the epoch that did not validate
    with open(res["paths"]["log"], newline="") as f:
        rows = {int(r["epoch"]): r for r in csv.DictReader(f)}
    for tag, col in (("loss/train", "train_loss"), ("val/px_error", "val_px_error"), ("val/nme", "val_nme"),
                     ("lr", "lr")):
        for e in ea.Scalars(tag):
            assert e.value == pytest.approx(float(rows[e.step][col]), rel=1e-4), (tag, e.step)
    images = ea.Images("val/predictions")
    assert [e.step for e in images] == [2, 3]
    # 2 val films x 2 sides = 4 crops: one row of four 192 px cells
    assert (images[0].width, images[0].height) == (4 * 192, 192)
    assert Path(res["paths"]["log"]).is_file() and Path(res["paths"]["plot"]).is_file()   # CSV and PNG stay


def test_no_tensorboard_writes_no_events_and_tensorboard_without_the_package_exits_2(data, tmp_path, capsys,
                                                                                      monkeypatch):
    train(_cfg(data, tmp_path, max_steps=1, tensorboard=False))
    assert not (tmp_path / "logs" / "tb").exists()
    monkeypatch.setattr(setup, "tensorboard_installed", lambda: False)
    argv = ["--data_dir", data, "--model_name", "convnextv2_atto_custom", "--input_size", "32", "--epochs", "1",
            "--max_steps", "1", "--out", tmp_path / "w2", "--log_dir", tmp_path / "logs2", "--device", "cpu",
            "--tensorboard"]
    user_error(train_script.main, argv, capsys, "--tensorboard", "not installed", "--no_tensorboard")
    assert not (tmp_path / "w2").exists()
    # the default (neither flag) goes on without it
    train(_cfg(data, tmp_path / "auto", max_steps=1, tensorboard=None))
    assert not (tmp_path / "auto" / "logs" / "tb").exists()
