"""What the tools say about themselves: the training log names the optimizer, train_yolo.py --help
shows the defaults, the full-image training --help lists no flag it ignores."""
import cv2
import numpy as np
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


def test_overlay_and_hip_sheet_labels_fit_a_small_film():
    """On a ~300 px film a hip's label block fits in its half of the image (no cut-off text, no
    overlap with the other hip's), and a hip-sheet caption wraps inside its 256 px cell."""
    from utils.evaluation import overlays as O
    st = O._Style(300, 280)
    lines = [("R: AI 40.5 deg (interval uninformative)", (0, 0, 0)), ("IHDI ungradable", (0, 0, 0)),
             ("ungradable: stages_disagree, ai_out_of_range", (0, 0, 0))]
    half = 280 // 2 - st.pad
    fitted, scale = O._fit_lines(lines, st, half - 2 * st.pad)
    assert len(fitted) > len(lines) and scale >= O.MIN_FONT
    assert max(st.text_size(t, scale)[0] for t, _ in fitted) <= half - 2 * st.pad
    assert " ".join(t.strip() for t, _ in fitted) == " ".join(t for t, _ in lines)       # nothing dropped
    img = np.zeros((300, 280, 3), np.uint8)
    x0, _, bw, _ = O._text_block(img, lines, (250, 150), st, x_limits=(280 // 2 + st.pad, 280))
    assert x0 >= 280 // 2 + st.pad and x0 + bw <= 280
    cap = O._wrap("synth_00000 R: AI 40.5 IHDI ungradable (stages_disagree, ai_out_of_range)", 0.36, 250)
    assert len(cap) == 2 and all(cv2.getTextSize(c, O.FONT, 0.36, 1)[0][0] <= 250 for c in cap)
