"""Keypoint models: backbone registry, heads, factory, local pretrained weights, checkpoints."""
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn

from models import HEADS, build_model, list_backbones, load_keypoint_model, save_checkpoint
from models.backbones import BACKBONES, UNAVAILABLE, build_backbone, unavailable_reason
from models.checkpoint import clean_state_dict, read_checkpoint
from models.heads import deconv_layers, heatmap_size

ROOT = Path(__file__).resolve().parents[1]
TINY = list_backbones(tiny=True)
FULL = list_backbones(tiny=False)
SIZE, K = 64, 6


def _fwd_bwd(model, size, batch=2):
    model.train()
    out = model(torch.randn(batch, 3, size, size))
    loss = sum(v.float().square().mean() for v in out.values())
    loss.backward()
    return out


def _check_outputs(out, head, batch, k, bins):
    if head == "direct_regression":
        assert set(out) == {"coords"} and out["coords"].shape == (batch, k, 2)
        assert torch.all((out["coords"] >= 0) & (out["coords"] <= 1))
    elif head == "heatmap":   # input SIZE at output stride 4, whatever the backbone's stride
        hm = heatmap_size(SIZE)
        assert set(out) == {"heatmaps"} and out["heatmaps"].shape == (batch, k, hm, hm)
    else:
        assert set(out) == {"x", "y"}
        assert out["x"].shape == (batch, k, bins) and out["y"].shape == (batch, k, bins)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_registry_names_and_timm_architectures_exist():
    users_know = {"convnext_small_custom", "convnext_small_ms", "hrnet_w32_custom", "hrnet_w48_custom",
                  "efficientnet_b0_custom", "efficientnet_v2_m_custom", "inceptionnext_small_custom",
                  "convnext_atto_custom", "convnext_atto_ms", "hrnet_w18_small_custom",
                  "inceptionnext_atto_custom"}
    assert users_know <= set(list_backbones())
    assert set(TINY) | set(FULL) == set(list_backbones()) and not set(TINY) & set(FULL)
    known = set(timm.list_models())
    assert all(spec.timm_name in known for spec in BACKBONES.values())


@pytest.mark.parametrize("name", TINY)
def test_backbone_reports_its_channels_and_stride(name):
    b = build_backbone(name).eval()
    with torch.no_grad():
        f = b(torch.zeros(1, 3, 96, 96))
    assert f.shape[1] == b.out_channels
    assert f.shape[-1] == f.shape[-2] == 96 // b.stride
    assert b.stride == BACKBONES[name].stride


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("name", TINY)
def test_tiny_backbone_with_every_head_trains(name, head):
    model = build_model(name, head, K, SIZE, split_ratio=2.0)
    out = _fwd_bwd(model, SIZE)
    _check_outputs(out, head, 2, K, 128)
    # every parameter gets a finite gradient (DDP needs no find_unused_parameters)
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_hrnet_needs_multiples_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("hrnet_w18_small_custom", "simcc_2d", K, 72)


@pytest.mark.parametrize("name,size", [("convnext_atto_custom", 80), ("convnext_atto_ms", 72),
                                       ("efficientnet_b0_custom", 70)])
def test_input_size_not_a_multiple_of_the_stride(name, size):
    model = build_model(name, "simcc_2d", 3, size, split_ratio=1.5).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, size, size))
    _check_outputs(out, "simcc_2d", 1, 3, round(size * 1.5))
    with pytest.raises(ValueError, match="input_size"):
        model(torch.zeros(1, 3, size + 32, size + 32))


@pytest.mark.parametrize("name", ["convnext_atto_ms", "efficientnet_b0_custom"])
def test_channels_last_gives_the_same_outputs(name):
    torch.manual_seed(0)
    model = build_model(name, "simcc_2d", K, SIZE).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], atol=1e-4, rtol=1e-4)


def test_deconv_head_keeps_output_stride_at_least_four():
    assert [deconv_layers(s) for s in (32, 16, 8, 4)] == [3, 2, 1, 1]
    m = build_model("convnext_atto_custom", "simcc_2d_deconv", K, SIZE)
    assert m.head.simcc.feat_hw == (SIZE // 4, SIZE // 4)


def test_unknown_names_raise_value_error_listing_known_ones():
    with pytest.raises(ValueError, match="convnext_small_custom"):
        build_model("resnet_custom", "simcc_2d", K, SIZE)
    with pytest.raises(ValueError, match="simcc_1d"):
        build_model("convnext_atto_custom", "hourglass", K, SIZE)
    with pytest.raises(ValueError, match="drop_path_rat"):
        build_model("efficientnet_b0_custom", "simcc_2d", K, SIZE, drop_path_rat=0.1)


# ---------------------------------------------------------------- pretrained weights

@pytest.mark.parametrize("name", TINY)
def test_pretrained_path_from_the_timm_classifier_loads_every_backbone_weight(name, tmp_path, caplog):
    spec = BACKBONES[name]
    torch.manual_seed(1)
    source = timm.create_model(spec.timm_name, pretrained=False).state_dict()
    path = tmp_path / "weights.pth"
    torch.save(source, path)
    caplog.set_level("INFO", logger="hipkp.models")
    b = build_backbone(name, pretrained=str(path))
    assert b.load_report["missing"] == [] and b.load_report["mismatched"] == []
    assert "0 missing" in caplog.text
    # the weights really arrived: every tensor of the timm body equals one in the file
    src_values = {(tuple(v.shape), float(v.float().sum()), float(v.float().abs().max())) for v in source.values()}
    for key, value in b.body.state_dict().items():
        if value.numel() > 1:
            assert (tuple(value.shape), float(value.float().sum()), float(value.float().abs().max())) in src_values, key


def test_pretrained_path_accepts_a_features_only_dump_and_our_checkpoint(tmp_path):
    feats = timm.create_model("convnext_atto", pretrained=False, features_only=True, out_indices=(3,))
    torch.save({"state_dict": feats.state_dict()}, tmp_path / "feats.pth")
    b = build_backbone("convnext_atto_custom", pretrained=tmp_path / "feats.pth")
    assert b.load_report["missing"] == [] and b.load_report["unexpected"] == []
    for k, v in feats.state_dict().items():
        assert torch.equal(b.body.state_dict()[k], v)
    model = build_model("convnext_atto_custom", "simcc_2d", K, SIZE)
    save_checkpoint(tmp_path / "ours.pt", model, {})
    b2 = build_backbone("convnext_atto_custom", pretrained=tmp_path / "ours.pt")
    assert b2.load_report["missing"] == []
    torch.testing.assert_close(b2.body.stem_0.weight, model.backbone.body.stem_0.weight)


def test_pretrained_path_problems_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        build_backbone("convnext_atto_custom", pretrained=tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth"):
        build_backbone("convnext_atto_custom", pretrained=tmp_path / "junk.pth")


def test_pretrained_timm_offline_says_hub_weights_need_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:  # huggingface_hub reads the variable at import; set its constant too
        import huggingface_hub.constants as hf_constants
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    except ImportError:
        pass
    try:
        build_backbone("convnext_atto_custom", pretrained="timm")
    except ValueError as e:
        msg = str(e)
        assert "network" in msg and "--pretrained PATH" in msg and "convnext_atto" in msg
        assert "\n" not in msg
    else:
        pytest.skip("timm hub weights were available (cached or online)")


# ---------------------------------------------------------------- checkpoints

def _walk_plain(obj):
    if isinstance(obj, dict):
        assert all(isinstance(k, (str, int)) for k in obj)
        for v in obj.values():
            _walk_plain(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk_plain(v)
    else:
        assert obj is None or isinstance(obj, (str, int, float, bool, torch.Tensor)), type(obj)


CONFIG = {"layout": "ihdi12", "side": "left", "mirror": True, "crop_expand": 0.1, "hist_eq": True,
          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "sigma": 5.0,
          "epoch": 3, "metrics": {"mre_px": np.float32(1.25)}, "exp_name": "unit"}


def _trained_tiny(head="simcc_2d"):
    torch.manual_seed(0)
    model = build_model("convnext_atto_ms", head, K, SIZE, split_ratio=1.5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _fwd_bwd(model, SIZE)
    opt.step()
    return model, opt


def test_checkpoint_round_trip_in_a_fresh_process(tmp_path):
    model, opt = _trained_tiny()
    path = tmp_path / "sub" / "best.pt"
    save_checkpoint(path, model, CONFIG, optimizer=opt.state_dict(), epoch=3, metrics={"loss": 0.5})
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]  # no temp file left behind

    raw = torch.load(path, map_location="cpu", weights_only=True)
    _walk_plain(raw)
    assert raw["config"]["model_name"] == "convnext_atto_ms" and raw["config"]["num_keypoints"] == K
    assert raw["config"]["split_ratio"] == 1.5 and raw["config"]["metrics"]["mre_px"] == 1.25
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(raw["optimizer"])  # optimizer state survives weights_only

    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    np.save(tmp_path / "x.npy", x.numpy())
    with torch.no_grad():
        ref = model.eval()(x)
    child = textwrap.dedent(f"""
        import json, sys, numpy as np, torch
        sys.path.insert(0, {str(ROOT)!r})
        from models import load_keypoint_model
        model, codec, cfg = load_keypoint_model({str(path)!r})
        assert not model.training
        with torch.no_grad():
            out = model(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r})))
        np.save({str(tmp_path / 'out_x.npy')!r}, out["x"].numpy())
        np.save({str(tmp_path / 'out_y.npy')!r}, out["y"].numpy())
        print(json.dumps({{"codec": type(codec).__name__, "sigma": codec.sigma, "bins": codec.num_bins,
                           "layout": cfg["layout"]}}))
    """)
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info == {"codec": "SimCCCodec", "sigma": 5.0, "bins": 96, "layout": "ihdi12"}
    np.testing.assert_allclose(np.load(tmp_path / "out_x.npy"), ref["x"].numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "out_y.npy"), ref["y"].numpy(), atol=1e-5, rtol=1e-5)


def test_checkpoint_of_wrapped_model_has_plain_keys_and_regression_loads(tmp_path):
    model, _ = _trained_tiny("direct_regression")
    save_checkpoint(tmp_path / "dp.pt", nn.DataParallel(model), {"sigma": 6.0})
    keys = set(read_checkpoint(tmp_path / "dp.pt")["state_dict"])
    assert keys == set(model.state_dict())
    loaded, codec, cfg = load_keypoint_model(tmp_path / "dp.pt")
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["coords"], model.eval()(x)["coords"])
    assert codec.head_type == "direct_regression" and cfg["head_type"] == "direct_regression"
    sd = clean_state_dict({"module._orig_mod.head.w": torch.ones(1), "backbone._orig_mod.body.b": torch.ones(1)})
    assert set(sd) == {"head.w", "backbone.body.b"}


def test_failed_save_leaves_the_previous_file_intact(tmp_path):
    model, _ = _trained_tiny()
    path = save_checkpoint(tmp_path / "last.pt", model, CONFIG)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="scheduler"):
        save_checkpoint(path, model, CONFIG, scheduler={"fn": lambda e: 1.0})
    with pytest.raises(ValueError, match="head_type"):
        save_checkpoint(path, model, {**CONFIG, "head_type": "simcc_1d"})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class _Evil:
    def __init__(self, how, marker):
        self.how, self.marker = how, str(marker)

    def __reduce__(self):
        if self.how == "system":
            return (os.system, (f"touch {self.marker}",))
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
@pytest.mark.parametrize("how", ["system", "open"])
def test_malicious_checkpoint_is_refused_without_running_code(tmp_path, writer, how):
    marker = tmp_path / "pwned"
    payload = {"state_dict": {}, "config": {"model_name": "convnext_atto_custom"}, "x": _Evil(how, marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError) as err:
        load_keypoint_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    with pytest.raises(ValueError):
        build_backbone("convnext_atto_custom", pretrained=path)
    assert not marker.exists()


def test_files_that_are_not_keypoint_checkpoints_raise_value_error(tmp_path):
    (tmp_path / "text.pt").write_text("hello")
    torch.save(build_model("convnext_atto_custom", "simcc_2d", K, SIZE).state_dict(), tmp_path / "bare.pt")
    torch.save({"state_dict": {}, "config": {"model_name": "nope", "head_type": "simcc_2d",
                                             "num_keypoints": 6, "input_size": 64}}, tmp_path / "unknown.pt")
    torch.save({"state_dict": {"w": torch.ones(1)}, "config": {"model_name": "convnext_atto_custom",
                "head_type": "simcc_2d", "num_keypoints": 6, "input_size": 64}}, tmp_path / "wrong.pt")
    for name, match in [("absent.pt", "not found"), ("text.pt", "not a valid checkpoint"),
                        ("bare.pt", "no config"), ("unknown.pt", "nope"), ("wrong.pt", "missing")]:
        with pytest.raises(ValueError, match=match) as err:
            load_keypoint_model(tmp_path / name)
        assert name in str(err.value)


# ---------------------------------------------------------------- full size (slow)

@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_backbones_with_every_head(name):
    for head in HEADS:
        model = build_model(name, head, K, SIZE)
        out = _fwd_bwd(model, SIZE)
        _check_outputs(out, head, 2, K, 128)
        assert all(p.grad is not None for p in model.parameters())
        del model, out
    assert BACKBONES["convnext_small_custom"].defaults["drop_path_rate"] == 0.4


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_deconv_head_at_a_real_input_size_stays_reasonable(name):
    model = build_model(name, "simcc_2d_deconv", K, 256).eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 100e6, n_params  # the H*W -> N layers stay bounded (output stride >= 4 or 2)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 256, 256))
    _check_outputs(out, "simcc_2d_deconv", 1, K, 512)


# ---------------------------------------------------------------- MambaVision (optional package)

MAMBA = "mambavision_t_custom"
MAMBA_MISSING = unavailable_reason(MAMBA)


def test_mambavision_is_registered_only_where_it_imports_and_help_says_its_status():
    from utils.pipelines.train import add_train_args
    import argparse
    helptext = " ".join(add_train_args(argparse.ArgumentParser()).format_help().split())
    if MAMBA_MISSING is None:
        assert MAMBA in BACKBONES and MAMBA not in UNAVAILABLE and f"{MAMBA} (optional" not in helptext
        return
    assert MAMBA not in BACKBONES and MAMBA not in list_backbones()
    assert "mambavision not installed" in MAMBA_MISSING or "does not import" in MAMBA_MISSING
    assert f"{MAMBA} (optional: {MAMBA_MISSING})" in helptext
    assert "requirements-mamba.txt" in helptext or "does not import" in MAMBA_MISSING
    with pytest.raises(ValueError, match="not available") as err:
        build_model(MAMBA, "simcc_2d", K, SIZE)
    assert MAMBA_MISSING in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(MAMBA_MISSING is not None, reason=f"{MAMBA}: {MAMBA_MISSING}")
@pytest.mark.parametrize("head", HEADS)
def test_mambavision_trains_a_step_with_every_head(head):
    device = "cuda" if torch.cuda.is_available() else "cpu"   # on CPU: mamba_ssm's reference scan
    torch.manual_seed(0)
    model = build_model(MAMBA, head, K, SIZE).to(device).train()
    assert model.backbone.stride == 32 and model.backbone.out_channels == 640
    out = model(torch.randn(2, 3, SIZE, SIZE, device=device))
    sum(v.float().square().mean() for v in out.values()).backward()
    _check_outputs({k: v.cpu() for k, v in out.items()}, head, 2, K, 128)
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
