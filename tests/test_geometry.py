"""Clinical geometry: hand-computed AI and IHDI cases, invariances, boundaries."""
import cmath
import math
import warnings

import numpy as np
import pytest

from datasets.layouts import IHDI12, MTDDH8, mirror_image_keypoints
from utils.hip_geometry import acetabular_index, hip_frames, hip_lines, ihdi_grade


def pelvis(ai_l=20.0, ai_r=30.0, hl=(-20.0, 30.0), hr=(-20.0, 30.0), roof=60.0):
    """A level pelvis: triradiate points at (200, 300) and (300, 300).

    ``hl``/``hr`` are the H-points in each hip's local frame (x lateral, y inferior),
    measured from where the Perkin line meets the H-line.
    """
    k = np.zeros((12, 2))
    k[2] = (200, 300)
    k[6] = (300, 300)
    a, b = math.radians(ai_l), math.radians(ai_r)
    k[0] = (200 - roof * math.cos(a), 300 - roof * math.sin(a))
    k[8] = (300 + roof * math.cos(b), 300 - roof * math.sin(b))
    k[1] = (k[0] + k[2]) / 2
    k[7] = (k[6] + k[8]) / 2
    ol = np.array([k[0, 0], 300.0])   # left origin: lateral is -x
    orr = np.array([k[8, 0], 300.0])  # right origin: lateral is +x
    hpl = ol + np.array([-hl[0], hl[1]])
    hpr = orr + np.array([hr[0], hr[1]])
    # metaphysis corners straddle the H-point; ihdi12 H-point = mean of 3 and 5 (9 and 11)
    k[3], k[4], k[5] = hpl + (-8, 0), hpl, hpl + (8, 0)
    k[9], k[10], k[11] = hpr + (-8, 0), hpr, hpr + (8, 0)
    return k


def rotate(k, deg, centre=(250, 300)):
    t = math.radians(deg)
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return (k - centre) @ R.T + centre


def test_level_pelvis_hand_computed():
    k = pelvis(20, 30)
    l, r = acetabular_index(k)
    assert l == pytest.approx(20.0, abs=1e-9)
    assert r == pytest.approx(30.0, abs=1e-9)
    f = hip_frames(k)
    # left origin is the projection of the lateral edge onto the H-line
    assert f["left"]["origin"] == pytest.approx([200 - 60 * math.cos(math.radians(20)), 300])
    assert f["left"]["hpoint_local"] == pytest.approx([-20, 30])
    assert f["right"]["hpoint_local"] == pytest.approx([-20, 30])
    assert ihdi_grade(k) == (1, 1)


@pytest.mark.parametrize("deg", [-15, 15, 7.5])
def test_rotation_scale_translation_invariance(deg):
    k = pelvis(17, 38, hl=(10, 30), hr=(25, 5))
    base_ai, base_g = acetabular_index(k), ihdi_grade(k)
    k2 = rotate(k, deg) * 2.7 + np.array([-133.0, 57.0])
    assert acetabular_index(k2) == pytest.approx(base_ai, abs=1e-9)
    assert ihdi_grade(k2) == base_g


def test_each_grade():
    # (x, y) in the local frame -> grade
    cases = {(-10, 30): 1, (10, 30): 2, (30, 10): 3, (5, -4): 4, (-10, -4): 4}
    for (x, y), grade in cases.items():
        k = pelvis(hl=(x, y), hr=(x, y))
        assert ihdi_grade(k) == (grade, grade), (x, y)


def test_boundary_conventions():
    assert ihdi_grade(pelvis(hl=(0, 20), hr=(0, 20))) == (1, 1)      # on the P-line -> I
    assert ihdi_grade(pelvis(hl=(15, 15), hr=(15, 15))) == (2, 2)    # on the D-line -> II
    assert ihdi_grade(pelvis(hl=(15, 0), hr=(15, 0))) == (3, 3)      # on the H-line, lateral -> III (y = 0 is not above)
    assert ihdi_grade(pelvis(hl=(-5, 0), hr=(-5, 0))) == (1, 1)      # on the H-line, medial -> I
    assert ihdi_grade(pelvis(hl=(15, -1e-6), hr=(15, -1e-6))) == (4, 4)


def test_sides_are_independent():
    k = pelvis(hl=(-10, 30), hr=(30, 10))
    assert ihdi_grade(k) == (1, 3)


def test_batch_matches_single():
    rng = np.random.default_rng(0)
    ks = np.stack([rotate(pelvis(rng.uniform(10, 45), rng.uniform(10, 45),
                                 hl=tuple(rng.uniform(-30, 40, 2)), hr=tuple(rng.uniform(-30, 40, 2))),
                          rng.uniform(-15, 15)) for _ in range(50)])
    bl, br = acetabular_index(ks)
    gl, gr = ihdi_grade(ks)
    for i in range(50):
        assert (bl[i], br[i]) == pytest.approx(acetabular_index(ks[i]))
        assert (gl[i], gr[i]) == ihdi_grade(ks[i])


def test_mirrored_image_swaps_sides():
    k = rotate(pelvis(18, 33, hl=(10, 30), hr=(30, 10)), 8)
    m = mirror_image_keypoints(k, 512)
    assert acetabular_index(m) == pytest.approx(acetabular_index(k)[::-1])
    assert ihdi_grade(m) == ihdi_grade(k)[::-1]


def test_mtddh8_layout():
    k12 = pelvis(22, 35, hl=(10, 30), hr=(30, 10))
    k8 = np.zeros((8, 2))
    # per side [lateral edge, triradiate, head centre, H-point]
    k8[0], k8[1], k8[3] = k12[0], k12[2], (k12[3] + k12[5]) / 2
    k8[4], k8[5], k8[7] = k12[8], k12[6], (k12[9] + k12[11]) / 2
    k8[2] = k8[3] + (0, -10)
    k8[6] = k8[7] + (0, -10)
    assert acetabular_index(k8, "mtddh8") == pytest.approx(acetabular_index(k12))
    assert ihdi_grade(k8, layout="mtddh8") == ihdi_grade(k12) == (2, 3)


def test_dysplastic_hip_reads_larger():
    # a steeper roof is a larger AI, on either side, whatever the tilt
    for deg in (-10, 0, 10):
        l, r = acetabular_index(rotate(pelvis(15, 40), deg))
        assert l < r


def test_degenerate_geometry_warns_not_raises():
    k = pelvis()
    k[6] = k[2]                             # coincident triradiate points
    with pytest.warns(RuntimeWarning, match="degenerate"):
        ai = acetabular_index(k)
    assert all(math.isnan(a) for a in ai)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ihdi_grade(k) == (0, 0)
    k = pelvis()
    k[0] = k[2]                             # zero-length left roof line
    with pytest.warns(RuntimeWarning):
        l, r = acetabular_index(k)
    assert math.isnan(l) and r == pytest.approx(30.0)


def test_wrong_shape_raises():
    with pytest.raises(ValueError, match="12 points"):
        acetabular_index(np.zeros((8, 2)))
    with pytest.raises(ValueError):
        ihdi_grade(np.zeros((12, 3)))


def test_hip_lines_geometry():
    k = rotate(pelvis(20, 30), 10)
    lines = hip_lines(k)
    for side in ("left", "right"):
        h0, h1 = lines[side]["h_line"]
        p0, p1 = lines[side]["p_line"]
        d0, d1 = lines[side]["d_line"]
        hv, pv, dv = h1 - h0, p1 - p0, d1 - d0
        assert abs(np.dot(hv, pv)) < 1e-6 * np.linalg.norm(hv) * np.linalg.norm(pv)      # P perpendicular to H
        cosang = abs(np.dot(hv, dv)) / np.linalg.norm(hv) / np.linalg.norm(dv)
        assert cosang == pytest.approx(math.cos(math.radians(45)))                        # D at 45 degrees
        assert d0 == pytest.approx(lines[side]["origin"])
    # H-lines of both sides lie on the line through the two triradiate points
    t = k[[2, 6]]
    for side in ("left", "right"):
        for p in lines[side]["h_line"]:
            cross = (t[1] - t[0])[0] * (p - t[0])[1] - (t[1] - t[0])[1] * (p - t[0])[0]
            assert abs(cross) < 1e-6


def test_layouts_are_consistent():
    for lay in (IHDI12, MTDDH8):
        idx = sorted(lay.side_indices["left"] + lay.side_indices["right"])
        assert idx == list(range(lay.num_points))
        assert sorted(lay.mirror_perm) == list(range(lay.points_per_side))
        perm = np.array(lay.mirror_perm)
        assert np.array_equal(perm[perm], np.arange(lay.points_per_side))   # an involution


def _reference(k):
    """An independent formulation: rotate the pelvis so the H-line is horizontal."""
    out_ai, out_g = [], []
    tl, tr = complex(*k[2]), complex(*k[6])
    rot = abs(tr - tl) / (tr - tl)              # rotation that makes tl->tr point along +x
    z = lambda p: (complex(*p) - tl) * rot      # noqa: E731
    for edge, tri, hp, sgn in ((k[0], k[2], (k[3] + k[5]) / 2, -1), (k[8], k[6], (k[9] + k[11]) / 2, 1)):
        e, t, h = z(edge), z(tri), z(hp)
        v = e - t
        out_ai.append(math.degrees(math.acos(sgn * v.real / abs(v))))
        x = sgn * (h.real - e.real)             # lateral distance from the Perkin line
        y = h.imag                              # image y grows downwards: inferior is +imag
        out_g.append(4 if y < 0 else 1 if x <= 0 else 2 if y >= x else 3)
    return tuple(out_ai), tuple(out_g)


def test_random_pelves_match_independent_reference():
    rng = np.random.default_rng(1)
    for _ in range(300):
        k = pelvis(rng.uniform(5, 50), rng.uniform(5, 50),
                   hl=tuple(rng.uniform(-40, 40, 2)), hr=tuple(rng.uniform(-40, 40, 2)),
                   roof=rng.uniform(20, 90))
        k = rotate(k, rng.uniform(-20, 20), centre=rng.uniform(0, 500, 2)) * rng.uniform(0.3, 4) + rng.uniform(-99, 99, 2)
        ai, g = _reference(k)
        assert acetabular_index(k) == pytest.approx(ai, abs=1e-6)
        assert ihdi_grade(k) == g


# --------------------------------------------------------------------------------------
# CE angle, Toennis grade, Hilgenreiner distances (mtddh8: per side [edge, triradiate,
# head centre, H-point])
# --------------------------------------------------------------------------------------
from utils.hip_geometry import (TONNIS_TAU_FRACTION, ce_angle, head_centre_index,  # noqa: E402
                                hilgenreiner_distances, tonnis_grade)


def pelvis8(el=(50, -20), er=(50, -20), cl=(50, 20), cr=(50, 20), hl=(35, 40), hr=(35, 40)):
    """A level mtddh8 pelvis, triradiate points at (200, 300) and (300, 300) (span 100).

    Every point is given in its hip's local coordinates measured from its triradiate
    point: (lateral, inferior). Left hip: lateral is image -x; right hip: image +x.
    """
    k = np.zeros((8, 2))
    k[1], k[5] = (200, 300), (300, 300)
    for base, sgn, pts in ((0, -1, (el, None, cl, hl)), (4, 1, (er, None, cr, hr))):
        tri = k[base + 1]
        for j, p in enumerate(pts):
            if p is not None:
                k[base + j] = (tri[0] + sgn * p[0], tri[1] + p[1])
    return k


def test_head_centre_index():
    assert [head_centre_index("mtddh8", s) for s in ("left", "right")] == [2, 6]
    with pytest.raises(ValueError, match="head centre"):
        head_centre_index("ihdi12", "left")


CE_CASES = [
    # (head centre in local coords, E at (50, -20)) -> CE degrees
    ((50, 20), 0.0),                                         # C straight below E
    ((40, 20), math.degrees(math.atan2(10, 40))),            # E lateral by 10, 40 above
    ((60, 20), -math.degrees(math.atan2(10, 40))),           # E medial by 10 -> negative
    ((50 - 30, -20), 90.0),                                  # E level with C, lateral
    ((50 + 30, -20), -90.0),                                 # level, medial
    ((50, -60), 180.0),                                      # E straight below C: +180, not -180
    ((40, -60), 180 - math.degrees(math.atan2(10, 40))),     # below and lateral
    ((60, -60), -(180 - math.degrees(math.atan2(10, 40)))),  # below and medial
]


@pytest.mark.parametrize("c, expected", CE_CASES)
def test_ce_angle_hand_computed(c, expected):
    l, r = ce_angle(pelvis8(cl=c, cr=c))
    assert l == pytest.approx(expected, abs=1e-9)
    assert r == pytest.approx(expected, abs=1e-9)
    assert -180 < l <= 180


def test_ce_angle_sides_independent():
    l, r = ce_angle(pelvis8(cl=(40, 20), cr=(57, 44)))
    assert l == pytest.approx(math.degrees(math.atan(10 / 40)))
    assert r == pytest.approx(-math.degrees(math.atan(7 / 64)))


TONNIS_CASES = [
    # tau = 0.03 x 100 = 3; E at (50, -20); s = height of C above E
    ((40, -24), 4),      # s = 4 > tau
    ((40, -23), 3),      # s = tau exactly -> III
    ((40, -20), 3),      # level with the SMA line
    ((40, -17), 3),      # s = -tau exactly -> III
    ((60, -16), 2),      # below, lateral to the P-line
    ((40, 10), 1),       # below, medial to the P-line
    ((50, 10), 1),       # below, exactly on the P-line -> I
    ((50.001, 10), 2),   # just lateral of the P-line
]


@pytest.mark.parametrize("c, grade", TONNIS_CASES)
def test_tonnis_each_grade_and_boundary(c, grade):
    assert TONNIS_TAU_FRACTION == 0.03
    assert tonnis_grade(pelvis8(cl=c, cr=c)) == (grade, grade)


def test_tonnis_tau_scales_with_span():
    # the same C, 4 px above E, is IV with a span of 100 (tau 3) but III with 200 (tau 6)
    k = pelvis8(cl=(40, -24), cr=(40, -24))
    assert tonnis_grade(k) == (4, 4)
    k[4:] += (100, 0)                                      # move the whole right hip out
    assert tonnis_grade(k) == (3, 3)


def test_hilgenreiner_distances_hand_computed():
    hd = hilgenreiner_distances(pelvis8(hl=(35, 40), hr=(-5, -10)), layout="mtddh8")
    assert hd["h"] == pytest.approx((40.0, -10.0))
    assert hd["d"] == pytest.approx((35.0, -5.0))
    mm = hilgenreiner_distances(pelvis8(hl=(35, 40), hr=(-5, -10)), "mtddh8", pixel_spacing=0.2)
    assert mm["h"] == pytest.approx((8.0, -2.0)) and mm["d"] == pytest.approx((7.0, -1.0))
    # ihdi12: the H-point is the mean of the metaphysis corners
    k = pelvis(20, 30, hl=(-20, 30), hr=(10, 25))
    hd = hilgenreiner_distances(k)
    assert hd["h"] == pytest.approx((30.0, 25.0))
    assert hd["d"] == pytest.approx((60 * math.cos(math.radians(20)) - 20, 60 * math.cos(math.radians(30)) + 10))


def test_hilgenreiner_batch_pixel_spacing():
    ks = np.stack([pelvis8(), pelvis8(hl=(10, 20), hr=(30, 5))])
    hd = hilgenreiner_distances(ks, "mtddh8", pixel_spacing=[1.0, 0.5])
    assert hd["h"][0] == pytest.approx([40, 10]) and hd["h"][1] == pytest.approx([40, 2.5])
    assert hd["d"][0] == pytest.approx([35, 5]) and hd["d"][1] == pytest.approx([35, 15])


def test_ce_tonnis_need_a_head_centre():
    with pytest.raises(ValueError, match="head centre"):
        ce_angle(pelvis(), layout="ihdi12")
    with pytest.raises(ValueError, match="head centre"):
        tonnis_grade(pelvis(), layout="ihdi12")


@pytest.mark.parametrize("deg, scale, shift", [(-15, 2.7, (-133.0, 57.0)), (15, 0.4, (10.0, -3.0)),
                                               (7.5, 1.0, (0.0, 0.0)), (170, 1.3, (400.0, 400.0))])
def test_ce_tonnis_hd_invariance(deg, scale, shift):
    k = pelvis8(el=(45, -25), er=(55, -15), cl=(40, 15), cr=(58, -10), hl=(30, 35), hr=(20, -6))
    ce, g, hd = ce_angle(k), tonnis_grade(k), hilgenreiner_distances(k, "mtddh8")
    assert g == (1, 2)
    k2 = rotate(k, deg) * scale + np.array(shift)
    assert ce_angle(k2) == pytest.approx(ce, abs=1e-9)
    assert tonnis_grade(k2) == g
    hd2 = hilgenreiner_distances(k2, "mtddh8")
    for key in ("h", "d"):
        assert hd2[key] == pytest.approx(tuple(scale * v for v in hd[key]), abs=1e-9)


def test_ce_tonnis_hd_mirror_swaps_sides():
    k = rotate(pelvis8(el=(45, -25), er=(55, -15), cl=(40, 15), cr=(58, -10), hl=(30, 35), hr=(20, -6)), 8)
    m = mirror_image_keypoints(k, 512, "mtddh8")
    assert ce_angle(m) == pytest.approx(ce_angle(k)[::-1])
    assert tonnis_grade(m) == tonnis_grade(k)[::-1]
    hd, hdm = hilgenreiner_distances(k, "mtddh8"), hilgenreiner_distances(m, "mtddh8")
    for key in ("h", "d"):
        assert hdm[key] == pytest.approx(hd[key][::-1])
    k12 = rotate(pelvis(18, 33, hl=(10, 30), hr=(30, 10)), -6)
    hd, hdm = hilgenreiner_distances(k12), hilgenreiner_distances(mirror_image_keypoints(k12, 512))
    assert hdm["h"] == pytest.approx(hd["h"][::-1]) and hdm["d"] == pytest.approx(hd["d"][::-1])


def test_ce_tonnis_batch_matches_single():
    rng = np.random.default_rng(2)
    ks = np.stack([rotate(pelvis8(*[tuple(rng.uniform(-60, 60, 2)) for _ in range(6)]),
                          rng.uniform(-20, 20)) for _ in range(40)])
    cl, cr = ce_angle(ks)
    tl, tr = tonnis_grade(ks)
    hd = hilgenreiner_distances(ks, "mtddh8")
    for i in range(40):
        assert (cl[i], cr[i]) == pytest.approx(ce_angle(ks[i]))
        assert (tl[i], tr[i]) == tonnis_grade(ks[i])
        one = hilgenreiner_distances(ks[i], "mtddh8")
        assert (hd["h"][0][i], hd["h"][1][i]) == pytest.approx(one["h"])


def test_ce_tonnis_degenerate_warns_not_raises():
    k = pelvis8()
    k[2] = np.nan                                           # left head centre missing
    with pytest.warns(RuntimeWarning, match="degenerate"):
        l, r = ce_angle(k)
    assert math.isnan(l) and r == pytest.approx(0.0)
    with pytest.warns(RuntimeWarning, match="degenerate"):
        assert tonnis_grade(k) == (0, 1)
    k = pelvis8()
    k[5] = k[1]                                             # coincident triradiate points
    with pytest.warns(RuntimeWarning):
        assert tonnis_grade(k) == (0, 0)
    with pytest.warns(RuntimeWarning):
        hd = hilgenreiner_distances(k, "mtddh8")
    assert all(math.isnan(v) for v in hd["h"] + hd["d"])


def _reference_ce_tonnis_hd(k):
    """Independent formulation: complex numbers, H-line turned onto the real axis, and the
    left hip reflected so that lateral is +real for both hips; superior is then -imag."""
    tl, tr = complex(*k[1]), complex(*k[5])
    span = abs(tr - tl)
    rot = span / (tr - tl)
    out = {"ce": [], "tonnis": [], "h": [], "d": []}
    for e, t, c, hp, sgn in ((k[0], k[1], k[2], k[3], -1), (k[4], k[5], k[6], k[7], 1)):
        def z(p, t=t, sgn=sgn):
            w = (complex(*p) - complex(*t)) * rot
            return complex(sgn * w.real, w.imag)            # lateral = +real, inferior = +imag
        e, c, hp = z(e), z(c), z(hp)
        u = (e - c).conjugate()                             # lateral = +real, superior = +imag
        ce = 90.0 - math.degrees(cmath.phase(u))            # angle from +imag, lateral positive
        ce = ce - 360.0 if ce > 180.0 else ce
        out["ce"].append(ce)
        s = e.imag - c.imag                                 # C above E is positive
        tau = 0.03 * span
        out["tonnis"].append(4 if s > tau else 3 if abs(s) <= tau else 2 if c.real > e.real else 1)
        out["h"].append(hp.imag)
        out["d"].append(hp.real)
    return {key: tuple(v) for key, v in out.items()}


def test_ce_tonnis_hd_match_independent_reference():
    rng = np.random.default_rng(3)
    for _ in range(300):
        k = pelvis8(*[tuple(rng.uniform(-80, 80, 2)) for _ in range(6)])
        k[5] += (rng.uniform(-60, 200), 0)                 # vary the span
        k = rotate(k, rng.uniform(-180, 180), centre=rng.uniform(0, 500, 2)) * rng.uniform(0.3, 4) \
            + rng.uniform(-99, 99, 2)
        ref = _reference_ce_tonnis_hd(k)
        assert ce_angle(k) == pytest.approx(ref["ce"], abs=1e-6)
        assert tonnis_grade(k) == ref["tonnis"]
        hd = hilgenreiner_distances(k, "mtddh8")
        assert hd["h"] == pytest.approx(ref["h"], abs=1e-6)
        assert hd["d"] == pytest.approx(ref["d"], abs=1e-6)


# --------------------------------------------------------------------------------------
# ai_interval: the AI's percentile interval over sampled keypoint sets
# --------------------------------------------------------------------------------------
from utils.hip_geometry import ai_interval  # noqa: E402


def test_ai_interval_zero_spread():
    k = rotate(pelvis(17, 38), 9)
    (lo_l, hi_l), (lo_r, hi_r) = ai_interval(np.repeat(k[None], 25, axis=0), "ihdi12")
    ai_l, ai_r = acetabular_index(k)
    assert lo_l == hi_l == pytest.approx(ai_l, abs=1e-12)
    assert lo_r == hi_r == pytest.approx(ai_r, abs=1e-12)


def test_ai_interval_jitter_contains_ai_and_widens():
    rng = np.random.default_rng(4)
    k = rotate(pelvis(17, 38), -7)
    truth = acetabular_index(k)
    widths = []
    for sigma in (0.5, 1.5, 4.0):
        samples = k + rng.normal(0, sigma, size=(4000,) + k.shape)
        (ll, hl), (lr, hr) = ai_interval(samples, "ihdi12", level=0.95)
        assert ll < truth[0] < hl and lr < truth[1] < hr
        widths.append((hl - ll, hr - lr))
        # 95% of the sampled AIs fall inside, as a percentile interval should
        sl, sr = acetabular_index(samples)
        assert np.mean((sl >= ll) & (sl <= hl)) == pytest.approx(0.95, abs=0.01)
    w = np.array(widths)
    assert np.all(np.diff(w, axis=0) > 0)
    # a lower level gives a narrower interval
    samples = k + rng.normal(0, 2.0, size=(4000,) + k.shape)
    (a, b), _ = ai_interval(samples, "ihdi12", level=0.5)
    (c, d), _ = ai_interval(samples, "ihdi12", level=0.9)
    assert c < a < b < d


def test_ai_interval_batch_and_errors():
    rng = np.random.default_rng(5)
    ks = np.stack([pelvis(20, 30), pelvis(25, 40)])
    samples = ks[:, None] + rng.normal(0, 1.0, size=(2, 500, 12, 2))
    (lo_l, hi_l), (lo_r, hi_r) = ai_interval(samples, "ihdi12")
    assert lo_l.shape == (2,)
    for i in range(2):
        (a, b), (c, d) = ai_interval(samples[i], "ihdi12")
        assert (lo_l[i], hi_l[i], lo_r[i], hi_r[i]) == pytest.approx((a, b, c, d))
    with pytest.raises(ValueError):
        ai_interval(samples[0], "ihdi12", level=1.0)
    with pytest.raises(ValueError):
        ai_interval(samples[0], "mtddh8")


def test_ai_interval_skips_degenerate_samples():
    k = pelvis(20, 30)
    s = np.repeat(k[None], 10, axis=0)
    s[:3, 0] = s[:3, 2]                                     # three zero-length left roofs
    s[:, 8] = np.nan                                        # the right edge never predicted
    with pytest.warns(RuntimeWarning):
        (ll, hl), (lr, hr) = ai_interval(s, "ihdi12")
    assert ll == pytest.approx(20) and hl == pytest.approx(20)
    assert math.isnan(lr) and math.isnan(hr)
