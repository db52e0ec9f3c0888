"""Sub-pixel decoding: the heatmap codec (Gaussian targets, DARK / argmax / local soft-argmax), SimCC's
argmax + parabola refinement, decode settings in checkpoints and at prediction, the heatmap head end to end."""
import argparse
import math

import numpy as np
import pytest
import torch

from models.codecs import HeatmapCodec, build_codec, dark_offsets, parabola_offsets, with_decode
from models.heads import HEATMAP_STRIDE, heatmap_size
from models.losses import with_roof_angle_loss
from models.registry import HEADS, LOSSES, get_loss

PERM12 = (2, 1, 0, 5, 4, 3)


def _points(n, k, lo, hi, seed=0):
    g = torch.Generator().manual_seed(seed)
    return lo + torch.rand(n, k, 2, generator=g) * (hi - lo)


def _mirror(pts, size, perm=PERM12):
    m = pts[:, list(perm)].clone()
    m[..., 0] = (size - 1) - m[..., 0]
    return m


# ------------------------------------------------------------------ heatmap codec: the geometry
@pytest.mark.parametrize("size", [64, 128, 90])
def test_heatmap_cells_cover_the_crop_with_pixel_centres_on_integers(size):
    codec = build_codec("heatmap", size)
    assert isinstance(codec, HeatmapCodec) and codec.decode_mode == "dark"
    w = heatmap_size(size)
    assert codec.size == w == round(size / HEATMAP_STRIDE) and codec.cell == size / w
    # cell u covers [u * cell - 1/2, (u + 1) * cell - 1/2]: the map spans the crop's extent [-1/2, S - 1/2]
    edges = codec.to_px(torch.tensor([-0.5, w - 0.5]))
    torch.testing.assert_close(edges, torch.tensor([-0.5, size - 0.5]))
    if size % HEATMAP_STRIDE == 0:    # a stride-4 cell is centred on pixel 4u + 1.5
        torch.testing.assert_close(codec.to_px(torch.arange(3.0)), torch.tensor([1.5, 5.5, 9.5]))
    x = torch.linspace(-0.5, size - 0.5, 17)
    torch.testing.assert_close(codec.to_px(codec.to_cells(x)), x)
    # a horizontal mirror of the map (u -> W - 1 - u) is the crop's mirror x -> S - 1 - x
    torch.testing.assert_close(codec.to_px((w - 1) - codec.to_cells(x)), (size - 1) - x)


def test_heatmap_target_peaks_at_the_cell_of_the_point_with_sigma_in_input_pixels():
    codec = build_codec("heatmap", 64, sigma=8.0)              # 2 cells
    pts = torch.tensor([[[4 * 5 + 1.5, 4 * 9 + 1.5], [30.0, 12.0]]])
    t, w = codec.encode(pts)
    h = t["heatmaps"]
    assert h.shape == (1, 2, 16, 16) and w.tolist() == [[1.0, 1.0]]
    assert float(h[0, 0, 9, 5]) == pytest.approx(1.0) and float(h[0, 0].max()) == pytest.approx(1.0)
    assert float(h[0, 0, 9, 4]) == pytest.approx(float(h[0, 0, 9, 6]))          # symmetric about the centre
    assert float(h[0, 0, 9, 4]) == pytest.approx(math.exp(-1 / (2 * 2.0 ** 2)))  # one cell = 4 px = sigma / 2
    # the second point: x = 30 px is cell 7.125, y = 12 px is cell 2.625 -> best cell (7, 3)
    assert divmod(int(h[0, 1].flatten().argmax()), 16) == (3, 7)


def test_heatmap_weights_far_outside_points_and_bad_settings():
    codec = build_codec("heatmap", 64)
    t, w = codec.encode(torch.tensor([[[-0.49, 3.0], [-0.5, 3.0], [10.0, 64.0], [-500.0, 1e4]]]))
    assert w.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert torch.isfinite(t["heatmaps"]).all() and float(t["heatmaps"][0, 3].max()) == 0.0
    with pytest.raises(ValueError, match="dark, argmax, softargmax"):
        build_codec("heatmap", 64, decode="argmax_refine")
    with pytest.raises(ValueError, match="sigma"):
        build_codec("heatmap", 64, sigma=0.0)


# ------------------------------------------------------------------ heatmap codec: decoding
@pytest.mark.parametrize("size,sigma", [(128, 6.0), (64, 4.0), (96, 8.0), (90, 6.0)])
def test_dark_round_trip_is_sub_pixel_and_plain_argmax_is_not(size, sigma):
    """Targets at sub-pixel points decode to < 0.05 px with DARK (3 sigma + 2 cells from the border),
    while plain argmax is quantised to the 4-px cells (its mean error is ~1.5 px)."""
    margin = 3 * sigma + 2 * size / heatmap_size(size)
    pts = _points(8, 6, margin, size - 1 - margin)
    targets = build_codec("heatmap", size, sigma=sigma).encode(pts)[0]
    err = {m: (build_codec("heatmap", size, sigma=sigma, decode=m).decode(targets)[0] - pts).norm(dim=-1)
           for m in ("dark", "argmax", "softargmax")}
    assert float(err["dark"].max()) < 0.05, float(err["dark"].max())
    assert float(err["argmax"].mean()) > 0.8 and float(err["argmax"].max()) <= math.sqrt(2) * 2.0 * 1.001
    assert float(err["softargmax"].max()) < 0.05                   # the local window is 4 sigma wide


def test_dark_near_the_border_is_pulled_inwards_and_no_step_on_the_border_cells():
    """The blur's zero padding is DARK's border bias (documented): it points inwards and fades within
    ~3 sigma of the edge; on the border cells themselves there is no step (the cell centre)."""
    codec = build_codec("heatmap", 128, sigma=6.0)
    xs = torch.arange(0.0, 40.0)
    pts = torch.stack([xs, torch.full_like(xs, 64.0)], -1)[None]
    dx = (codec.decode(codec.encode(pts)[0])[0] - pts)[0, :, 0]
    torch.testing.assert_close(codec.decode(codec.encode(pts)[0])[0][0, :4, 0], torch.full((4,), 1.5))
    assert bool((dx[4:] >= -1e-3).all())                       # inwards (towards larger x)
    assert float(dx[4:12].max()) > 0.3 and float(dx[16:].abs().max()) < 0.01


def test_dark_offsets_step_only_at_a_concave_interior_peak_and_at_most_one_cell():
    h = torch.zeros(1, 3, 16, 16)
    h[0, 0, 8, 8], h[0, 0, 8, 9] = 1.0, 0.9                    # a peak leaning right
    h[0, 1, 0, 3] = 1.0                                        # on the border row
    h[0, 2] = 0.5                                              # flat (away from the border): Hessian 0
    ix, iy = torch.tensor([[8, 3, 8]]), torch.tensor([[8, 0, 8]])
    off = dark_offsets(h, ix, iy, 1.0)
    assert 0 < float(off[0, 0, 0]) <= 1.0 and abs(float(off[0, 0, 1])) < 1e-6
    assert off[0, 1:].abs().max() == 0


def test_heatmap_flip_outputs_are_exact_and_average_is_the_mean_map():
    size = 64
    codec = build_codec("heatmap", size, sigma=6.0)
    pts = _points(3, 6, 14.0, size - 15.0)
    back = codec.flip_outputs(codec.encode(_mirror(pts, size))[0], PERM12)
    # the flip of the mirrored points' target is the points' own target (to float32 rounding)
    own = codec.encode(pts)[0]
    torch.testing.assert_close(back["heatmaps"], own["heatmaps"], atol=1e-5, rtol=0)
    assert float((codec.decode(back)[0] - codec.decode(own)[0]).abs().max()) < 1e-3
    twice = codec.flip_outputs(codec.flip_outputs(back, PERM12), PERM12)
    torch.testing.assert_close(twice["heatmaps"], back["heatmaps"])
    a, b = codec.encode(pts)[0], codec.encode(pts + 1.0)[0]
    torch.testing.assert_close(codec.average_outputs([a, b])["heatmaps"], 0.5 * (a["heatmaps"] + b["heatmaps"]))
    torch.testing.assert_close(codec.decode(codec.average_outputs([a, a]))[0], codec.decode(a)[0])


def test_heatmap_samples_come_from_the_local_distribution_and_are_reproducible():
    codec = build_codec("heatmap", 128, sigma=6.0)
    pts = _points(2, 6, 30.0, 97.0)
    out = codec.encode(pts)[0]
    s1 = codec.sample(out, 4000, torch.Generator().manual_seed(0))
    s2 = codec.sample(out, 4000, torch.Generator().manual_seed(0))
    assert s1.shape == (2, 4000, 6, 2) and torch.equal(s1, s2)
    soft = build_codec("heatmap", 128, sigma=6.0, decode="softargmax").decode(out)[0]
    assert float((s1.mean(1) - soft).abs().max()) < 0.5             # the sample mean -> the soft-argmax point
    std = s1.std(1)                                                 # sigma, widened a little by the cell jitter
    assert float(std.min()) > 5.5 and float(std.max()) < 7.0
    assert float((s1 - soft[:, None]).abs().max()) <= (codec.window + 0.5) * codec.cell + 1e-3
    # a map with nothing positive: every sample lies in the best cell
    flat = codec.sample({"heatmaps": torch.full((1, 1, 32, 32), -1.0)}, 50, torch.Generator().manual_seed(1))
    assert float((flat - codec.to_px(torch.zeros(2))).abs().max()) <= 0.5 * codec.cell + 1e-4


def test_heatmap_loss_and_the_roof_angle_loss_on_its_soft_argmax():
    codec = build_codec("heatmap", 64, sigma=6.0)
    loss = get_loss(None, "heatmap")
    assert loss is LOSSES["heatmap_mse"] and "heatmap:" in HEADS.help()
    gt = torch.tensor([[[15.0, 30.0], [25.0, 27.0], [40.0, 36.0], [20, 45], [25, 45], [30, 45]]])
    t, w = codec.encode(gt)
    assert loss(t, t, w).item() == 0.0
    moved = {"heatmaps": codec.encode(gt + torch.tensor([3.0, 0.0]))[0]["heatmaps"].requires_grad_(True)}
    assert loss(moved, t, w).item() > 0
    w0 = w.clone()
    w0[0, 1:] = 0
    only0 = {"heatmaps": torch.cat([t["heatmaps"][:, :1], moved["heatmaps"][:, 1:]], 1)}
    assert loss(only0, t, w0).item() == 0.0
    # the roof-angle term takes the differentiable local soft-argmax of the maps
    soft = build_codec("heatmap", 64, sigma=6.0, decode="softargmax")
    with pytest.raises(ValueError, match="softargmax"):
        with_roof_angle_loss(loss, codec, 0, 2, 0.1)                 # dark is not differentiable
    t["keypoints_px"] = gt
    total = with_roof_angle_loss(loss, soft, 0, 2, 0.1)(moved, t, w)
    assert total.item() > loss(moved, t, w).item()
    total.backward()
    g = moved["heatmaps"].grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0


# ------------------------------------------------------------------ SimCC: argmax + parabola
@pytest.mark.parametrize("split", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("sigma", [2.0, 4.0, 6.0])
def test_simcc_argmax_refine_round_trip_beats_argmax(split, sigma):
    size = 64
    codec = build_codec("simcc_2d", size, split, sigma)
    margin = 2.0 / split + 1
    pts = _points(6, 6, margin, size - 1 - margin)
    logits = {k: v.log() for k, v in codec.encode(pts)[0].items()}
    err = {m: (build_codec("simcc_2d", size, split, sigma, m).decode(logits)[0] - pts).abs()
           for m in ("argmax", "argmax_refine")}
    assert float(err["argmax_refine"].max()) < 1e-3           # log of a sampled Gaussian is a parabola
    assert float(err["argmax"].mean()) > 0.15 / split and float(err["argmax"].max()) <= 0.5 / split + 1e-5


def test_parabola_offsets_at_the_ends_and_on_flat_or_convex_logits():
    logp = torch.tensor([[0.0, -1.0, -4.0, -9.0], [-1.0, 0.0, -0.5, -3.0], [-1.0, -1.0, -1.0, -1.0]])
    idx = torch.tensor([0, 1, 2])
    off = parabola_offsets(logp, idx)
    assert float(off[0]) == 0.0 and float(off[2]) == 0.0        # an end bin; a flat distribution
    # vertex of the parabola through (-1, -1), (0, 0), (1, -0.5): t = (lm - lp) / (2 (lm - 2 l0 + lp))
    assert float(off[1]) == pytest.approx(-0.5 / (2 * -1.5))
    assert float(parabola_offsets(torch.tensor([[0.0, -2.0, 0.0]]), torch.tensor([1]))) == 0.0   # convex


def test_decode_defaults_overrides_and_errors():
    assert build_codec("simcc_2d", 64).decode_mode == "softargmax"
    assert build_codec("heatmap", 64).decode_mode == "dark"
    assert build_codec("direct_regression", 64, decode="dark").decode_mode is None   # ignored
    codec = build_codec("simcc_2d", 64, 2.0, 4.0)
    assert with_decode(codec, None) is codec and with_decode(codec, "softargmax") is codec
    refined = with_decode(codec, "argmax_refine")
    assert refined.decode_mode == "argmax_refine" and (refined.sigma, refined.split_ratio) == (4.0, 2.0)
    with pytest.raises(ValueError, match="softargmax, argmax, argmax_refine"):
        with_decode(codec, "dark")
    from utils.pipelines.train import add_train_args
    text = add_train_args(argparse.ArgumentParser()).format_help()
    assert "heatmap:" in text and "--decode" in text and "argmax_refine" in text


# ------------------------------------------------------------------ the heatmap head end to end
@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from datasets.splits import make_splits
    from datasets.synthetic import generate_dataset
    root = tmp_path_factory.mktemp("decoding")
    generate_dataset(root / "ds", 8, seed=2, size=160, progress=False)
    make_splits(root / "ds", root / "data", train=0.5, val=0.25, test=0.25, seed=1)
    return root / "data"


def test_heatmap_head_trains_round_trips_a_checkpoint_and_predicts(phantoms, tmp_path):
    from models import load_keypoint_model
    from tests.helpers import train_tiny_keypoints
    from utils.pipelines.predict import run_prediction

    pth = train_tiny_keypoints(phantoms, tmp_path, "hm", 64, head_type="heatmap", sigma=4.0, ai_loss_weight=0.1,
                               hflip=0.5)   # (predicted below with the flip test)
    model, codec, cfg = load_keypoint_model(pth)
    assert isinstance(codec, HeatmapCodec) and codec.sigma == 4.0 and codec.decode_mode == "dark"
    assert cfg["head_type"] == "heatmap" and cfg["decode"] is None and cfg["train"]["ai_loss_weight"] == 0.1
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert out["heatmaps"].shape == (2, 6, 16, 16) and torch.isfinite(out["heatmaps"]).all()
    again, _, _ = load_keypoint_model(pth)
    with torch.no_grad():
        torch.testing.assert_close(again(x)["heatmaps"], out["heatmaps"])
    kw = dict(kp_left_path=str(pth), use_gt_box=True, device="cpu", overlays=False, make_plots=False,
              progress=False, ai_samples=50)
    s = run_prediction(phantoms / "test", tmp_path / "dark", flip_test=True, **kw)
    a = run_prediction(phantoms / "test", tmp_path / "argmax", decode="argmax", **kw)
    from utils.evaluation.metrics import read_predictions
    dark, arg = (read_predictions(tmp_path / n / "predictions.csv") for n in ("dark", "argmax"))
    assert s["n_images"] == a["n_images"] == len(dark) > 0
    assert np.isfinite(dark[["pred_ai_left_lo", "pred_ai_left_hi"]].to_numpy(float)).all()   # the AI interval
    # argmax points lie on the cell centres 4u + 1.5 of the crop; they differ from the DARK ones
    cols = [c for c in dark.columns if c.startswith("pred_x_")]
    assert not np.allclose(dark[cols].to_numpy(float), arg[cols].to_numpy(float))


def test_simcc_decode_setting_is_saved_and_prediction_can_override_it(phantoms, tmp_path):
    from models import load_keypoint_model
    from tests.helpers import train_tiny_keypoints
    from utils.errors import UserError
    from utils.pipelines.predict import load_side_models

    pth = train_tiny_keypoints(phantoms, tmp_path, "refine", 64, decode="argmax_refine", max_steps=1)
    _, codec, cfg = load_keypoint_model(pth)
    assert codec.decode_mode == "argmax_refine" and cfg["decode"] == cfg["train"]["decode"] == "argmax_refine"
    sides = load_side_models(str(pth), decode="softargmax")
    assert {m.codec.decode_mode for m in sides.values()} == {"softargmax"}
    assert load_side_models(str(pth))["left"].codec.decode_mode == "argmax_refine"
    with pytest.raises(UserError, match="--decode: unknown decode mode 'dark'"):
        load_side_models(str(pth), decode="dark")
    with pytest.raises(UserError, match="decode mode 'median'"):
        train_tiny_keypoints(phantoms, tmp_path, "bad", 64, decode="median", max_steps=1)
