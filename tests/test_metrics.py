"""utils.evaluation.metrics against hand-computed values, published examples and scikit-learn."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import (cohen_kappa_score, confusion_matrix, f1_score, mean_absolute_error,
                             precision_score, recall_score)

from datasets.layouts import get_layout
from utils.evaluation import metrics as M

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8],
                          [6, 1, 3, 2],
                          [8, 4, 6, 8],
                          [7, 1, 2, 6],
                          [10, 5, 6, 9],
                          [6, 2, 4, 7]], dtype=float)


def hip_kps(left_hp=(-10.0, 20.0), right_hp=(-10.0, 20.0), left_rise=40.0, right_rise=40.0):
    """ihdi12 keypoints with a horizontal H-line at y = 500 (triradiates at x = 400 and 600).

    The lateral edges are 100 px lateral of the triradiates and ``*_rise`` px above the H-line
    (AI = atan(rise / 100)); the H-point sits at local (x, y) = ``*_hp`` of each hip's frame
    (origin on the P-line, x lateral, y inferior).
    """
    k = np.zeros((12, 2))
    # left hip: lateral is -x
    k[2] = (400, 500)
    k[0] = (300, 500 - left_rise)
    k[1] = (k[0] + k[2]) / 2
    hp = np.array([300 - left_hp[0], 500 + left_hp[1]])
    k[3], k[4], k[5] = hp + (-10, 0), hp + (0, -5), hp + (10, 0)
    # right hip: lateral is +x
    k[6] = (600, 500)
    k[8] = (700, 500 - right_rise)
    k[7] = (k[6] + k[8]) / 2
    hp = np.array([700 + right_hp[0], 500 + right_hp[1]])
    k[9], k[10], k[11] = hp + (-10, 0), hp + (0, -5), hp + (10, 0)
    return k


GRADE_HP = {1: (-10.0, 20.0), 2: (10.0, 20.0), 3: (20.0, 10.0), 4: (10.0, -5.0)}


# ------------------------------------------------------------------ keypoint errors
def test_radial_errors_345():
    pred = np.array([[[3.0, 4.0], [0.0, 0.0]], [[1.0, 1.0], [-6.0, 8.0]]])
    gt = np.zeros_like(pred)
    np.testing.assert_allclose(M.radial_errors(pred, gt), [[5.0, 0.0], [math.sqrt(2), 10.0]])
    assert M.radial_errors(pred[0], gt[0]).shape == (2,)
    with pytest.raises(ValueError):
        M.radial_errors(pred, gt[:, :1])


def test_error_summary_and_sdr_by_hand():
    s = M.error_summary([1, 2, 3, 4, np.nan])
    assert s["n"] == 4 and s["mean"] == 2.5 and s["median"] == 2.5 and s["max"] == 4
    assert s["sd"] == pytest.approx(math.sqrt(5 / 3))          # ddof = 1
    sdr = M.success_detection_rate([1, 2, 2.5, 3, 5, np.nan])
    assert sdr == {"2": 0.4, "2.5": 0.6, "3": 0.8, "4": 0.8}    # <= r, NaN ignored
    assert math.isnan(M.error_summary([])["mean"])


def test_nme_normalisers():
    e = np.array([[10.0, 20.0], [5.0, 5.0]])
    nme = M.normalized_errors(e, M.crop_diagonal([100.0, 50.0]))
    np.testing.assert_allclose(nme, [[10 / (100 * 2 ** .5), 20 / (100 * 2 ** .5)], [5 / (50 * 2 ** .5)] * 2])
    assert np.all(np.isnan(M.normalized_errors(e, [0.0, np.nan])))


def test_box_iou():
    assert M.box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert M.box_iou([0, 0, 2, 2], [2, 2, 0, 0]) == pytest.approx(1.0)   # any corner order
    assert M.box_iou([0, 0, 1, 1], [5, 5, 6, 6]) == 0.0
    got = M.box_iou(np.array([[0, 0, 2, 2], [0, 0, 4, 2]]), np.array([0, 0, 2, 2]))
    np.testing.assert_allclose(got, [1.0, 0.5])
    assert math.isnan(M.box_iou([0, 0, np.nan, 1], [0, 0, 1, 1]))


# ------------------------------------------------------------------ ICC / agreement
def test_icc_shrout_fleiss_published_values():
    # published: ICC(1,1) = .17, ICC(2,1) = .29, ICC(3,1) = .71
    assert M.icc(SHROUT_FLEISS, "1,1") == pytest.approx(0.17, abs=0.005)
    assert M.icc(SHROUT_FLEISS, "2,1") == pytest.approx(0.29, abs=0.005)
    assert M.icc(SHROUT_FLEISS, "3,1") == pytest.approx(0.71, abs=0.005)
    # and from the published mean squares BMS 11.24, JMS 32.49, EMS 1.02 (k = 4, n = 6)
    bms, jms, ems, k, n = 11.24, 32.49, 1.02, 4, 6
    assert M.icc(SHROUT_FLEISS, "2,1") == pytest.approx((bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n),
                                                        abs=2e-3)
    assert M.icc(SHROUT_FLEISS, "3,1") == pytest.approx((bms - ems) / (bms + (k - 1) * ems), abs=2e-3)


def test_icc_properties():
    x = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    assert M.icc(np.c_[x, x], "2,1") == pytest.approx(1.0)
    shifted = np.c_[x, x + 5]
    assert M.icc(shifted, "3,1") == pytest.approx(1.0)      # consistency ignores a constant offset
    assert M.icc(shifted, "2,1") < 0.8                       # absolute agreement does not
    assert math.isnan(M.icc(np.c_[[1.0], [1.0]], "2,1"))
    with pytest.raises(ValueError):
        M.icc(SHROUT_FLEISS, "4,1")


def test_bland_altman_by_hand():
    pred, gt = np.array([2.0, 4, 6, 9]), np.array([1.0, 2, 3, 5])     # d = 1, 2, 3, 4
    ba = M.bland_altman(pred, gt)
    sd = math.sqrt(5 / 3)
    assert ba["bias"] == 2.5 and ba["sd"] == pytest.approx(sd) and ba["n"] == 4
    assert ba["loa_low"] == pytest.approx(2.5 - 1.96 * sd)
    assert ba["loa_high"] == pytest.approx(2.5 + 1.96 * sd)


def test_agreement_by_hand_and_against_sklearn_scipy():
    rng = np.random.default_rng(0)
    gt = rng.uniform(10, 40, 30)
    pred = gt + rng.normal(1.0, 2.0, 30)
    pred_nan = np.r_[pred, np.nan]
    a = M.agreement(pred_nan, np.r_[gt, 20.0])
    assert a["n"] == 30 and a["n_missing"] == 1
    assert a["mae"] == pytest.approx(mean_absolute_error(gt, pred))
    assert a["rmse"] == pytest.approx(np.sqrt(np.mean((pred - gt) ** 2)))
    assert a["bias"] == pytest.approx(np.mean(pred - gt))
    assert a["sd_error"] == pytest.approx(np.std(pred - gt, ddof=1))
    assert a["pearson_r"] == pytest.approx(stats.pearsonr(pred, gt)[0])
    assert a["icc2_1"] == pytest.approx(M.icc(np.c_[gt, pred], "2,1"))
    # tiny hand example: errors +1, -1, +2 -> MAE 4/3, RMSE sqrt(2), bias 2/3
    b = M.agreement([11, 19, 32], [10, 20, 30])
    assert b["mae"] == pytest.approx(4 / 3) and b["rmse"] == pytest.approx(math.sqrt(2))
    assert b["bias"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------ IHDI
def test_quadratic_kappa_hand_worked():
    t = [1, 1, 2, 2, 3, 4]
    p = [1, 2, 2, 2, 3, 3]
    # O: disagreements (1->2) and (4->3), weight 1/9 each; row sums [2,2,1,1], col sums [1,3,2,0]
    # sum w*O/N = (2/9)/6; sum w*r*c/N^2 = (58/9)/36  ->  kappa = 1 - 12/58 = 23/29
    res = M.ihdi_metrics(t, p)
    assert res["kappa_quadratic"] == pytest.approx(23 / 29)
    assert res["kappa_quadratic"] == pytest.approx(cohen_kappa_score(t, p, weights="quadratic", labels=[1, 2, 3, 4]))
    assert res["accuracy"] == pytest.approx(4 / 6)
    assert res["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
    assert res["macro_precision"] == pytest.approx(precision_score(t, p, average="macro", zero_division=0))
    assert res["macro_recall"] == pytest.approx(recall_score(t, p, average="macro", zero_division=0))
    cm = M.confusion_4class(t, p)
    np.testing.assert_array_equal(cm, confusion_matrix(t, p, labels=[1, 2, 3, 4]))
    assert cm[3, 2] == 1 and cm[0, 1] == 1 and cm.sum() == 6
    assert res["confusion"]["gt_IV"]["pred_III"] == 1
    assert res["per_grade"]["IV"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_screening_toy_confusion():
    t = [1, 1, 1, 2, 3, 4, 2]
    p = [1, 2, 1, 2, 1, 4, 3]
    # positive = II-IV: TP = 3, FN = 1, FP = 1, TN = 2
    sc = M.ihdi_metrics(t, p)["screening"]
    assert (sc["tp"], sc["fn"], sc["fp"], sc["tn"]) == (3, 1, 1, 2)
    assert sc["sensitivity"] == pytest.approx(3 / 4) and sc["specificity"] == pytest.approx(2 / 3)
    assert sc["ppv"] == pytest.approx(3 / 4) and sc["npv"] == pytest.approx(2 / 3)
    tb, pb = np.array(t) >= 2, np.array(p) >= 2
    assert sc["sensitivity"] == pytest.approx(recall_score(tb, pb))
    assert sc["specificity"] == pytest.approx(recall_score(~tb, ~pb))
    assert sc["f1"] == pytest.approx(f1_score(tb, pb))
    np.testing.assert_array_equal(M.screening_confusion(t, p), [[2, 1], [1, 3]])
    empty = M.screening_metrics(0, 0, 5, 0)
    assert math.isnan(empty["sensitivity"]) and empty["specificity"] == 1.0


def test_grade_zero_and_missing_are_counted_and_excluded():
    t = [1, 0, 2, 3, np.nan, 4]
    p = [1, 2, 0, 3, 2, np.nan]
    res = M.ihdi_metrics(t, p)
    assert res["n"] == 2 and res["n_ungradable_gt"] == 1 and res["n_ungradable_pred"] == 1
    assert res["n_ungradable"] == 2 and res["n_missing"] == 2
    assert res["accuracy"] == 1.0
    assert M.confusion_4class(t, p).sum() == 2
    with pytest.raises(ValueError):
        M.ihdi_metrics([5], [1])


# ------------------------------------------------------------------ predictions DataFrame / evaluate
def _perfect_frame():
    rows = []
    for i, (gl, gr) in enumerate([(1, 1), (1, 2), (2, 3), (3, 4), (4, 1), (1, 3), (2, 2), (1, 4)]):
        k = hip_kps(GRADE_HP[gl], GRADE_HP[gr], left_rise=20 + 3 * i, right_rise=50 - 2 * i)
        rows.append(M.prediction_row(f"s{i}", k, "ihdi12", gt_kps=k,
                                     pred_boxes={"left": [250, 420, 450, 580], "right": [550, 420, 750, 580]},
                                     gt_boxes={"left": [250, 420, 450, 580], "right": [550, 420, 750, 580]},
                                     det_conf={"left": 0.9, "right": 0.8}, pixel_spacing_mm=0.2,
                                     crop_sides={"left": 200, "right": 200}))
    return pd.DataFrame(rows)


def test_prediction_row_schema_and_geometry():
    k = hip_kps(GRADE_HP[1], GRADE_HP[3], left_rise=40, right_rise=100)
    row = M.prediction_row("a", k, "ihdi12", gt_kps=k + [3.0, 4.0], pixel_spacing_mm=0.1)
    assert row["pred_ihdi_left"] == 1 and row["pred_ihdi_right"] == 3
    assert row["pred_ai_left"] == pytest.approx(math.degrees(math.atan(0.4)))
    assert row["pred_ai_right"] == pytest.approx(45.0)
    assert row["tri_dist"] == pytest.approx(200.0)
    assert row["mean_err_px"] == pytest.approx(5.0)
    assert [c for c in row if c.startswith("err_px_right_")] == [f"err_px_right_{j}" for j in range(6, 12)]
    assert row["detected_left"] and row["detected_right"] and math.isnan(row["iou_left"])
    # a missing side: not detected, no AI on either side (the H-line needs both triradiates)
    k2 = k.copy()
    k2[6:] = np.nan
    row2 = M.prediction_row("b", k2, "ihdi12", gt_kps=k, gt_boxes={"left": [0, 0, 1, 1], "right": [0, 0, 1, 1]},
                            pred_boxes={"left": [0, 0, 1, 1], "right": None})
    assert row2["detected_left"] and not row2["detected_right"]
    assert row2["iou_left"] == 1.0 and row2["iou_right"] == 0.0
    assert math.isnan(row2["pred_ai_left"]) and math.isnan(row2["pred_ihdi_right"])
    assert row2["gt_ihdi_right"] == 3 and math.isnan(row2["mean_err_px_right"])


def test_evaluate_perfect_predictions():
    df = _perfect_frame()
    res = M.evaluate(df)
    json.dumps(res, allow_nan=False)      # JSON-ready: plain types, no NaN
    assert res["n_images"] == 8
    assert res["detection"]["pooled"]["recall"] == 1.0 and res["detection"]["pooled"]["recall_iou0.5"] == 1.0
    kp = res["keypoints"]
    assert kp["px"]["pooled"]["mean"] == 0.0 and kp["px"]["pooled"]["n"] == 96
    assert kp["mm"]["pooled"]["mean"] == 0.0 and kp["sdr_mm"]["pooled"]["2"] == 1.0
    assert kp["nme_crop"]["pooled"]["mean"] == 0.0
    for side in ("left", "right", "pooled"):
        ai = res["ai"][side]
        assert ai["mae"] == pytest.approx(0.0, abs=1e-9) and ai["rmse"] == pytest.approx(0.0, abs=1e-9)
        assert ai["icc2_1"] == pytest.approx(1.0) and ai["icc3_1"] == pytest.approx(1.0)
        assert ai["pearson_r"] == pytest.approx(1.0)
        ih = res["ihdi"][side]
        assert ih["accuracy"] == 1.0 and ih["kappa_quadratic"] == pytest.approx(1.0)
        assert ih["macro_f1"] == pytest.approx(1.0)
    sc = res["ihdi"]["pooled"]["screening"]
    assert sc["sensitivity"] == 1.0 and sc["specificity"] == 1.0
    assert res["ihdi"]["pooled"]["n"] == 16
    assert res["ihdi"]["pooled"]["confusion"]["gt_III"]["pred_III"] == 3


def test_evaluate_errors_mm_nme_and_exclusions():
    # two images, hand-set errors; image 2 has no pixel spacing and an undetected right side
    df = pd.DataFrame({
        "stem": ["a", "b"],
        "detected_left": [True, True], "detected_right": [True, False],
        "iou_left": [0.8, 0.4], "iou_right": [0.6, 0.0],
        "pixel_spacing_mm": [0.5, np.nan], "tri_dist": [100.0, 50.0],
        "crop_side_left": [100.0, 100.0], "crop_side_right": [100.0, np.nan],
        **{f"err_px_left_{j}": [2.0, 4.0] for j in range(4)},
        **{f"err_px_right_{j}": [6.0, np.nan] for j in range(4, 8)},
    })
    res = M.evaluate(df, layout="mtddh8")
    det = res["detection"]
    assert det["right"]["recall"] == 0.5 and det["pooled"]["recall"] == 0.75
    assert det["left"]["recall_iou0.5"] == 0.5 and det["pooled"]["recall_iou0.5"] == 0.5
    kp = res["keypoints"]
    assert kp["n_missing_right"] == 1 and kp["n_images_with_spacing"] == 1
    assert kp["px"]["left"]["mean"] == 3.0 and kp["px"]["right"]["mean"] == 6.0
    assert kp["px"]["pooled"]["mean"] == pytest.approx((4 * 2 + 4 * 4 + 4 * 6) / 12)
    # mm: only image a (0.5 mm/px): left 1 mm, right 3 mm
    assert kp["mm"]["left"]["mean"] == 1.0 and kp["mm"]["right"]["mean"] == 3.0 and kp["mm"]["pooled"]["n"] == 8
    assert kp["sdr_mm"]["pooled"]["2"] == 0.5 and kp["sdr_px"]["pooled"]["2"] == pytest.approx(4 / 12)
    assert kp["nme_tri"]["left"]["mean"] == pytest.approx((0.02 + 0.08) / 2)
    assert kp["nme_crop"]["right"]["mean"] == pytest.approx(6 / (100 * math.sqrt(2)))
    assert kp["px"]["per_keypoint"]["right_triradiate"]["mean"] == 6.0
    assert kp["px"]["per_point"]["triradiate"]["n"] == 3
    assert "ai" not in res and "ihdi" not in res


def test_evaluate_survives_csv_roundtrip(tmp_path):
    df = _perfect_frame()
    df.loc[0, "pred_ai_left"] += 2.0
    p = tmp_path / "predictions.csv"
    df.to_csv(p, index=False)
    df.loc[1, "stem"] = "0012"
    df.to_csv(p, index=False)
    back = M.read_predictions(p)
    assert back.loc[1, "stem"] == "0012"
    a, b = M.evaluate(df), M.evaluate(back)
    assert json.dumps(a) == json.dumps(b)
    assert a["ai"]["left"]["mae"] == pytest.approx(2.0 / 8)
    # a bool column with a gap comes back from CSV as text
    pd.DataFrame({"stem": ["a", "b", "c"], "detected_left": [True, None, False]}).to_csv(p, index=False)
    det = M.evaluate(pd.read_csv(p))["detection"]["left"]
    assert det["n"] == 2 and det["recall"] == 0.5


def test_flatten_and_metrics_csv(tmp_path):
    nested = {"ai": {"pooled": {"mae": np.float64(1.5), "icc2_1": float("nan")}},
              "m": {"cm": [[1, 2], [3, 4]]}, "n": np.int64(3)}
    flat = dict(M.flatten_metrics(nested))
    assert flat == {"ai/pooled/mae": 1.5, "ai/pooled/icc2_1": None, "m/cm/0/0": 1, "m/cm/0/1": 2,
                    "m/cm/1/0": 3, "m/cm/1/1": 4, "n": 3}
    assert type(flat["ai/pooled/mae"]) is float and type(flat["n"]) is int
    res = M.evaluate(_perfect_frame())
    p = tmp_path / "metrics.csv"
    M.write_metrics_csv(p, res)
    back = M.read_metrics_csv(p)
    assert back["ai/pooled/mae"] == pytest.approx(0.0, abs=1e-9)
    assert back["ihdi/pooled/accuracy"] == 1.0 and back["keypoints/layout"] == "ihdi12"
    assert len(back) == len(M.flatten_metrics(res))


def test_evaluate_accepts_side_local_error_columns_and_zero_for_undetected():
    """A predict script may number a side's error columns 0..P-1 and write grade 0 for an
    undetected side; both read the same as the documented form."""
    df = _perfect_frame()
    df.loc[0, "detected_right"] = False
    df.loc[0, ["pred_ai_right", "pred_ai_left"]] = np.nan
    df.loc[0, ["pred_ihdi_right"]] = 0
    df.loc[0, [f"err_px_right_{j}" for j in range(6, 12)]] = np.nan
    local = df.rename(columns={f"err_px_right_{j}": f"err_px_right_{j - 6}" for j in range(6, 12)})
    a, b = M.evaluate(df), M.evaluate(local)
    assert a == b
    assert a["ihdi"]["right"]["n_missing"] == 1 and a["ihdi"]["right"]["n_ungradable_pred"] == 0
    assert a["keypoints"]["px"]["per_keypoint"]["right_triradiate"]["n"] == 7
    assert M.error_index("ihdi12", "right", 0) == 6 and M.error_index("ihdi12", "right", 8) == 8
    with pytest.raises(ValueError):
        M.error_index("ihdi12", "left", 7)


# ------------------------------------------------------------------ bootstrap CI, roof-perpendicular error
def test_bootstrap_ci_is_seeded_brackets_the_mean_and_narrows_with_more_hips():
    rng = np.random.default_rng(1)
    small, large = rng.exponential(2.0, 30), rng.exponential(2.0, 600)
    lo, hi = M.bootstrap_ci(small)
    assert lo < small.mean() < hi
    assert (lo, hi) == M.bootstrap_ci(small)                       # seeded: the same interval again
    lo2, hi2 = M.bootstrap_ci(large)
    assert hi2 - lo2 < 0.5 * (hi - lo)                             # ~1/sqrt(n)
    # the percentile interval of the mean of a large sample ~ mean -/+ 1.96 SE
    se = large.std(ddof=1) / np.sqrt(len(large))
    assert abs((hi2 - lo2) / (2 * 1.96 * se) - 1) < 0.15
    assert all(math.isnan(v) for v in M.bootstrap_ci([1.0]))
    assert M.bootstrap_ci([2.0, 2.0, np.nan, 2.0]) == (2.0, 2.0)


def test_ai_metrics_carry_the_mae_ci():
    df = _perfect_frame()
    df["pred_ai_left"] = df["gt_ai_left"] + np.linspace(-3, 3, len(df))
    m = M.evaluate(df)["ai"]
    for side in ("left", "pooled"):
        assert m[side]["mae_ci_lo"] <= m[side]["mae"] <= m[side]["mae_ci_hi"]
    assert m["right"]["mae_ci_lo"] == m["right"]["mae_ci_hi"] == pytest.approx(0.0, abs=1e-9)


def test_roof_perpendicular_error_is_the_normal_component_only():
    df = _perfect_frame()
    lay = get_layout("ihdi12")
    roof = M.roof_points(lay, "left")
    assert roof == [0, 1, 2] and M.roof_points("mtddh8", "right") == [4, 5]
    assert np.allclose(M.roof_perpendicular_errors(df, "ihdi12"), 0.0)
    # move the left triradiate point 3 px along the GT roof line and 2 px across it
    e, t = lay.lateral_edge["left"], lay.triradiate["left"]
    v = np.stack([df[f"gt_x_{e}"] - df[f"gt_x_{t}"], df[f"gt_y_{e}"] - df[f"gt_y_{t}"]], 1)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    n = np.stack([-u[:, 1], u[:, 0]], 1)
    shift = 3 * u + 2 * n
    df[f"pred_x_{t}"] += shift[:, 0]
    df[f"pred_y_{t}"] += shift[:, 1]
    err = M.roof_perpendicular_errors(df, "ihdi12")
    assert len(err) == 2 * 3 * len(df)
    np.testing.assert_allclose(np.sort(err)[-len(df):], 2.0, atol=1e-9)
    assert np.count_nonzero(err > 1e-9) == len(df)
