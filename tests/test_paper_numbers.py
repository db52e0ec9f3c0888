"""An audit of the numbers a paper would paste: a small, fixed two-fold study of hand-built
predictions with known errors, whose metrics.json, k-fold paper tables and agreement.json are
recomputed here independently (counts, kappa over the stated hips, mean ± SD across folds).

The study (ihdi12, 256-px films, 4 films = 8 hips per fold; docs/outputs.md, "Which hips each number
counts"):

- fold 1: reference grades left I, II, III, IV and right II, I, IV, III. Film 0's right hip has its
  roof rotated by 12 deg (an AI error of exactly 12) and a detector confidence of 0.1, so the gate
  fails it (low_confidence, grade 0). Film 1's left hip has its metaphysis lifted above the H-line:
  predicted IV for a reference II (AI unchanged). Everything else is exact.
- fold 2: reference grades left IV, I, II, III and right III, IV, I, II. Film 0's left hip (IV) has
  its roof rotated by 12 deg and passes the gate; film 1's right hip (IV) is rotated by 12 deg too
  and fails it (low_confidence).

So by hand: AI MAE over all detected hips 12/8 = 1.5 and 24/8 = 3.0 (mean 2.25, SD 1.5/sqrt 2);
over the gradable hips 0/7 and 12/7; IHDI accuracy over all hips 6/8 and 7/8, over the gradable
ones 6/7 and 7/7; gradable 7 of 8 hips in each fold.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from datasets.layouts import get_layout
from tests.helpers import _side_points
from utils.config import AI_INTERVAL_MAX_WIDTH_DEG
from utils.evaluation import tables as T
from utils.evaluation.metrics import evaluate_predictions, prediction_row, read_predictions
from utils.hip_geometry import ihdi_grade

SIZE = 256
LAY = get_layout("ihdi12")
GRADES = {1: ([1, 2, 3, 4], [2, 1, 4, 3]), 2: ([4, 1, 2, 3], [3, 4, 1, 2])}
ROTATED = {1: [(0, "right")], 2: [(0, "left"), (1, "right")]}       # (film, side): roof rotated 12 deg
FAILED = {1: [(0, "right")], 2: [(1, "right")]}                     # detector confidence 0.1
LIFTED = {1: [(1, "left")], 2: []}                                  # metaphysis above the H-line


def _rotate_roof(pts, side, deg):
    e, t = LAY.lateral_edge[side], LAY.triradiate[side]
    a = math.radians(deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts[e] = pts[t] + rot @ (pts[e] - pts[t])


def _lift_metaphysis(pts, side):
    idx = [j for j, n in zip(LAY.side_indices[side], LAY.side_point_names(side)) if n.startswith("metaphysis")]
    hy = pts[LAY.triradiate[side]][1]
    pts[idx, 1] -= (pts[idx, 1].max() - hy) + 0.03 * SIZE       # every metaphysis point above the H-line


def fold_frame(fold: int) -> pd.DataFrame:
    rng = np.random.default_rng(fold)
    rows = []
    for i, (gl, gr) in enumerate(zip(*GRADES[fold])):
        gt = np.concatenate([_side_points(rng, "left", gl, SIZE, "ihdi12"), _side_points(rng, "right", gr, SIZE,
                                                                                          "ihdi12")])
        pred = gt.copy()
        for film, side in ROTATED[fold]:
            if film == i:
                _rotate_roof(pred, side, 12.0 if side == "left" else -12.0)
        for film, side in LIFTED[fold]:
            if film == i:
                _lift_metaphysis(pred, side)
        conf = {s: 0.1 if (i, s) in FAILED[fold] else 0.9 for s in ("left", "right")}
        boxes = {s: (*gt[LAY.side_slice(s)].min(0) - 10, *gt[LAY.side_slice(s)].max(0) + 10) for s in ("left", "right")}
        rows.append(prediction_row(f"f{fold}_{i}", pred, "ihdi12", gt_kps=gt, image_width=SIZE, det_conf=conf,
                                   pred_boxes=boxes, gt_boxes=boxes, pixel_spacing_mm=0.2,
                                   crop_sides={"left": 90.0, "right": 90.0},
                                   ai_interval={"left": (0.0, 60.0), "right": (10.0, 20.0)}))
    return pd.DataFrame(rows)


def hips(df, name, kind=None):
    """Both sides' values of a column, left then right (the metrics' pooled order)."""
    pre = f"{kind}_" if kind else ""
    return np.concatenate([df[f"{pre}{name}_{s}"].to_numpy() for s in ("left", "right")])


def worst(g):
    return np.where(np.asarray(g) <= 2, 4, 1)


def expected(df):
    """Every audited number, recomputed from the predictions' cells without the metrics code."""
    pa, ga = hips(df, "ai", "pred").astype(float), hips(df, "ai", "gt").astype(float)
    gt_g = hips(df, "ihdi", "gt").astype(int)
    qc = np.array([bool(str(c).strip()) and str(c) != "nan" for c in hips(df, "qc")])
    # the reference grade of each prediction from the public geometry API, not from the row
    pts = df[[c for j in range(LAY.num_points) for c in (f"pred_x_{j}", f"pred_y_{j}")]].to_numpy()
    pg = np.array([ihdi_grade(p.reshape(-1, 2), "ihdi12") for p in pts])          # (films, 2)
    pred_g = np.concatenate([pg[:, 0], pg[:, 1]])
    pred_all = np.where(qc, worst(gt_g), pred_g)
    ok = ~qc
    return {
        "ai_mae": np.mean(np.abs(pa - ga)), "ai_n": len(pa),
        "ai_gradable_mae": np.mean(np.abs(pa - ga)[ok]), "ai_gradable_n": int(ok.sum()),
        "acc": np.mean((pred_g == gt_g) & ok), "n": len(gt_g), "n_failed": int(qc.sum()),
        "kappa": cohen_kappa_score(gt_g, pred_all, weights="quadratic", labels=[1, 2, 3, 4]),
        "acc_gradable": np.mean(pred_g[ok] == gt_g[ok]),
        "kappa_gradable": cohen_kappa_score(gt_g[ok], pred_g[ok], weights="quadratic", labels=[1, 2, 3, 4]),
        "gradable_rate": ok.mean(),
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    import utils.pipelines.kfold_predict as KP
    out = tmp_path_factory.mktemp("study")
    frames = {}
    for f in (1, 2):
        df = fold_frame(f)
        (out / f"fold{f}").mkdir()
        df.to_csv(out / f"fold{f}" / "predictions.csv", index=False)
        frames[f] = read_predictions(out / f"fold{f}" / "predictions.csv")       # as the summary reads them
        (out / f"fold{f}" / "metrics.json").write_text(json.dumps(evaluate_predictions(frames[f])))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(KP, "plot_all", lambda *a, **k: None)     # the plots are not audited here (and slow)
        KP.summarize_folds(out, 2)
    return out, frames


def test_the_study_is_what_the_docstring_says(study):
    _, frames = study
    for f, (gl, gr) in GRADES.items():
        df = frames[f]
        assert list(df["gt_ihdi_left"]) == gl and list(df["gt_ihdi_right"]) == gr
        e = np.abs(hips(df, "ai", "pred") - hips(df, "ai", "gt"))
        assert sorted(np.round(e, 9))[-len(ROTATED[f]):] == [12.0] * len(ROTATED[f])
        assert np.sum(e > 1e-9) == len(ROTATED[f])
        assert (hips(df, "qc") == "low_confidence").sum() == 1
    assert frames[1].at[1, "pred_ihdi_left"] == 4 and frames[1].at[1, "gt_ihdi_left"] == 2


@pytest.mark.parametrize("fold, ai_mae, ai_gradable, acc, acc_gradable",
                         [(1, 1.5, 0.0, 6 / 8, 6 / 7), (2, 3.0, 12 / 7, 7 / 8, 1.0)])
def test_metrics_json_by_hand(study, fold, ai_mae, ai_gradable, acc, acc_gradable):
    out, frames = study
    m = json.loads((out / f"fold{fold}" / "metrics.json").read_text())
    ex = expected(frames[fold])
    # the hand values, and the independent recomputation, agree with metrics.json
    assert ex["ai_mae"] == pytest.approx(ai_mae) and m["ai"]["pooled"]["mae"] == pytest.approx(ai_mae)
    assert m["ai"]["pooled"]["n"] == 8 and m["ai_gradable"]["pooled"]["n"] == 7
    assert m["ai_gradable"]["pooled"]["mae"] == pytest.approx(ai_gradable, abs=1e-9)
    ih, ig = m["ihdi"]["pooled"], m["ihdi_gradable"]["pooled"]
    assert ih["accuracy"] == pytest.approx(acc) == pytest.approx(ex["acc"])
    assert ih["n"] == 8 and ih["n_graded"] == 7 and ih["n_failed_as_error"] == 1
    assert ig["accuracy"] == pytest.approx(acc_gradable) == pytest.approx(ex["acc_gradable"]) and ig["n"] == 7
    assert ih["kappa_quadratic"] == pytest.approx(ex["kappa"])
    assert ig["kappa_quadratic"] == pytest.approx(ex["kappa_gradable"])
    assert ih["kappa_quadratic"] < ig["kappa_quadratic"]          # a failed hip costs the all-hips kappa
    g = m["gate"]["pooled"]
    assert (g["n_hips"], g["n_gradable"], g["reasons"]["low_confidence"]) == (8, 7, 1)
    assert m["detection"]["pooled"]["recall"] == 1.0 and m["detection"]["pooled"]["n"] == 8
    # the interval: left hips (0, 60) cover every reference, right hips (10, 20) only those inside
    gt_ai = hips(frames[fold], "ai", "gt")
    cover = np.concatenate([np.ones(4, bool), (gt_ai[4:] >= 10) & (gt_ai[4:] <= 20)])
    assert m["ai_interval"]["pooled"]["coverage"] == pytest.approx(cover.mean())
    assert m["ai_interval"]["pooled"]["mean_width"] == pytest.approx(35.0)
    assert m["ai_interval"]["pooled"]["informative"] is False           # 35 deg > 30: no success
    assert m["ai_interval"]["right"]["informative"] is True and m["ai_interval"]["left"]["informative"] is False


def _md(path):
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and not set(line) <= set("|:- ") and not cells[0].startswith("**"):
            rows[cells[0]] = cells[1:]
    return rows


def test_paper_table_is_mean_sd_of_fold_estimates_with_a_pooled_column(study):
    out, frames = study
    folds = [json.loads((out / f"fold{f}" / "metrics.json").read_text()) for f in (1, 2)]
    rows = _md(out / "kfold_summary.md")
    header = rows.pop("Metric")
    assert header == ["Left hip", "Right hip", "Both hips", T.POOLED_COLUMN]

    def ms(values, scale, nd):
        return T.format_mean_sd(np.mean(values) * scale, np.std(values, ddof=1) * scale, nd)

    # by hand: AI MAE 1.5 and 3.0 -> 2.25 ± 1.06
    assert rows["AI MAE (°)"][2] == "2.25 ± 1.06"
    assert rows["AI MAE, gradable hips (°)"][2] == ms([0.0, 12 / 7], 1, 2) == "0.86 ± 1.21"
    assert rows["IHDI accuracy (%)"][2] == ms([6 / 8, 7 / 8], 100, 1)
    assert rows["IHDI accuracy, gradable hips (%)"][2] == ms([6 / 7, 1.0], 100, 1)
    ex = [expected(frames[f]) for f in (1, 2)]
    assert rows["IHDI quadratic κ"][2] == ms([e["kappa"] for e in ex], 1, 3)
    assert rows["IHDI quadratic κ, gradable hips"][2] == ms([e["kappa_gradable"] for e in ex], 1, 3)
    assert rows["IHDI quadratic κ"] != rows["IHDI quadratic κ, gradable hips"]
    assert rows["Gradable hips (%)"][2] == "87.5 ± 0.0"
    assert rows["Detection recall (%)"][2] == "100.0 ± 0.0"
    for side, col in (("left", 0), ("right", 1)):
        assert rows["AI MAE (°)"][col] == ms([f["ai"][side]["mae"] for f in folds], 1, 2)
    # the pooled column: every hip of both folds together, the AI MAE with its bootstrap CI
    both = pd.concat([frames[1], frames[2]], ignore_index=True)
    pooled = expected(both)
    oof = json.loads((out / "oof_metrics.json").read_text())
    lo, hi = oof["ai"]["pooled"]["mae_ci_lo"], oof["ai"]["pooled"]["mae_ci_hi"]
    assert lo <= pooled["ai_mae"] <= hi and hi > lo
    assert rows["AI MAE (°)"][3] == f"{pooled['ai_mae']:.2f} [{lo:.2f}–{hi:.2f}]"
    assert pooled["ai_mae"] == pytest.approx(2.25)
    assert rows["IHDI quadratic κ"][3] == f"{pooled['kappa']:.3f}"
    assert rows["IHDI accuracy (%)"][3] == f"{pooled['acc'] * 100:.1f}"
    # compact: the rows a paper reports; no averaged confidence bounds anywhere
    assert len(rows) <= 13 and "NME, crop diagonal (%)" not in rows
    full = _md(out / "kfold_summary_full.md")
    assert "NME, crop diagonal (%)" in full and "Screening sensitivity (%)" in full
    assert not any("CI" in k for k in list(rows) + list(full))
    csv = pd.read_csv(out / "kfold_summary.csv", index_col="metric")
    assert not any(k.endswith(("_ci_lo", "_ci_hi")) for k in csv.index)
    assert csv.at["ihdi/pooled/n", "mean"] == 8 and csv.at["ihdi_gradable/pooled/n", "mean"] == 7
    # an interval of mean width 35 deg (> the threshold) is no coverage success, in either table
    assert full["AI 95% interval coverage (%)"][2] == T.UNINFORMATIVE
    assert full["AI 95% interval coverage (%)"][1] != T.UNINFORMATIVE        # the right hips' 10 deg


def test_agreement_json_over_the_hips_both_sources_graded(study, tmp_path):
    """compare_annotations.py: the reference (a perfect predictions file) against fold 1's."""
    from utils.pipelines.compare import run_compare
    out, frames = study
    ref = frames[1].copy()
    for j in range(LAY.num_points):
        for a in "xy":
            ref[f"pred_{a}_{j}"] = ref[f"gt_{a}_{j}"]
    for s in ("left", "right"):
        ref[f"qc_{s}"] = ""
        ref[f"pred_ihdi_{s}"] = ref[f"gt_ihdi_{s}"]
    ref.to_csv(tmp_path / "ref.csv", index=False)
    res = run_compare(tmp_path / "ref.csv", out / "fold1" / "predictions.csv", tmp_path / "cmp", overlays=False,
                      n_resamples=50)
    saved = json.loads((tmp_path / "cmp" / "agreement.json").read_text())
    ex = expected(frames[1])
    assert saved["ai"]["n"] == 8 and saved["ai"]["mae"] == pytest.approx(1.5)
    assert saved["ai_gradable"]["n"] == 7 and saved["ai_gradable"]["mae"] == pytest.approx(0.0, abs=1e-9)
    ih = saved["ihdi"]
    assert ih["n"] == 7 and ih["n_ungradable_b"] == 1 and ih["n_ungradable_a"] == 0
    assert ih["ungradable_reasons"]["b"] == {"low_confidence": 1}
    assert ih["accuracy"] == pytest.approx(6 / 7) and ih["kappa_quadratic"] == pytest.approx(ex["kappa_gradable"])
    assert res["ihdi"]["kappa_quadratic"] == ih["kappa_quadratic"]


def test_headline_and_overlay_call_a_wide_interval_uninformative():
    from utils.evaluation.overlays import hip_labels
    df = fold_frame(1)
    head = dict(T.headline_rows(evaluate_predictions(df)))
    assert head["AI 95% interval coverage"].startswith(T.UNINFORMATIVE)
    narrow = df.assign(pred_ai_left_lo=10.0, pred_ai_left_hi=20.0)
    assert not dict(T.headline_rows(evaluate_predictions(narrow)))["AI 95% interval coverage"].startswith(
        T.UNINFORMATIVE)
    f = {s: {"ai_deg": 11.0, "grade": 1} for s in ("left", "right")}
    text = hip_labels(f, ai_interval={"left": (4.0, 176.1), "right": (9.0, 13.0)})
    assert text["left"][0][0] == "L: AI 11.0 deg (interval uninformative)"
    assert text["right"][0][0] == "R: AI 11.0 deg (9.0-13.0)"
    assert 4.0 + AI_INTERVAL_MAX_WIDTH_DEG < 176.1


def test_no_detector_no_detection_recall():
    """A run without a detection stage (the full-image model: points, no boxes) reports no recall."""
    df = fold_frame(1)
    for s in ("left", "right"):
        for c in ("x1", "y1", "x2", "y2"):
            df[f"pred_box_{s}_{c}"] = np.nan
    m = evaluate_predictions(df)
    assert "detection" not in m
    assert not any("Detection recall" in label for label, _ in T.headline_rows(m))
    assert "detection" in evaluate_predictions(fold_frame(1))
