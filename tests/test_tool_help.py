"""What the tools say about themselves: the training log names the optimizer, train_yolo.py --help
shows the defaults, the full-image training --help lists no flag it ignores."""
import pytest
import torch

from utils.pipelines.optimizers import describe_optimizer, make_optimizer


def test_the_optimizer_is_named():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    line = describe_optimizer(make_optimizer(m, 1e-3, 0.01, "adamw"))
    assert line.startswith("AdamW") and "lr 1e-03" in line and "weight decay 0.01" in line
    muon = describe_optimizer(make_optimizer(m, 1e-3, 0.01, "muon"))
    assert muon.startswith("Muon on ") and "+ AdamW on" in muon


def _help(main, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_train_yolo_help_shows_defaults(capsys):
    from train_yolo import main
    out = _help(main, capsys)
    assert "(default: data/data.yaml)" in out and out.count("(default:") >= 5


def test_full_image_training_help_lists_no_ignored_flag(capsys):
    from train_full_image_keypoints import build_parser, main
    out = _help(main, capsys)
    for flag in ("--side", "--mirror", "--stage", "--roof_margin", "--crop_expand", "--box_jitter"):
        assert flag + " " not in out and flag + "\n" not in out, flag
    assert "--input_size" in out and "--epochs" in out
    assert build_parser().parse_args(["--side", "right"]).side == "right"     # still accepted, only hidden
