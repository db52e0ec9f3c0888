"""utils.config: the one place of every default (argparse, checkpoints, resume, prediction)."""
import argparse
import inspect

import pytest
import torch

from utils.config import (IMAGENET_MEAN, Data, PredictConfig, Preprocess, TrainConfig, add_arguments)
from utils.errors import UserError


def _parser():
    from utils.pipelines.train import add_train_args
    return add_train_args(argparse.ArgumentParser())


def test_argparse_defaults_are_the_dataclass_defaults_and_flags_kept():
    args = vars(_parser().parse_args([]))
    defaults = TrainConfig.defaults()
    assert args == defaults
    flags = {a for act in _parser()._actions for a in act.option_strings}
    for f in ("--data_dir", "--train_dir", "--val_dir", "--side", "--mirror", "--no-mirror", "--crop_expand",
              "--hist_eq", "--no-hist_eq", "--rot", "--shift", "--scale_jitter", "--box_jitter", "--strict",
              "--model_name", "--head_type", "--input_size", "--split_ratio", "--sigma", "--pretrained",
              "--epochs", "--batch_size", "--learning_rate", "--weight_decay", "--grad_clip", "--warmup",
              "--min_lr", "--max_steps", "--val_every", "--device", "--amp", "--channels_last", "--compile",
              "--sync_bn", "--workers", "--seed", "--deterministic", "--out", "--log_dir", "--exp_name",
              "--resume", "--progress", "--no-progress", "--loss", "--tensorboard", "--no-tensorboard",
              "--no_tensorboard", "--tb_name", "--tb_image_every"):
        assert f in flags, f
    assert defaults["learning_rate"] == 1e-4 and defaults["input_size"] == 224 and defaults["crop_expand"] == 0.10


def test_parsed_flags_round_trip_through_a_checkpoint():
    from models import build_model, save_checkpoint, read_checkpoint
    from datasets.layouts import get_layout
    from utils.pipelines.train_state import checkpoint_config
    a = _parser().parse_args(["--epochs", "3", "--no-mirror", "--input_size", "64", "--model_name",
                              "convnext_atto_custom", "--loss", "simcc_kl", "--compile", "--no_tensorboard",
                              "--tb_image_every", "3"])
    cfg = TrainConfig.from_flat(a)
    assert cfg.optim.epochs == cfg["epochs"] == 3 and cfg.data.mirror is False and cfg.system.compile
    assert cfg.output.tensorboard is False and cfg.output.tb_image_every == 3
    conf = checkpoint_config(cfg, get_layout("ihdi12"), "x", 1, {"val_px_error": 2.0})
    model = build_model("convnext_atto_custom", "simcc_2d", 6, 64)
    import tempfile, pathlib
    with tempfile.TemporaryDirectory() as d:
        p = save_checkpoint(pathlib.Path(d) / "c.pth", model, conf)
        back = read_checkpoint(p)["config"]            # weights_only=True: plain types only
    assert TrainConfig.from_flat(back["train"]) == cfg
    assert Preprocess.from_checkpoint(back) == Preprocess(64, 0.10, True, IMAGENET_MEAN, tuple(back["std"]))


def test_unknown_keys_bad_types_and_ranges_are_errors():
    with pytest.raises(UserError, match="unknown training option"):
        TrainConfig.from_flat({"learningrate": 1})
    with pytest.raises(UserError, match="expected int"):
        TrainConfig.from_flat({"epochs": "many"})
    with pytest.raises(UserError, match="max_steps"):
        TrainConfig.from_flat({"max_steps": 0})
    assert TrainConfig.from_flat({"x": 1}, strict=False) == TrainConfig()


def test_resume_takes_the_checkpoint_settings_except_the_changeable_ones():
    saved = TrainConfig.from_flat({"model_name": "convnext_atto_custom", "epochs": 5, "seed": 7}).to_flat()
    warned = []
    now = TrainConfig.from_flat({"model_name": "hrnet_w32_custom", "epochs": 9, "device": "cpu"})
    merged = now.merged_with_checkpoint(saved, warn=warned.append)
    assert merged["model_name"] == "convnext_atto_custom" and merged["seed"] == 7     # from the checkpoint
    assert merged["epochs"] == 9 and merged["device"] == "cpu"                        # may change
    assert len(warned) == 1 and "model_name" in warned[0]
    assert set(TrainConfig.resume_may_change()) == {
        "data_dir", "train_dir", "val_dir", "strict", "epochs", "max_steps", "val_every", "device", "amp",
        "compile", "workers", "out", "log_dir", "resume", "progress", "tensorboard", "tb_name", "tb_image_every"}


def test_old_checkpoint_without_crop_keys_uses_the_training_defaults():
    p = Preprocess.from_checkpoint({"input_size": 96})
    assert (p.crop_expand, p.hist_eq) == (Data().crop_expand, Data().hist_eq) and p.mean == IMAGENET_MEAN


def test_run_prediction_defaults_are_the_predict_config():
    from utils.pipelines.predict import run_prediction
    sig = inspect.signature(run_prediction).parameters
    for name, value in PredictConfig().__dict__.items():
        assert sig[name].default == value, name
    a = add_arguments(argparse.ArgumentParser(), PredictConfig).parse_args(["--no_overlays", "--conf", "0.5"])
    assert a.overlays is False and a.conf == 0.5 and a.worst_n == 10


def test_demo_uses_the_config_names():
    from utils.pipelines.demo import SCALES
    for scale in SCALES.values():
        assert set(scale["keypoints"]) <= set(TrainConfig.fields()), scale["keypoints"]
