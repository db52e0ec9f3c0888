"""Clinical geometry: hand-computed AI and IHDI cases, invariances, boundaries."""
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
