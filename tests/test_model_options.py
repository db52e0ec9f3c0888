"""The original study's model options: attention necks, the Muon optimizer and the single-stage
(full-image) baseline (docs/model_options.md).

- Necks: every name in ``NECKS`` on a single-map and a multi-scale (FPN) backbone keeps the
  feature shape, adds its parameters, trains a step and round-trips through a checkpoint.
- Muon: ``MuonWithAdamW`` steps a Linear weight exactly as ``torch.optim.Muon`` does, a conv
  kernel (also channels-last) exactly as Muon on its (out, in*kh*kw) matrix, and the rest
  exactly as AdamW; a run with ``--optimizer muon`` resumes to the same weights and
  optimizer state as an uninterrupted one.
- Full image: the letterbox matrix is exact; a perfect model (each letterboxed film matched
  to its training sample) comes back through ``run_full_image_prediction`` to the GT
  keypoints; a tiny real run trains, predicts with the same columns as the two-stage model,
  and each pipeline's checkpoints are refused by the other's predictor.
- Bad names: unknown ``--optimizer`` / ``--attention``: exit 2 with one line listing the choices.
"""
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch

import predict_full_image_keypoints as predict_script
import train_hip_crop_keypoints as train_script
import utils.pipelines.train as T
from datasets.formats import load_dataset, read_annotation
from datasets.splits import make_kfold
from datasets.full_image import FullImageDataset
from datasets.layouts import SIDES, get_layout
from models import NECKS, build_codec, build_model, get_loss, load_keypoint_model, save_checkpoint
from test_bad_inputs import user_error
from test_predict import KP_SIZE, PerfectModel, _phantom_split
from utils.cropping import apply_matrix, crop_to_image, letterbox_matrix, warp
from utils.pipelines.kfold_predict import run_kfold_prediction
from utils.pipelines.optimizers import MuonWithAdamW, adamw, make_optimizer
from utils.pipelines.predict import output_columns, run_prediction
from utils.pipelines.predict_full_image import run_full_image_prediction


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny phantom split (ihdi12): 6 train, 2 val, 4 test films of 160 px."""
    return _phantom_split(tmp_path_factory.mktemp("options_ihdi12"), "ihdi12", seed=0)


def _cfg(data, tmp_path, **kw):
    cfg = dict(data_dir=str(data), model_name="convnext_atto_custom", head_type="simcc_2d", input_size=KP_SIZE,
               epochs=1, max_steps=1, batch_size=8, learning_rate=1e-3, out=str(tmp_path / "w"),
               log_dir=str(tmp_path / "logs"), progress=False, tensorboard=False, device="cpu", seed=0)
    cfg.update(kw)
    return cfg


def _same_outputs(model_a, model_b, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    model_a.eval(), model_b.eval()
    with torch.no_grad():
        a, b = model_a(x), model_b(x)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ============================================================================ attention necks
@pytest.mark.parametrize("attention, backbone", [("se", "convnext_atto_custom"), ("eca", "convnext_atto_custom"),
                                                 ("cbam", "convnext_atto_custom"), ("cbam", "convnext_atto_ms")])
def test_attention_neck_trains_a_step_and_round_trips(backbone, attention, tmp_path):
    assert {"none", "se", "cbam", "eca"} <= set(NECKS.names())
    plain = build_model(backbone, "simcc_2d", 6, KP_SIZE)
    model = build_model(backbone, "simcc_2d", 6, KP_SIZE, attention=attention)
    neck_params = sum(p.numel() for p in model.neck.parameters())
    assert isinstance(plain.neck, torch.nn.Identity) and not list(plain.neck.parameters())
    assert neck_params > 0 and type(model.neck.attn).__module__.startswith("timm.layers")
    f = model.backbone(torch.zeros(1, 3, KP_SIZE, KP_SIZE))
    assert model.neck(f).shape == f.shape                        # shape-preserving, for every backbone
    # one optimizer step moves the neck's weights
    codec = build_codec("simcc_2d", KP_SIZE)
    targets, w = codec.encode(torch.rand(4, 6, 2) * (KP_SIZE - 1))
    opt = adamw(model.parameters(), 1e-2, 0.0)
    before = [p.detach().clone() for p in model.neck.parameters()]
    get_loss(None, "simcc_2d")(model(torch.randn(4, 3, KP_SIZE, KP_SIZE)), targets, w).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.neck.parameters()))
    # checkpoint -> load_keypoint_model -> the same model, same outputs
    path = save_checkpoint(tmp_path / "m.pth", model, {"layout": "ihdi12"})
    loaded, _, cfg = load_keypoint_model(path)
    assert cfg["attention"] == attention and loaded.attention == attention
    _same_outputs(model, loaded, KP_SIZE)


def test_attention_through_the_training_loop(data, tmp_path):
    res = T.train(_cfg(data, tmp_path, attention="cbam"))
    model, _, cfg = load_keypoint_model(res["paths"]["best"])
    assert cfg["attention"] == "cbam" and cfg["train"]["attention"] == "cbam" and "cbam" in res["exp_name"]
    assert sum(p.numel() for p in model.neck.parameters()) > 0


# ============================================================================ Muon
class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc = torch.nn.Linear(8, 5)
        self.head = torch.nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.fc(self.conv(x).mean((2, 3))))


@pytest.mark.parametrize("channels_last", [False, True])
def test_muon_steps_matrices_like_torch_muon_and_the_rest_like_adamw(channels_last):
    torch.manual_seed(0)
    model = _Tiny()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        assert not model.conv.weight.is_contiguous()
    ref = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(model, 0.01, 0.1, "muon")
    assert isinstance(opt, MuonWithAdamW)
    assert [tuple(p.shape) for p in opt.param_groups[0]["params"]] == [(8, 3, 3, 3), (5, 8)]  # not the head
    model(torch.randn(4, 3, 6, 6)).square().sum().backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    opt.step()
    # the references: torch's Muon on the (flattened) matrices, AdamW on the rest, from the same start
    for name in ("conv.weight", "fc.weight"):
        p = torch.nn.Parameter(ref[name].reshape(len(ref[name]), -1).clone())
        p.grad = grads[name].reshape(p.shape)
        torch.optim.Muon([p], lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw").step()
        got = dict(model.named_parameters())[name].detach().reshape(p.shape)
        torch.testing.assert_close(got, p.detach(), rtol=0, atol=1e-6)
        assert not torch.allclose(got, ref[name].reshape(p.shape))
    for name in ("conv.bias", "fc.bias", "head.weight", "head.bias"):
        p = torch.nn.Parameter(ref[name].clone())
        p.grad = grads[name]
        torch.optim.AdamW([p], lr=0.01, weight_decay=0.1).step()
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), p.detach(), rtol=0, atol=1e-6)


def test_muon_state_round_trips_and_the_schedule_reaches_both_halves():
    torch.manual_seed(0)
    model = _Tiny()
    opt = make_optimizer(model, 0.01, 0.1, "muon")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    model(torch.randn(4, 3, 6, 6)).sum().backward()
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)
    assert opt.adamw.param_groups[0]["lr"] == pytest.approx(0.005)
    state = opt.state_dict()
    other = make_optimizer(_Tiny(), 0.01, 0.1, "muon")
    other.load_state_dict(state)
    assert other.param_groups[0]["lr"] == pytest.approx(0.005)
    for a, b in zip(opt.muon.state.values(), other.muon.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    with pytest.raises(ValueError, match="another --optimizer"):
        other.load_state_dict(torch.optim.AdamW(_Tiny().parameters()).state_dict())


@pytest.mark.slow   # three short runs: ~20 s on an idle 2-core machine
def test_muon_run_resumes_like_an_uninterrupted_one(data, tmp_path, monkeypatch):
    base = dict(optimizer="muon", epochs=2, max_steps=None, batch_size=6, deterministic=True)
    full = T.train(_cfg(data, tmp_path, exp_name="full", **base))
    real_plot, sent = T.plot_training_curves, []

    def plot_and_kill(history, path, title=""):
        real_plot(history, path, title)
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(T, "plot_training_curves", plot_and_kill)
    with pytest.raises(T.Interrupted):
        T.train(_cfg(data, tmp_path, exp_name="cut", **base))
    # the checkpoint's optimizer wins over a different --optimizer on resume
    resumed = T.train(_cfg(data, tmp_path, resume=str(tmp_path / "w" / "cut_last.pth"),
                           **dict(base, optimizer="adamw")))
    a = torch.load(full["paths"]["last"], weights_only=True)
    b = torch.load(resumed["paths"]["last"], weights_only=True)
    assert b["config"]["train"]["optimizer"] == "muon" and set(b["optimizer"]) == {"muon", "adamw", "muon_groups"}
    assert resumed["global_step"] == full["global_step"] == 4
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for i, st in a["optimizer"]["muon"]["state"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"]["muon"]["state"][i]["momentum_buffer"])
    model, _, _ = load_keypoint_model(full["paths"]["last"])
    _same_outputs(model, load_keypoint_model(resumed["paths"]["last"])[0], KP_SIZE)


# ============================================================================ the single-stage baseline
@pytest.mark.parametrize("w, h", [(200, 120), (90, 160), (64, 64)])
def test_letterbox_matrix_is_exact(w, h):
    S = 50
    M = letterbox_matrix(w, h, S)
    # the image's extent lands centred in the square, its longer side filling it
    corners = apply_matrix(M, [[-0.5, -0.5], [w - 0.5, h - 0.5]])
    scale = S / max(w, h)
    np.testing.assert_allclose(corners[1] - corners[0], [w * scale, h * scale], atol=1e-9)
    np.testing.assert_allclose(corners.mean(0), [(S - 1) / 2, (S - 1) / 2], atol=1e-9)
    pts = np.random.default_rng(0).uniform(0, [w - 1, h - 1], (20, 2))
    np.testing.assert_allclose(crop_to_image(M, apply_matrix(M, pts)), pts, atol=1e-9)
    # the warp puts a bright pixel where the matrix says
    img = np.zeros((h, w), np.uint8)
    img[h // 3, w // 4] = 255
    out = warp(img, letterbox_matrix(w, h, max(w, h)), max(w, h))   # scale 1: an integer shift
    y, x = np.unravel_index(out.argmax(), out.shape)
    np.testing.assert_allclose(apply_matrix(letterbox_matrix(w, h, max(w, h)), [w // 4, h // 3]), [x, y])


class PerfectFullModel(PerfectModel):
    """``PerfectModel`` over the training-time letterboxed films: each input is matched to its
    ``FullImageDataset`` sample, answered with that sample's target (all 12 points)."""

    def __init__(self, records, layout, head_type, input_size=KP_SIZE):
        super().__init__(records, layout, "left", head_type, input_size)
        self.ds = FullImageDataset(records, input_size, augment=None, layout=layout, threads=1)
        items = [self.ds[i] for i in range(len(self.ds))]
        self.images = torch.stack([it["image"] for it in items])
        self.targets = torch.stack([it["keypoints"] for it in items])
        self.config.update(pipeline="full_image", num_keypoints=get_layout(layout).num_points)


@pytest.mark.parametrize("head", ["simcc_2d", "direct_regression"])
def test_perfect_full_image_model_maps_back_exactly(head, data, tmp_path, monkeypatch):
    split = data / "test"
    records = load_dataset(split, require_annotations=True)
    fake = PerfectFullModel(records, "ihdi12", head)
    path = tmp_path / "full.pth"
    path.write_bytes(b"not read")
    monkeypatch.setattr("models.checkpoint.load_keypoint_model", lambda p, device="cpu": (fake, fake.codec,
                                                                                          fake.config))
    out = tmp_path / "out"
    s = run_full_image_prediction(split, out, kp_path=str(path), device="cpu", batch_size=3, progress=False,
                                  overlays=False, make_plots=False)
    assert s["n_images"] == len(records) and s["pipeline"] == "full_image"
    assert fake.match_dist < 1e-5 and fake.runner_up > 0.1          # every film matched its training sample
    df = pd.read_csv(out / "predictions.csv")
    assert list(df.columns) == output_columns("ihdi12", True)        # the two-stage schema
    assert (df["status"] == "ok").all() and df[[f"detected_{s}" for s in SIDES]].all().all()
    assert df[[f"iou_{s}" for s in SIDES] + [f"crop_side_{s}" for s in SIDES]].isna().all().all()
    for _, row in df.iterrows():
        gt = read_annotation(split / "annotations" / f"{row['stem']}.csv")
        pred = np.array([[row[f"pred_x_{j}"], row[f"pred_y_{j}"]] for j in range(12)])
        assert np.linalg.norm(pred - gt, axis=1).max() < 0.05, row["stem"]
        for s in SIDES:
            assert abs(row[f"pred_ai_{s}"] - row[f"gt_ai_{s}"]) < 0.05
            assert row[f"pred_ihdi_{s}"] == row[f"gt_ihdi_{s}"]


def test_full_image_trains_predicts_and_each_predictor_refuses_the_other(data, tmp_path, monkeypatch, capsys):
    assert "_fullimage_" in T.default_exp_name(T.resolve_config({"pipeline": "full_image"}))
    res = T.train(_cfg(data, tmp_path, pipeline="full_image", exp_name="full"))
    model, codec, cfg = load_keypoint_model(res["paths"]["best"])
    assert cfg["pipeline"] == "full_image" and cfg["num_keypoints"] == 12 and model.num_keypoints == 12
    out = tmp_path / "pred"
    predict_script.main(["--kp_path", res["paths"]["best"], "--data", str(data / "test"), "--output_dir", str(out),
                         "--device", "cpu", "--max_overlays", "1"])
    df = pd.read_csv(out / "predictions.csv")
    assert list(df.columns) == output_columns("ihdi12", True) and len(df) == 4
    assert np.isfinite(df[[f"pred_x_{j}" for j in range(12)]].to_numpy()).all()
    assert (out / "metrics.json").is_file() and len(list((out / "overlays").glob("*.png"))) == 1
    # a full-image checkpoint in the two-stage predictor, and a hip-crop one here: exit 2, one line
    with pytest.raises(T.UserError, match="full-image model"):
        run_prediction(data / "test", tmp_path / "p2", kp_left_path=res["paths"]["best"], use_gt_box=True,
                       device="cpu", progress=False)
    crop = save_checkpoint(tmp_path / "crop.pth", build_model("convnext_atto_custom", "simcc_2d", 6, KP_SIZE),
                           {"layout": "ihdi12", "side": "left"})
    user_error(predict_script.main, ["--kp_path", crop, "--data", data / "test",
                                     "--output_dir", tmp_path / "p3"], capsys, "hip-crop model")


# ============================================================================ bad names
@pytest.mark.parametrize("flag, value, choices", [
    ("--optimizer", "sgd", ["adamw", "muon"]),
    ("--attention", "transformer", ["none", "se", "cbam", "eca"]),
    ("--pipeline", "three_stage", ["hip_crop", "full_image"]),
])
def test_unknown_option_name_exits_2_listing_the_choices(flag, value, choices, data, tmp_path, capsys):
    line = user_error(train_script.main, ["--data_dir", data, "--out", tmp_path / "w", "--log_dir", tmp_path / "l",
                                          flag, value], capsys, value, *choices)
    assert line.startswith("error: ")


def test_kfold_prediction_takes_the_full_image_pipeline(data, tmp_path, monkeypatch):
    root = tmp_path / "kfold"
    make_kfold(data / "test", root, k=2, seed=0)
    records = load_dataset(data / "test", require_annotations=True)
    fake = PerfectFullModel(records, "ihdi12", "simcc_2d")
    for i in (1, 2):
        (tmp_path / f"full_fold{i}.pth").write_bytes(b"not read")
    monkeypatch.setattr("models.checkpoint.load_keypoint_model", lambda p, device="cpu": (fake, fake.codec,
                                                                                          fake.config))
    out = tmp_path / "out"
    res = run_kfold_prediction(root, out, k=2, pipeline="full_image", device="cpu", batch_size=4, imgsz=640,
                               kp_left_tpl=str(tmp_path / "full_fold{fold}.pth"), max_overlays=0, strict=False)
    assert res["folds"] == [1, 2]
    for i in (1, 2):
        df = pd.read_csv(out / f"fold{i}" / "predictions.csv")
        assert len(df) == len(list((root / f"fold{i}" / "images").iterdir()))
        assert (df["mean_err_px"] < 0.05).all()
