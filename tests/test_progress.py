"""Progress output (utils/progress.py): a tqdm bar in a terminal; in a log file whole lines only,
no carriage returns: one per epoch in training, one per N images in prediction; Ultralytics'
own bars made non-interactive the same way (utils/pipelines/yolo_env.py)."""
import io
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import make_tiny_dataset
from utils.progress import PlainProgress, every_for, interactive, progress_bar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_gets_tqdm_and_a_file_gets_plain_lines():
    tty, log = FakeTerminal(), io.StringIO()
    assert interactive(tty) and not interactive(log)
    bar = progress_bar(range(50), desc="predict", unit="img", stream=tty, mininterval=0)
    assert not isinstance(bar, PlainProgress)
    list(bar)
    bar.close()
    assert "\r" in tty.getvalue()                   # the redraws of an interactive bar

    bar = progress_bar(total=50, desc="predict", unit="img", every=10, stream=log)
    assert isinstance(bar, PlainProgress)
    for _ in range(25):
        bar.update(2)
    bar.close()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert [ln.split(",")[0] for ln in lines] == [f"predict: {n}/50 img ({2 * n}%)" for n in (10, 20, 30, 40, 50)]
    assert "eta" in lines[0] and "eta" not in lines[-1]


def test_plain_progress_every_zero_is_silent_and_disabled_is_silent_everywhere():
    log = io.StringIO()
    bar = progress_bar(range(7), desc="epoch 1/3", every=0, stream=log)
    assert list(bar) == list(range(7)) and bar.n == 7
    bar.set_postfix(loss="0.1")
    bar.close()
    assert log.getvalue() == ""
    tty = FakeTerminal()
    bar = progress_bar(range(3), enabled=False, every=1, stream=tty)
    list(bar)
    bar.close()
    assert tty.getvalue() == ""


def test_plain_line_for_an_unfinished_run_and_unknown_total():
    log = io.StringIO()
    with PlainProgress(total=None, desc="x", unit="img", every=3, stream=log) as bar:
        bar.update(4)
        bar.set_postfix(loss="0.25")
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("x: 4 img,") and "eta" not in lines[0]
    assert len(lines) == 1                          # nothing new since that line: close adds none
    assert every_for(240, 16) == 24 and every_for(20, 16) == 16 and every_for(0, 1) == 1


def test_ultralytics_bars_are_plain_when_stdout_is_not_a_terminal():
    code = textwrap.dedent("""
        import io
        from utils.pipelines.yolo_env import ultralytics
        ultralytics()
        from ultralytics.utils.tqdm import TQDM
        f = io.StringIO()
        for _ in TQDM(range(200), desc="epoch 1/3", file=f, mininterval=0):
            pass
        print(repr(f.getvalue()))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stdout
    bar_text = eval(out.stdout.strip().splitlines()[-1])
    assert "\r" not in bar_text and bar_text.count("\n") == 1 and "200/200" in bar_text


@pytest.mark.slow
def test_training_and_prediction_logs_to_a_file_have_no_carriage_returns(tmp_path):
    for split, n, seed in (("train", 12, 0), ("val", 4, 1), ("test", 12, 2)):
        make_tiny_dataset(tmp_path / "data" / split, n=n, size=128, seed=seed)
    code = textwrap.dedent(f"""
        import train_hip_crop_keypoints as T, predict_hip_crop_keypoints as P
        T.main(["--data_dir", r"{tmp_path / 'data'}", "--model_name", "convnext_atto_custom", "--head_type",
                "simcc_2d", "--input_size", "64", "--epochs", "3", "--batch_size", "4", "--device", "cpu",
                "--out", r"{tmp_path / 'w'}", "--log_dir", r"{tmp_path / 'logs'}", "--exp_name", "p",
                ])
        P.main(["--data", r"{tmp_path / 'data' / 'test'}", "--output_dir", r"{tmp_path / 'res'}",
                "--kp_left_path", r"{tmp_path / 'w' / 'p_best.pth'}", "--use_gt_box", "--batch_size", "2",
                "--no_overlays", "--device", "cpu"])
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stdout[-3000:]
    log = out.stdout
    assert "\r" not in log
    epoch_lines = [ln for ln in log.splitlines() if " epoch " in f" {ln}" and "train_loss" in ln]
    assert len(epoch_lines) == 3, log
    predict_lines = [ln for ln in log.splitlines() if ln.startswith("predict: ")]
    # 12 images, batches of 2, a line per max(2, ceil(12 / 10)) = 2 images
    assert [ln.split(",")[0] for ln in predict_lines] == [f"predict: {n}/12 img ({100 * n / 12:.0f}%)"
                                                          for n in range(2, 13, 2)], log
