"""SimCC and regression codecs: encode/decode round trips, decode modes, losses."""
import math

import numpy as np
import pytest
import torch

from models.codecs import RegressionCodec, SimCCCodec, build_codec
from models.heads import HEADS
from models.registry import CODECS, LOSSES, Registry, get_loss

S, K_SPLIT, SIGMA = 64, 2.0, 6.0
EDGE = 4 * SIGMA / K_SPLIT  # px from an end of the bin range where the Gaussian is (almost) uncut


def _logits(targets):
    return {k: torch.log(v) for k, v in targets.items()}


def _reference_softargmax(mu_px, n_bins, split, sigma):
    """Independent float64 expectation of the sampled, cut, normalised Gaussian (in px)."""
    i = np.arange(n_bins, dtype=np.float64)
    w = np.exp(-(i - mu_px * split) ** 2 / (2 * sigma ** 2))
    return (w * i).sum() / w.sum() / split


def test_targets_shape_normalisation_and_peak():
    codec = build_codec("simcc_2d", S, K_SPLIT, SIGMA)
    assert isinstance(codec, SimCCCodec) and codec.num_bins == 128
    coords = torch.tensor([[[10.0, 20.5], [0.0, 63.0], [31.3, 7.8]]])
    t, _ = codec.encode(coords)
    assert t["x"].shape == (1, 3, 128) and t["y"].shape == (1, 3, 128)
    for axis, a in (("x", 0), ("y", 1)):
        torch.testing.assert_close(t[axis].sum(-1), torch.ones(1, 3))
        # the peak sits on the bin nearest to coord * split_ratio
        np.testing.assert_array_equal(t[axis].argmax(-1)[0].numpy(),
                                      np.round(coords[0, :, a].numpy() * K_SPLIT))
    # the std of an uncut target is sigma bins
    i = torch.arange(128.0)
    p = t["x"][0, 2]
    mean = (p * i).sum()
    assert math.isclose(float(((p * (i - mean) ** 2).sum()).sqrt()), SIGMA, rel_tol=1e-3)


@pytest.mark.parametrize("size,split,expected", [(256, 2.0, 512), (100, 1.5, 150), (97, 2.5, 242), (224, 3.0, 672)])
def test_bin_count_is_rounded_size_times_split(size, split, expected):
    assert build_codec("simcc_1d", size, split).num_bins == expected == round(size * split)


def test_softargmax_round_trip_away_from_edges():
    codec = build_codec("simcc_2d", S, K_SPLIT, SIGMA)
    g = torch.Generator().manual_seed(0)
    coords = EDGE + torch.rand(4, 6, 2, generator=g, dtype=torch.float64).float() * (S - 1 - 2 * EDGE)
    decoded, conf = codec.decode(_logits(codec.encode(coords)[0]))
    err = (decoded - coords).abs().max().item()
    assert err < 1e-3, err  # the brief asks < 0.1 px; away from the edges it is far better
    assert conf.shape == (4, 6) and torch.all((conf > 0) & (conf <= 1))


def test_softargmax_near_edges_matches_cut_gaussian_and_points_inward():
    """Near an end of the bin range the Gaussian is cut, so its mean moves inward: this is
    the expected (documented) border bias, reproduced by an independent float64 reference."""
    codec = build_codec("simcc_2d", S, K_SPLIT, SIGMA)
    n = codec.num_bins
    lo = np.linspace(0.0, EDGE, 25)
    hi = (n - 1) / K_SPLIT - lo  # the last bin is pixel S - 1/split
    xs = np.concatenate([lo, hi])
    coords = torch.tensor(np.stack([xs, np.full_like(xs, S / 2)], -1)[None], dtype=torch.float32)
    decoded, _ = codec.decode(_logits(codec.encode(coords)[0]))
    dx = decoded[0, :, 0].double().numpy()
    ref = np.array([_reference_softargmax(x, n, K_SPLIT, SIGMA) for x in xs])
    np.testing.assert_allclose(dx, ref, atol=2e-3)
    bias = dx - xs
    assert np.all(bias[: len(lo)] >= -1e-3) and np.all(bias[len(lo):] <= 1e-3)  # inward
    # a point exactly on an end: the mean of a one-sided sampled Gaussian,
    # sigma^2 / (sigma * sqrt(pi / 2) + 1/2) bins, i.e. about 2.2 px here
    on_end = SIGMA ** 2 / (SIGMA * math.sqrt(math.pi / 2) + 0.5) / K_SPLIT
    assert abs(bias[0] - on_end) < 0.01 and abs(bias[len(lo)] + on_end) < 0.01
    assert np.all(np.abs(bias[[len(lo) - 1, -1]]) < 0.1)  # EDGE px inside it meets the 0.1 px goal
    # the y coordinate (centre) is unaffected
    assert (decoded[0, :, 1] - S / 2).abs().max() < 1e-3


def test_far_outside_point_gives_finite_target_at_the_edge():
    codec = build_codec("simcc_2d", S)
    t, w = codec.encode(torch.tensor([[[-500.0, 10_000.0]]]))
    assert w.tolist() == [[0.0]]   # outside the crop: weight 0
    assert torch.isfinite(t["x"]).all() and torch.isfinite(t["y"]).all()
    assert t["x"][0, 0].argmax() == 0 and t["y"][0, 0].argmax() == codec.num_bins - 1


def test_argmax_and_softargmax_on_peaked_and_bimodal_logits():
    soft = build_codec("simcc_2d", S, K_SPLIT, decode="softargmax")
    hard = build_codec("simcc_2d", S, K_SPLIT, decode="argmax")
    n = soft.num_bins
    # sharply peaked: both agree on bin / split and are confident
    logits = torch.full((1, 1, n), -1e4)
    logits[0, 0, 37] = 0.0
    out = {"x": logits, "y": logits.clone()}
    for codec in (soft, hard):
        c, conf = codec.decode(out)
        torch.testing.assert_close(c, torch.full((1, 1, 2), 18.5))
        assert conf.item() > 0.999
    # bimodal 0.6 at bin 10, 0.4 at bin 30: argmax -> the mode, softargmax -> the mean
    p = torch.full((1, 1, n), 1e-12)
    p[0, 0, 10], p[0, 0, 30] = 0.6, 0.4
    out = {"x": p.log(), "y": p.log()}
    c_hard, conf_hard = hard.decode(out)
    c_soft, conf_soft = soft.decode(out)
    torch.testing.assert_close(c_hard, torch.full((1, 1, 2), 5.0))
    torch.testing.assert_close(c_soft, torch.full((1, 1, 2), 9.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(conf_hard, torch.full((1, 1), 0.6), atol=1e-4, rtol=0)
    torch.testing.assert_close(conf_soft, conf_hard)


def test_argmax_round_trip_is_quantised_to_half_a_bin():
    codec = build_codec("simcc_2d", S, K_SPLIT, decode="argmax")
    coords = torch.tensor([[[0.0, 63.5], [12.5, 40.0], [20.3, 33.74]]])
    decoded, _ = codec.decode(_logits(codec.encode(coords)[0]))
    assert (decoded - coords).abs().max() <= 0.5 / K_SPLIT + 1e-6
    torch.testing.assert_close(decoded[0, :2], coords[0, :2])  # on-grid points are exact


def test_kl_loss_zero_at_target_positive_otherwise_and_weighted():
    codec = build_codec("simcc_2d", S)
    loss = get_loss(None, "simcc_2d")
    assert loss is LOSSES["simcc_kl"]
    coords = torch.tensor([[[10.0, 20.0], [40.0, 50.0]]])
    t, _ = codec.encode(coords)
    exact = loss(_logits(t), t)  # logits with -inf where the target underflows to 0
    assert torch.isfinite(exact) and abs(exact.item()) < 1e-6
    # logits = log-density of Gaussians moved 3 px in x (finite everywhere)
    i = torch.arange(codec.num_bins, dtype=torch.float32)
    moved = (coords + torch.tensor([3.0, 0.0])) * K_SPLIT
    shifted = {"x": -(i - moved[..., 0:1]) ** 2 / (2 * SIGMA ** 2),
               "y": -(i - moved[..., 1:2]) ** 2 / (2 * SIGMA ** 2)}
    wrong = loss(shifted, t)
    # two equal Gaussians mu apart: KL = mu^2 / (2 sigma^2) on x, 0 on y; averaged over axes
    mu = 3.0 * K_SPLIT
    assert math.isclose(wrong.item(), 0.5 * mu ** 2 / (2 * SIGMA ** 2), rel_tol=1e-3)
    # weights: a keypoint with weight 0 does not count
    mixed = {a: torch.stack([t[a][:, 0].log(), shifted[a][:, 1]], 1) for a in ("x", "y")}
    assert loss(mixed, t, weights=torch.tensor([[1.0, 0.0]])).item() < 1e-6
    assert loss(mixed, t, weights=torch.tensor([[0.0, 1.0]])).item() > 0.1
    # gradients are finite and non-zero for finite logits
    logits = {k: torch.zeros_like(v, requires_grad=True) for k, v in t.items()}
    loss(logits, t).backward()
    assert all(torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 for v in logits.values())


def test_regression_codec_round_trip_and_loss():
    codec = build_codec("direct_regression", S)
    loss = get_loss(None, "direct_regression")
    assert loss is LOSSES["coord_mse"]
    assert isinstance(codec, RegressionCodec)
    coords = torch.tensor([[[-0.5, S - 0.5], [10.25, 33.0]]])
    enc = codec.encode(coords)[0]["coords"]
    torch.testing.assert_close(enc[0, 0], torch.tensor([0.0, 1.0]))  # the crop's extent -> [0, 1]
    decoded, conf = codec.decode({"coords": enc})
    torch.testing.assert_close(decoded, coords)
    torch.testing.assert_close(conf, torch.ones(1, 2))
    assert loss({"coords": enc}, {"coords": enc}).item() == 0.0
    assert math.isclose(loss({"coords": enc + 0.1}, {"coords": enc}).item(), 0.01, rel_tol=1e-4)


def test_unknown_names_and_bad_shapes_raise():
    with pytest.raises(ValueError, match="simcc_2d_deconv"):
        build_codec("hourglass", S)
    with pytest.raises(ValueError, match="argmax"):
        build_codec("simcc_2d", S, decode="median")
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        build_codec("simcc_2d", S).encode(torch.zeros(3, 2))
    assert set(HEADS) == {"direct_regression", "simcc_1d", "simcc_2d", "simcc_2d_deconv", "heatmap"}


def test_keypoint_weights_are_zero_exactly_outside_the_crop():
    for head in ("simcc_2d", "direct_regression"):
        _, w = build_codec(head, S).encode(torch.tensor([[[-0.49, 0.0], [-0.5, 3.0], [S - 0.5, 3.0],
                                                         [S - 0.51, S - 0.51], [10.0, S + 2.0]]]))
        assert w.tolist() == [[1.0, 0.0, 0.0, 1.0, 0.0]], head


def test_registry_names_help_and_errors():
    assert set(CODECS) == {"simcc", "regression", "heatmap"}
    assert {"simcc_kl", "coord_mse", "coord_l1", "heatmap_mse"} <= set(LOSSES)
    assert "simcc_2d" in HEADS and "heatmap" in HEADS and "hourglass" not in HEADS
    assert "simcc_2d:" in HEADS.help() and "direct_regression:" in HEADS.help()
    with pytest.raises(ValueError, match="known losses: simcc_kl"):
        get_loss("focal")
    r = Registry("thing")
    r.register("a", 1)
    with pytest.raises(ValueError, match="twice"):
        r.register("a", 2)


def test_l1_loss_is_mean_absolute_error_and_weighted():
    a = {"coords": torch.zeros(1, 2, 2)}
    b = {"coords": torch.tensor([[[0.1, 0.3], [1.0, 1.0]]])}
    assert math.isclose(LOSSES["coord_l1"](a, b, torch.tensor([[1.0, 0.0]])).item(), 0.2, rel_tol=1e-5)


# ------------------------------------------------------------------ flip test and ensembles
PERM12 = (2, 1, 0, 5, 4, 3)


@pytest.mark.parametrize("split", [2.0, 1.5, 3.0, 1.0])
def test_simcc_flip_outputs_maps_a_mirrored_prediction_back_exactly(split):
    """Targets encoded at the mirrored points x' = (S - 1) - x (and permuted), flipped back,
    decode to the points themselves within 1e-3 px, for whole and fractional bin shifts."""
    codec = build_codec("simcc_2d", S, split, SIGMA)
    rng = np.random.default_rng(0)
    margin = 4 * SIGMA / split + 1
    pts = torch.tensor(rng.uniform(margin, S - 1 - margin, (3, 6, 2)), dtype=torch.float32)
    mirrored = pts[:, list(PERM12)].clone()
    mirrored[..., 0] = (S - 1) - mirrored[..., 0]
    t_m, _ = codec.encode(mirrored)
    back = codec.flip_outputs(_logits(t_m), PERM12)
    coords, _ = codec.decode(back)
    assert (coords - pts).abs().max() < 1e-3
    # the flipped-back distributions are the targets of the points themselves (whole bin shifts:
    # exactly; fractional: up to the linear interpolation of a Gaussian)
    t, _ = codec.encode(pts)
    tol = 1e-5 if float(split * (S - 1)).is_integer() else 2e-3   # float32 probabilities
    assert (torch.softmax(back["x"], -1) - t["x"]).abs().max() < tol
    torch.testing.assert_close(torch.softmax(back["y"], -1), t["y"])


def test_simcc_flip_twice_is_the_identity_and_average_of_equal_views_changes_nothing():
    codec = build_codec("simcc_2d", S, 2.0, SIGMA)
    pts = torch.tensor([[[20.3, 30.1], [40.7, 22.2], [31.0, 31.0], [25.5, 44.4], [33.3, 40.0], [38.8, 43.1]]])
    logits = _logits(codec.encode(pts)[0])
    twice = codec.flip_outputs(codec.flip_outputs(logits, PERM12), PERM12)
    torch.testing.assert_close(torch.softmax(twice["x"], -1), torch.softmax(logits["x"], -1))
    avg = codec.average_outputs([logits, logits])
    torch.testing.assert_close(codec.decode(avg)[0], codec.decode(logits)[0])


def test_simcc_average_outputs_averages_the_distributions_not_the_logits():
    codec = build_codec("simcc_2d", S, 2.0, SIGMA)
    a = _logits(codec.encode(torch.tensor([[[20.0, 20.0]]]))[0])
    b = _logits(codec.encode(torch.tensor([[[30.0, 40.0]]]))[0])
    coords, conf = codec.decode(codec.average_outputs([a, b]))
    # the mean of the two distributions has the mean of their expectations (the logit mean would
    # be a single Gaussian in between with the full peak height)
    torch.testing.assert_close(coords, torch.tensor([[[25.0, 30.0]]]), atol=1e-3, rtol=0)
    assert float(conf) < 0.6 * float(codec.decode(a)[1])


def test_regression_flip_and_average_are_exact():
    codec = build_codec("direct_regression", S)
    pts = torch.tensor([[[10.0, 5.0], [0.0, 63.0], [31.5, 7.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    mirrored = pts[:, list(PERM12)].clone()
    mirrored[..., 0] = (S - 1) - mirrored[..., 0]
    back = codec.flip_outputs(codec.encode(mirrored)[0], PERM12)
    torch.testing.assert_close(codec.decode(back)[0], pts, atol=1e-5, rtol=0)
    other = codec.encode(pts + 2.0)[0]
    torch.testing.assert_close(codec.decode(codec.average_outputs([back, other]))[0], pts + 1.0, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ the roof-angle (AI-aware) loss
def _rotate(pts, deg, centre):
    a = math.radians(deg)
    R = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=pts.dtype)
    return (pts - centre) @ R.T + centre


def test_roof_angle_error_is_the_ai_error_of_a_rotated_roof_line():
    from models.losses import roof_angle_error_deg

    edge, tri = 0, 2
    gt = torch.tensor([[[10.0, 30.0], [20.0, 28.0], [40.0, 40.0]]]).repeat(4, 1, 1)
    # rotating the lateral edge about the triradiate point by d degrees changes the AI by d
    pred = torch.stack([_rotate(gt[i], d, gt[i, tri]) for i, d in enumerate((0.0, 1.5, -7.0, 179.0))])
    err = roof_angle_error_deg(pred, gt, edge, tri)
    torch.testing.assert_close(err.abs(), torch.tensor([0.0, 1.5, 7.0, 179.0]), atol=1e-4, rtol=0)
    # a shift along the roof line leaves the angle unchanged
    along = gt.clone()
    along[:, edge] += 0.3 * (gt[:, edge] - gt[:, tri])
    assert roof_angle_error_deg(along, gt, edge, tri).abs().max() < 1e-4


def test_with_roof_angle_loss_adds_the_weighted_angle_term_and_has_gradients():
    from models.losses import with_roof_angle_loss

    codec = build_codec("simcc_2d", S, 2.0, SIGMA)
    base = get_loss(None, "simcc_2d")
    gt = torch.tensor([[[15.0, 30.0], [25.0, 27.0], [40.0, 36.0], [20, 45], [25, 45], [30, 45]]])
    targets, weights = codec.encode(gt)
    targets["keypoints_px"] = gt
    pred_pts = gt.clone()
    pred_pts[0, 0] = _rotate(gt[0, :1], 5.0, gt[0, 2])[0]     # the AI off by 5 degrees
    logits = {k: v.clone().requires_grad_(True) for k, v in _logits(codec.encode(pred_pts)[0]).items()}
    loss = with_roof_angle_loss(base, codec, edge=0, tri=2, weight=0.1)
    total = loss(logits, targets, weights)
    # smooth L1 (beta 1 deg) of a 5-degree error is 4.5; the base loss is the KL of the two targets
    assert (total - base(logits, targets, weights)).item() == pytest.approx(0.1 * 4.5, abs=2e-3)
    total.backward()
    assert torch.isfinite(logits["x"].grad).all() and logits["x"].grad.abs().sum() > 0
    # a hip whose edge lies outside the crop (weight 0) does not count
    w0 = weights.clone()
    w0[0, 0] = 0
    assert (loss(logits, targets, w0) - base(logits, targets, w0)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="softargmax"):
        with_roof_angle_loss(base, build_codec("simcc_2d", S, decode="argmax"), 0, 2, 0.1)
