"""The training loop on a tiny CPU model: outputs, best-checkpoint choice, resume after a
signal, NaN handling, determinism, and the script's exit codes."""
import copy
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import utils.pipelines.train as T
from utils.devices import select_amp
from tests.helpers import make_tiny_dataset, sigterm_after_first_epoch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    make_tiny_dataset(root / "train", n=8, size=128, seed=0)
    make_tiny_dataset(root / "val", n=4, size=128, seed=1)
    return root


def _cfg(data_dir, tmp_path, **kw):
    cfg = dict(data_dir=str(data_dir), model_name="convnext_atto_custom", head_type="simcc_2d", input_size=64,
               epochs=2, batch_size=8, learning_rate=1e-3, sigma=3.0, out=str(tmp_path / "w"),
               log_dir=str(tmp_path / "logs"), progress=False, seed=3)
    cfg.update(kw)
    return cfg


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_train_writes_checkpoints_logs_and_plot(data_dir, tmp_path, monkeypatch):
    # validation errors 5, 3, 4 px: the best is epoch 2, although epoch 3 trains further
    snapshots, fake = {}, iter([5.0, 3.0, 4.0])
    real_validate = T.validate

    def validate(model, *a, **k):
        m = real_validate(model, *a, **k)
        snapshots[len(snapshots) + 1] = copy.deepcopy(model.state_dict())
        return {**m, "val_px_error": next(fake)}

    monkeypatch.setattr(T, "validate", validate)
    res = T.train(_cfg(data_dir, tmp_path, epochs=3))
    p = res["paths"]
    assert res["exp_name"] == "convnext_atto_custom_simcc_2d_sr2.0_sigma3.0_cropleft_mirror_64_3_0.001_8"
    for k in ("best", "last", "log", "plot"):
        assert Path(p[k]).is_file() and Path(p[k]).stat().st_size > 0, k
    rows = _rows(p["log"])
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert list(rows[0]) == list(T.LOG_COLUMNS)
    assert [float(r["val_px_error"]) for r in rows] == [5.0, 3.0, 4.0]
    assert all(float(r["train_loss"]) > 0 and float(r["val_nme"]) > 0 for r in rows)
    img = cv2.imread(p["plot"])
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 600

    best, last = _state(p["best"]), _state(p["last"])
    cfg = best["config"]
    assert cfg["epoch"] == 2 and cfg["metrics"]["val_px_error"] == 3.0
    assert res["best_metrics"]["epoch"] == 2 and res["best_metrics"]["val_px_error"] == 3.0
    for key, want in dict(model_name="convnext_atto_custom", head_type="simcc_2d", input_size=64, layout="ihdi12",
                          num_keypoints=6, side="left", mirror=True, crop_expand=0.10, hist_eq=True, sigma=3.0,
                          split_ratio=2.0, exp_name=res["exp_name"]).items():
        assert cfg[key] == want, key
    assert len(cfg["mean"]) == 3 and len(cfg["std"]) == 3
    # best holds epoch 2's weights exactly, not the later ones
    for k, v in snapshots[2].items():
        assert torch.equal(best["state_dict"][k], v), k
    assert any(not torch.equal(last["state_dict"][k], snapshots[2][k]) for k in snapshots[2])
    for k, v in snapshots[3].items():
        assert torch.equal(last["state_dict"][k], v), k
    # last carries the training state
    assert last["epoch"] == 3 and last["best_metric"] == 3.0
    assert last["scheduler"]["last_epoch"] == res["global_step"] == 6  # 16 crops / batch 8 = 2 steps per epoch
    assert isinstance(last["rng"]["torch"], torch.Tensor) and len(last["optimizer"]["state"]) > 0

    # a fresh process loads the best model from its path alone and predicts
    code = ("import sys, torch; from models.checkpoint import load_keypoint_model;"
            "m, c, cfg = load_keypoint_model(sys.argv[1]);"
            "xy, conf = c.decode(m(torch.zeros(2, 3, cfg['input_size'], cfg['input_size'])));"
            "print(cfg['layout'], tuple(xy.shape))")
    out = subprocess.run([sys.executable, "-c", code, p["best"]], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "ihdi12 (2, 6, 2)"


def test_training_curves_are_redrawn_at_most_every_plot_every_s_and_after_the_last_epoch(data_dir, tmp_path,
                                                                                          monkeypatch):
    drawn = []
    monkeypatch.setattr(T, "plot_training_curves", lambda history, path, title="": drawn.append(len(history)))
    monkeypatch.setattr(T, "PLOT_EVERY_S", 1e9)
    T.train(_cfg(data_dir, tmp_path, epochs=4))
    assert drawn == [1, 4]  # the first epoch, then only the last
    drawn.clear()
    monkeypatch.setattr(T, "PLOT_EVERY_S", 0.0)
    T.train(_cfg(data_dir, tmp_path, epochs=3, exp_name="every"))
    assert drawn == [1, 2, 3]
    drawn.clear()
    monkeypatch.setattr(T, "PLOT_EVERY_S", 1e9)
    T.train(_cfg(data_dir, tmp_path, epochs=5, max_steps=4, exp_name="stopped"))  # 2 steps an epoch: stops after 2
    assert drawn == [1, 2]  # the epochs run when --max_steps stops the loop early are drawn too


def test_resume_after_sigterm_matches_an_uninterrupted_run(data_dir, tmp_path, monkeypatch):
    base = dict(deterministic=True, epochs=3)
    full = T.train(_cfg(data_dir, tmp_path, exp_name="full", **base))

    # the same run, stopped by SIGTERM while epoch 1 is being logged
    real_plot = T.plot_training_curves
    sent = []

    def plot_and_kill(history, path, title=""):
        real_plot(history, path, title)
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(T, "plot_training_curves", plot_and_kill)
    with pytest.raises(T.Interrupted) as exc:
        T.train(_cfg(data_dir, tmp_path, exp_name="cut", **base))
    assert exc.value.exit_code == 143
    last = _state(tmp_path / "w" / "cut_last.pth")
    assert last["epoch"] == 1 and last["scheduler"]["last_epoch"] == 2
    assert [int(r["epoch"]) for r in _rows(tmp_path / "logs" / "cut_training_log.csv")] == [1]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored

    # resume from the path; its own settings win over a different --model_name
    resumed = T.train(_cfg(data_dir, tmp_path, resume=str(tmp_path / "w" / "cut_last.pth"),
                           model_name="convnext_small_custom", **base))
    assert resumed["exp_name"] == "cut"
    assert resumed["epochs_run"] == 3 and resumed["global_step"] == full["global_step"] == 6
    assert [int(r["epoch"]) for r in _rows(resumed["paths"]["log"])] == [1, 2, 3]
    a, b = _state(full["paths"]["last"]), _state(resumed["paths"]["last"])
    assert b["scheduler"]["last_epoch"] == a["scheduler"]["last_epoch"] == 6
    assert b["scheduler"]["_last_lr"] == a["scheduler"]["_last_lr"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for i, st in a["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
    assert [r["val_px_error"] for r in resumed["history"]] == [r["val_px_error"] for r in full["history"]]
    assert b["config"]["model_name"] == "convnext_atto_custom"
    # 'auto' finds this run's last checkpoint, or starts afresh; a best checkpoint cannot resume
    cfg = T.resolve_config(_cfg(data_dir, tmp_path, resume="auto"))
    assert T.resolve_resume(cfg, tmp_path / "w", "cut") == tmp_path / "w" / "cut_last.pth"
    assert T.resolve_resume(cfg, tmp_path / "w", "other") is None
    with pytest.raises(T.UserError, match="training state"):
        T.train(_cfg(data_dir, tmp_path, resume=full["paths"]["best"]))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
    from models.registry import LOSSES
    poison = []
    real_loss, real_log = LOSSES["simcc_kl"], T.write_log_csv
    saved = {}

    def loss(outputs, targets, weights=None):
        value = real_loss(outputs, targets, weights)
        return value * float("nan") if poison else value

    def log_then_poison(history, path):
        real_log(history, path)
        saved["last"] = (tmp_path / "w" / "nan_last.pth").read_bytes()
        poison.append(1)

    monkeypatch.setitem(LOSSES._items, "simcc_kl", loss)  # the loss is looked up by name at set-up
    monkeypatch.setattr(T, "write_log_csv", log_then_poison)
    # (the training set given as an image list, as k-fold inner splits are stored)
    listing = tmp_path / "train.txt"
    listing.write_text("\n".join(str(p) for p in sorted((data_dir / "train" / "images").iterdir())) + "\n")
    with pytest.raises(T.NonFiniteLoss, match=r"non-finite training loss \(nan\) at epoch 2, step 3"):
        T.train(_cfg(data_dir, tmp_path, exp_name="nan", epochs=3, train_dir=str(listing),
                     val_dir=str(data_dir / "val")))
    assert (tmp_path / "w" / "nan_last.pth").read_bytes() == saved["last"]
    assert _state(tmp_path / "w" / "nan_last.pth")["epoch"] == 1
    assert len(_rows(tmp_path / "logs" / "nan_training_log.csv")) == 1


def test_seeded_deterministic_runs_are_identical(data_dir, tmp_path):
    runs = [T.train(_cfg(data_dir, tmp_path, exp_name=f"det{i}", seed=seed, deterministic=True, max_steps=3,
                         epochs=2, rot=15.0, box_jitter=0.05, val_every=5))
            for i, seed in enumerate((11, 11, 12))]
    sds = [_state(r["paths"]["last"])["state_dict"] for r in runs]
    assert runs[0]["global_step"] == 3 and runs[0]["epochs_run"] == 2
    assert all(torch.equal(v, sds[1][k]) for k, v in sds[0].items())
    assert not all(torch.equal(v, sds[2][k]) for k, v in sds[0].items())


def test_lr_schedule_warmup_then_cosine():
    f = T.warmup_cosine(100, 0.1, 1e-4, 1e-6)
    lrs = np.array([f(s) * 1e-4 for s in range(100)])
    assert np.all(np.diff(lrs[:10]) > 0) and abs(lrs[9] - 1e-4) < 1e-12
    assert np.all(np.diff(lrs[10:]) < 0)
    assert abs(f(100) * 1e-4 - 1e-6) < 1e-12 and abs(f(500) * 1e-4 - 1e-6) < 1e-12


def test_config_errors(tmp_path):
    with pytest.raises(T.UserError, match="unknown training option"):
        T.train({"learningrate": 1})
    with pytest.raises(T.UserError, match="training folder not found"):
        T.train(_cfg(tmp_path / "nowhere", tmp_path))
    assert T.select_device("auto").type in ("cpu", "cuda")
    assert select_amp("bf16", torch.device("cpu")) == (None, False)


def test_script_sigterm_saves_last_and_exits_143(data_dir, tmp_path):
    out, logs = tmp_path / "w", tmp_path / "logs"
    cmd = [sys.executable, "train_hip_crop_keypoints.py", "--data_dir", str(data_dir), "--model_name",
           "convnext_atto_custom", "--input_size", "64", "--epochs", "500", "--batch_size", "8",
           "--out", str(out), "--log_dir", str(logs), "--exp_name", "sig", "--no-progress"]
    returncode, err = sigterm_after_first_epoch(cmd, ROOT, logs / "sig_training_log.csv", 120, 60)
    assert returncode == 143, err[-2000:]
    assert "interrupted: saved" in err and "--resume auto" in err
    assert _state(out / "sig_last.pth")["epoch"] >= 1

    # a user error is one line and exit code 2
    bad = subprocess.run([sys.executable, "train_hip_crop_keypoints.py", "--data_dir", str(tmp_path / "none")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: training folder not found")


def test_ai_loss_weight_adds_the_roof_angle_term_and_is_saved(data_dir, tmp_path):
    """Same seed, same first batch: the run with --ai_loss_weight reports the base loss plus a
    non-negative roof-angle term; the weight is stored in the checkpoint."""
    runs = {w: T.train(_cfg(data_dir, tmp_path, exp_name=f"ai{w}", ai_loss_weight=w, max_steps=1, epochs=1,
                            deterministic=True)) for w in (0.0, 0.5)}
    loss = {w: float(_rows(r["paths"]["log"])[0]["train_loss"]) for w, r in runs.items()}
    assert loss[0.5] > loss[0.0] + 1e-3
    assert _state(runs[0.5]["paths"]["best"])["config"]["train"]["ai_loss_weight"] == 0.5
    with pytest.raises(T.UserError, match="ai_loss_weight"):
        T.train(_cfg(data_dir, tmp_path, ai_loss_weight=-1.0))
