"""The plausibility gate: each reason alone, a normal pelvis passes, NaN input, the summary."""
import math
import warnings

import numpy as np
import pytest

from datasets.layouts import mirror_image_keypoints
from utils.hip_geometry import (AI_RANGE_DEG, GATE_REASONS, MAX_H_LINE_TILT_DEG, MAX_REFINE_SHIFT,
                                TRIRADIATE_DISTANCE_RANGE, acetabular_index, format_reasons, plausibility_gate,
                                refine_shift_fraction, summarize_gate)

W = 500.0   # image width: the span of 100 px is 0.2 of it


def pelvis(ai_l=20.0, ai_r=30.0, roof=60.0):
    """A level ihdi12 pelvis, triradiate points at (200, 300) and (300, 300)."""
    k = np.zeros((12, 2))
    k[2], k[6] = (200, 300), (300, 300)
    a, b = math.radians(ai_l), math.radians(ai_r)
    k[0] = (200 - roof * math.cos(a), 300 - roof * math.sin(a))
    k[8] = (300 + roof * math.cos(b), 300 - roof * math.sin(b))
    k[1], k[7] = (k[0] + k[2]) / 2, (k[6] + k[8]) / 2
    k[3], k[4], k[5] = (160, 330), (168, 330), (176, 330)
    k[9], k[10], k[11] = (324, 330), (332, 330), (340, 330)
    return k


def rotate(k, deg, centre=(250, 300)):
    t = math.radians(deg)
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return (k - centre) @ R.T + centre


def gate(k, width=W, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # the gate reports; it never warns or raises
        return plausibility_gate(k, width, **kw)


def test_constants():
    assert AI_RANGE_DEG == (0, 60)
    assert MAX_H_LINE_TILT_DEG == 30
    assert TRIRADIATE_DISTANCE_RANGE == (0.15, 0.75)
    assert MAX_REFINE_SHIFT == 0.25
    assert len(set(GATE_REASONS)) == len(GATE_REASONS) == 9


@pytest.mark.parametrize("deg, scale", [(0, 1.0), (25, 1.0), (-29.5, 1.0), (10, 3.0)])
def test_normal_pelvis_passes(deg, scale):
    k = (rotate(pelvis(), deg) - 250) * scale + 250
    assert gate(k, width=W * scale, confidences=(0.9, 0.8), detected=(True, True)) == ([], [])


def test_ai_out_of_range_alone():
    k = pelvis(65, 30)
    assert acetabular_index(k)[0] == pytest.approx(65)
    assert gate(k) == (["ai_out_of_range"], [])
    assert gate(pelvis(20, 59.999)) == ([], [])
    assert gate(pelvis(20, 60.001)) == ([], ["ai_out_of_range"])


@pytest.mark.parametrize("deg", [35, -35, 30.5, -30.5])
def test_h_line_tilt_alone(deg):
    assert gate(rotate(pelvis(), deg)) == (["h_line_tilt"], ["h_line_tilt"])


def test_tilt_is_of_the_line_not_its_direction():
    # upside down (rotated 180 degrees) the H-line is level again; the sides are swapped
    assert gate(rotate(pelvis(), 180)) == (["sides_swapped"], ["sides_swapped"])
    assert gate(rotate(pelvis(), 140)) == (["sides_swapped", "h_line_tilt"], ["sides_swapped", "h_line_tilt"])


def test_sides_swapped_alone():
    # the two hips trade blocks without a mirror: the "left" hip is now drawn on the right
    k = mirror_image_keypoints(pelvis(), W)
    k[:, 0] = (W - 1) - k[:, 0]
    assert k[2, 0] > k[6, 0]
    assert acetabular_index(k) == pytest.approx((30, 20))
    assert gate(k) == (["sides_swapped"], ["sides_swapped"])


@pytest.mark.parametrize("width", [800.0, 120.0])
def test_triradiate_distance_alone(width):
    assert gate(pelvis(), width=width) == (["triradiate_distance"], ["triradiate_distance"])


def test_triradiate_distance_bounds_inclusive():
    assert gate(pelvis(), width=100 / 0.75) == ([], [])
    k = pelvis()
    k[6:, 0] -= 25                                   # span 75 of 500 = 0.15 exactly
    assert gate(k) == ([], [])
    k[6:, 0] -= 1e-6
    assert gate(k) == (["triradiate_distance"], ["triradiate_distance"])


def test_edge_not_lateral():
    # a zero-length roof: the edge on the triradiate point is not lateral (its AI is undefined)
    k = pelvis()
    k[0] = k[2]
    assert gate(k) == (["edge_not_lateral"], [])
    # an edge medial to the triradiate point also reads an AI above 90 degrees: both reasons
    k = pelvis()
    k[8] = (290, 280)
    assert gate(k) == ([], ["edge_not_lateral", "ai_out_of_range"])


def test_edge_not_lateral_is_rotation_aware():
    # rotated 40 degrees, a steep left roof still points laterally along the H-line
    # though its image x lies right of the triradiate point: only the tilt is reported
    k = rotate(pelvis(58, 30), 40)
    assert k[0, 0] > k[2, 0]
    assert gate(k) == (["h_line_tilt"], ["h_line_tilt"])


def test_detection_reasons():
    k = pelvis()
    assert gate(k, detected=(False, True), confidences=(0.0, 0.9)) == (["no_detection"], [])
    assert gate(k, confidences=(None, 0.9)) == (["no_detection"], [])
    assert gate(k, confidences=(0.9, float("nan"))) == ([], ["no_detection"])
    assert gate(k, confidences=(0.1, 0.9)) == (["low_confidence"], [])
    assert gate(k, confidences=(0.25, 0.9)) == ([], [])                 # min_conf itself passes
    assert gate(k, confidences=(0.9, 0.4), min_conf=0.5) == ([], ["low_confidence"])
    assert gate(k, detected=(True, False)) == ([], ["no_detection"])


def test_nan_keypoints_never_crash():
    k = pelvis()
    k[3] = np.nan                                    # one metaphysis corner of the left hip
    assert gate(k) == (["missing_keypoints"], [])
    k = pelvis()
    k[6:] = np.nan                                   # right hip not predicted: no H-line for either
    assert gate(k, detected=(True, False)) == (["missing_keypoints"], ["missing_keypoints", "no_detection"])
    assert gate(np.full((12, 2), np.nan)) == (["missing_keypoints"], ["missing_keypoints"])
    k = pelvis(65, 30)
    k[9] = np.nan                                    # the left hip's own checks still run
    assert gate(k) == (["ai_out_of_range"], ["missing_keypoints"])


def test_several_reasons_at_once():
    k = rotate(pelvis(65, 30), 40)
    left, right = gate(k, width=800.0, confidences=(0.1, 0.9))
    assert left == ["low_confidence", "triradiate_distance", "h_line_tilt", "ai_out_of_range"]
    assert right == ["triradiate_distance", "h_line_tilt"]


def test_mtddh8_layout():
    k8 = np.array([[140, 280], [200, 300], [150, 320], [150, 350],
                   [356, 280], [300, 300], [350, 320], [350, 350]], float)
    assert gate(k8, layout="mtddh8") == ([], [])
    k8[4] = (310, 200)                               # right roof at about 84 degrees
    assert gate(k8, layout="mtddh8") == ([], ["ai_out_of_range"])


def test_format_reasons():
    assert format_reasons([]) == ""
    assert format_reasons(["ai_out_of_range"]) == "ai_out_of_range"
    assert format_reasons(["no_detection", "low_confidence"]) == "no_detection;low_confidence"


def test_summarize_gate_wording():
    # 10 images = 20 hips: two with ai_out_of_range, one with no_detection
    per_image = [([], [])] * 7 + [(["ai_out_of_range"], []), ([], ["ai_out_of_range"]), (["no_detection"], [])]
    assert summarize_gate(per_image) == "3 of 20 hips ungradable: ai_out_of_range 2, no_detection 1"
    # the same, one entry per hip, as lists or as formatted cells
    per_hip = [h for pair in per_image for h in pair]
    assert summarize_gate(per_hip) == "3 of 20 hips ungradable: ai_out_of_range 2, no_detection 1"
    assert summarize_gate([format_reasons(h) for h in per_hip]) == summarize_gate(per_hip)


def test_summarize_gate_counts_hips_not_reasons():
    hips = [["h_line_tilt", "sides_swapped"], ["h_line_tilt", "sides_swapped"], ["low_confidence"], []]
    assert summarize_gate(hips) == "3 of 4 hips ungradable: h_line_tilt 2, sides_swapped 2, low_confidence 1"
    assert summarize_gate([[], []]) == "0 of 2 hips ungradable"
    assert summarize_gate([]) == "0 of 0 hips ungradable"


def test_gate_over_a_batch_summary():
    images = [pelvis(), pelvis(65, 30), rotate(pelvis(), 35)]
    results = [gate(k) for k in images]
    assert summarize_gate(results) == "3 of 6 hips ungradable: h_line_tilt 2, ai_out_of_range 1"


def test_stages_disagree_alone():
    """A roof refiner that moves a roof point by more than MAX_REFINE_SHIFT of the first stage's
    roof length: the two models disagree, the hip is not graded. The bound passes; NaN fails."""
    k = pelvis()
    assert gate(k, refine_shift=(0.1, None)) == ([], [])
    assert gate(k, refine_shift=(MAX_REFINE_SHIFT, 0.0)) == ([], [])
    assert gate(k, refine_shift=(0.2501, 0.1)) == (["stages_disagree"], [])
    assert gate(k, refine_shift=(None, float("nan"))) == ([], ["stages_disagree"])
    assert gate(k, refine_shift=None) == gate(k) == ([], [])


def test_refine_shift_fraction():
    first = np.array([[0.0, 0.0], [20.0, -5.0], [40.0, -10.0]])      # edge at 0, triradiate at 2 (in the array)
    roof = math.hypot(40, 10)
    moved = first + [[0, 0], [3.0, 4.0], [1.0, 0.0]]                  # the largest move: 5 px
    assert refine_shift_fraction(first, moved, 0, 2) == pytest.approx(5.0 / roof)
    assert refine_shift_fraction(first, first, 0, 2) == 0.0
    assert refine_shift_fraction(np.zeros((3, 2)), moved, 0, 2) == math.inf     # no roof: disagree
