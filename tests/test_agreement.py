"""utils.evaluation.agreement and compare_annotations.py: statistics against scipy/sklearn and known
geometry, a phantom copy with known Gaussian jitter, a predictions.csv as source B, bad input."""
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from datasets.formats import read_annotation, write_annotation
from datasets.synthetic import generate_dataset
from utils.evaluation import agreement as A
from utils.evaluation import metrics as M

SIGMA = 1.5
N_IMAGES = 30


def user_error(main, argv, capsys, *needles) -> str:
    """``main(argv)`` exits 2 with one ``error:`` line (the last on stderr) containing ``needles``."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error:") and "Traceback" not in "\n".join(err)
    assert sum(l.startswith("error:") for l in err) == 1
    for n in needles:
        assert n in err[-1], err[-1]
    return err[-1]


def jitter_copy(src: Path, dst: Path, sigma: float, seed: int = 1) -> Path:
    """A copy of a dataset whose keypoints carry N(0, sigma^2) noise on each axis."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    for p in sorted((dst / "annotations").glob("*.csv")):
        k = read_annotation(p)
        write_annotation(p, k + rng.normal(0.0, sigma, k.shape))
    return dst


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agree")
    a = generate_dataset(tmp / "a", N_IMAGES, seed=5, size=256, progress=False)
    b = jitter_copy(a, tmp / "b", SIGMA)
    return tmp, a, b


# ------------------------------------------------------------------ paired test choice
@pytest.mark.parametrize("dist", ["normal", "exponential", "uniform", "laplace", "lognormal"])
@pytest.mark.parametrize("seed", range(4))
def test_chosen_test_follows_normality_p(dist, seed):
    rng = np.random.default_rng(seed)
    n = 40
    a = rng.normal(25, 5, n)
    noise = {"normal": rng.normal(0.3, 1, n), "exponential": rng.exponential(1.5, n) - 0.5,
             "uniform": rng.uniform(-1, 2, n), "laplace": rng.laplace(0.2, 1, n),
             "lognormal": rng.lognormal(0, 1.2, n) - 1}[dist]
    b = a + noise
    r = A.paired_test(a, b)
    sw = stats.shapiro(b - a)
    assert r["normality"]["p"] == pytest.approx(sw.pvalue)
    assert r["normality"]["statistic"] == pytest.approx(sw.statistic)
    if sw.pvalue > 0.05:
        ref = stats.ttest_rel(b, a)
        assert r["test"]["name"] == "paired_t"
    else:
        ref = stats.wilcoxon(b, a)
        assert r["test"]["name"] == "wilcoxon"
    assert r["test"]["p"] == pytest.approx(ref.pvalue)
    assert r["test"]["statistic"] == pytest.approx(ref.statistic)


def test_both_branches_are_taken_and_alpha_moves_the_choice():
    rng = np.random.default_rng(0)
    a = rng.normal(20, 4, 200)
    quantiles = stats.norm.ppf((np.arange(200) + 0.5) / 200)        # normal differences by construction
    normal = A.paired_test(a, a + rng.permutation(quantiles))
    skewed = A.paired_test(a, a + rng.exponential(2, 200))
    assert normal["normality"]["p"] > 0.05 and normal["test"]["name"] == "paired_t"
    assert skewed["normality"]["p"] < 1e-4 and skewed["test"]["name"] == "wilcoxon"
    assert skewed["test"]["p"] < 1e-10                            # b is shifted up by 2 on average
    strict = A.paired_test(a, a + rng.permutation(quantiles), alpha=1.0)   # p is never > 1: always Wilcoxon
    assert strict["test"]["name"] == "wilcoxon"


def test_degenerate_paired_data_gives_no_test():
    r = A.paired_test([1, 2, 3, 4], [2, 3, 4, 5])                # every difference equals 1
    assert r["test"]["name"] is None and math.isnan(r["test"]["p"]) and "equal" in r["test"]["note"]
    r = A.paired_test([1, 2], [1.5, 2.2])
    assert r["test"]["name"] is None and "fewer than 3" in r["test"]["note"]
    r = A.paired_test([1, np.nan, 3, 4, 6], [1.1, 2, np.nan, 4.5, 6.2])
    assert r["test"]["n"] == 3 and r["test"]["n_missing"] == 2


# ------------------------------------------------------------------ ICC and kappa with CIs
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def test_icc_point_estimates_and_ci_brackets():
    r2 = A.icc_with_ci(SHROUT_FLEISS, "2,1")
    r3 = A.icc_with_ci(SHROUT_FLEISS, "3,1")
    assert r2["icc"] == pytest.approx(0.29, abs=0.005)            # Shrout & Fleiss (1979), Table 4
    assert r3["icc"] == pytest.approx(0.71, abs=0.005)
    assert r2["icc"] == M.icc(SHROUT_FLEISS, "2,1") and r3["icc"] == M.icc(SHROUT_FLEISS, "3,1")
    for r in (r2, r3):
        assert -1 < r["ci_low"] < r["icc"] < r["ci_high"] <= 1
    # ICC(3,1)'s interval is the F test's: its lower end is 0 exactly when F = BMS/EMS equals the critical F
    x = SHROUT_FLEISS.astype(float)
    ms = A._mean_squares(x)
    f_obs = ms["bms"] / ms["ems"]
    fl = f_obs / stats.f.ppf(0.975, 5, 15)
    assert r3["ci_low"] == pytest.approx((fl - 1) / (fl + 3))


@pytest.mark.parametrize("kind", ["2,1", "3,1"])
def test_icc_ci_covers_the_true_icc_about_95_percent(kind):
    rng = np.random.default_rng(42)
    var_t, var_r, var_e, n, k = 4.0, 0.5, 1.0, 30, 2
    true = var_t / (var_t + var_e) if kind == "3,1" else var_t / (var_t + var_r + var_e)
    hits, widths = 0, []
    sims = 400
    for _ in range(sims):
        x = (rng.normal(0, math.sqrt(var_t), (n, 1)) + rng.normal(0, math.sqrt(var_r), (1, k))
             + rng.normal(0, math.sqrt(var_e), (n, k)))
        r = A.icc_with_ci(x, kind)
        hits += r["ci_low"] <= true <= r["ci_high"]
        widths.append(r["ci_high"] - r["ci_low"])
    assert 0.90 <= hits / sims <= 0.99, hits / sims
    assert 0.1 < np.mean(widths) < 0.6


def test_kappa_with_ci():
    rng = np.random.default_rng(3)
    a = rng.choice([1, 2, 3, 4], 120, p=[0.5, 0.25, 0.15, 0.1])
    b = np.where(rng.random(120) < 0.8, a, np.clip(a + rng.choice([-1, 1], 120), 1, 4))
    r = A.kappa_with_ci(a, b, n_resamples=500, seed=1)
    assert r["kappa"] == pytest.approx(cohen_kappa_score(a, b, weights="quadratic", labels=[1, 2, 3, 4]))
    assert r["ci_low"] < r["kappa"] < r["ci_high"] and r["ci_high"] - r["ci_low"] < 0.3
    assert A.kappa_with_ci(a, b, n_resamples=500, seed=1) == r                  # seeded: reproducible
    noisy = A.kappa_with_ci(a, rng.permutation(b), n_resamples=500, seed=1)
    assert noisy["ci_high"] < r["ci_low"]                       # shuffled pairs: much lower agreement
    g = np.array([0, 1, 2, 3, 4, np.nan])
    assert A.kappa_with_ci(g, g, n_resamples=200)["n"] == 4     # grade 0 (ungradable) and NaN left out


# ------------------------------------------------------------------ keypoint distances
def test_keypoint_distances_known_geometry():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 500, (5, 8, 2))
    b = a + [3.0, 4.0]                                            # every point 5 px away
    b[2, 6] = np.nan
    sp = np.array([0.5, np.nan, 0.5, 0.2, 0.0])
    r = A.keypoint_distances(a, b, "mtddh8", sp)
    assert r["mean_px"] == pytest.approx(5.0) and r["sd_px"] == pytest.approx(0.0, abs=1e-9)
    assert r["n_points"] == 39 and r["n_points_missing"] == 1
    assert r["n_images_mm"] == 3
    np.testing.assert_allclose(r["per_image_px"], 5.0)
    np.testing.assert_allclose(r["per_image_mm"], [2.5, np.nan, 2.5, 1.0, np.nan])
    assert r["per_keypoint"]["right_head_centre"]["n"] == 4
    assert r["per_point"]["head_centre"]["n"] == 9
    assert r["mean_mm"] == pytest.approx((8 * 2.5 + 7 * 2.5 + 8 * 1.0) / 23)


def test_mean_radial_distance_of_gaussian_jitter_is_sigma_sqrt_pi_over_2():
    rng = np.random.default_rng(7)
    a = rng.uniform(0, 500, (2000, 12, 2))
    r = A.keypoint_distances(a, a + rng.normal(0, 2.0, a.shape), "ihdi12")
    assert r["mean_px"] == pytest.approx(2.0 * math.sqrt(math.pi / 2), rel=0.01)   # Rayleigh mean
    assert r["median_px"] == pytest.approx(2.0 * math.sqrt(2 * math.log(2)), rel=0.01)


# ------------------------------------------------------------------ the comparison, end to end
REQUIRED = ["n_images", "keypoints.mean_px", "ai.mae", "ai.icc21", "ai.icc31", "ai.test.name", "ai.test.p",
            "ai.normality.p", "ihdi.accuracy", "ihdi.kappa_quadratic"]


def _get(d, dotted):
    for k in dotted.split("."):
        d = d[k]
    return d


def test_phantom_with_known_jitter(phantoms, tmp_path):
    from compare_annotations import main
    _, a, b = phantoms
    out = tmp_path / "cmp"
    main(["--dataset_a", str(a), "--dataset_b", str(b), "--output_dir", str(out), "--label_a", "Reader 1",
          "--label_b", "Reader 2", "--max_overlays", "3", "--n_bootstrap", "300"])
    res = json.loads((out / "agreement.json").read_text())
    for key in REQUIRED:
        assert _get(res, key) is not None, key
    assert res["n_images"] == N_IMAGES and res["n_only_a"] == res["n_only_b"] == 0
    n_pts = N_IMAGES * 12
    se = SIGMA * math.sqrt(2 - math.pi / 2) / math.sqrt(n_pts)
    assert abs(res["keypoints"]["mean_px"] - SIGMA * math.sqrt(math.pi / 2)) < 4 * se
    assert res["keypoints"]["sd_px"] == pytest.approx(SIGMA * math.sqrt(2 - math.pi / 2), rel=0.15)
    meta = {r["stem"]: float(r["pixel_spacing_mm"]) for r in csv.DictReader(open(a / "metadata.csv"))}
    assert res["keypoints"]["n_images_mm"] == N_IMAGES
    assert res["keypoints"]["mean_mm"] == pytest.approx(res["keypoints"]["mean_px"] * np.mean(list(meta.values())),
                                                        rel=0.1)
    ai = res["ai"]
    assert (ai["test"]["name"] == "paired_t") == (ai["normality"]["p"] > 0.05)
    assert ai["icc21_ci"][0] < ai["icc21"] < ai["icc21_ci"][1]
    assert ai["bland_altman"]["bias"] == pytest.approx(ai["mean_diff"])
    # the per-image table holds the AI of both sources; its differences give the same numbers
    import pandas as pd
    df = pd.read_csv(out / "per_image.csv", dtype={"stem": str})
    d = np.concatenate([df[f"ai_b_{s}"] - df[f"ai_a_{s}"] for s in ("left", "right")])
    assert np.mean(np.abs(d)) == pytest.approx(ai["mae"], abs=1e-3)
    truth = {r["stem"]: float(r["ai_left"]) for r in csv.DictReader(open(a / "metadata.csv"))}
    assert np.allclose([truth[s] for s in df["stem"]], df["ai_a_left"], atol=1e-3)
    for p in ("ai_scatter", "ai_bland_altman", "ai_diff_hist", "px_vs_angle", "image_distances", "ihdi_confusion"):
        assert (out / "plots" / f"{p}.png").stat().st_size > 5000
        assert f"plots/{p}.png" in (out / "agreement.md").read_text()
    overlays = sorted(out.glob("overlays/*/*_compare.png"))
    assert len(overlays) == 3 and res["n_overlays"] == 3
    for o in overlays:                                   # sorted into the bin of the image's distance
        row = df[df["stem"] == o.name[:-len("_compare.png")]].iloc[0]
        assert o.parent.name == row["overlay_bin"]
        lo, hi = [float(x) for x in o.parent.name.replace("+", "-inf").split("-")]
        assert lo <= row["mean_px"] < hi


def test_identical_sources_agree_perfectly(phantoms, tmp_path):
    from utils.pipelines.compare import run_compare
    _, a, _ = phantoms
    res = run_compare(a, a, tmp_path / "same", overlays=False, n_resamples=100)
    assert res["keypoints"]["mean_px"] == 0 and res["ai"]["mae"] == 0
    assert res["ai"]["icc21"] == pytest.approx(1.0) and res["ihdi"]["accuracy"] == 1.0
    assert res["ai"]["test"]["name"] is None                         # no test on all-zero differences


def _write_predictions_csv(path, ds: Path, jittered: Path, drop=(), undetected=None):
    """A predictions.csv made by the real writer's columns (``utils.pipelines.predict.output_columns``)."""
    from datasets.formats import load_dataset
    from utils.evaluation.metrics import prediction_row
    from utils.pipelines.predict import output_columns
    gt = {r.stem: r for r in load_dataset(ds, require_annotations=True)}
    pred = {r.stem: r for r in load_dataset(jittered, require_annotations=True)}
    lay = "ihdi12"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=output_columns(lay, True), extrasaction="ignore")
        w.writeheader()
        for stem in sorted(gt):
            if stem in drop:
                continue
            k = pred[stem].keypoints.copy()
            if stem == undetected:
                k[6:] = np.nan
            row = prediction_row(stem, k, lay, gt_kps=gt[stem].keypoints, pixel_spacing_mm=gt[stem].pixel_spacing_mm)
            row.update(image=str(gt[stem].image_path), width=0, height=0, status="ok")
            w.writerow(row)
    return path


def test_predictions_csv_as_source_b(phantoms, tmp_path):
    from utils.pipelines.compare import run_compare
    tmp, a, b = phantoms
    stems = sorted(p.stem for p in (a / "annotations").glob("*.csv"))
    pcsv = _write_predictions_csv(tmp_path / "predictions.csv", a, b, drop=(stems[0],), undetected=stems[1])
    res = run_compare(a, pcsv, tmp_path / "vs_model", label_b="Model", max_overlays=2, n_resamples=100)
    assert res["n_images"] == N_IMAGES - 1 and res["matching"]["only_a"] == [stems[0]]
    assert res["keypoints"]["n_points_missing"] == 6                     # the undetected right hip
    assert res["ai"]["n_missing"] == 2                                   # no H-line: neither hip measured
    # the same jittered points give the same distances whichever way they come in
    d = [float(np.hypot(*(read_annotation(b / "annotations" / f"{s}.csv")[0]
                          - read_annotation(a / "annotations" / f"{s}.csv")[0]))) for s in stems[1:]]
    assert res["keypoints"]["per_keypoint"]["left_lateral_edge"]["mean_px"] == pytest.approx(np.mean(d), abs=1e-6)
    assert res["keypoints"]["n_images_mm"] == N_IMAGES - 1               # spacing from the predictions file
    assert len(list((tmp_path / "vs_model").glob("overlays/*/*.png"))) == 2


def test_only_in_one_source_and_bad_point_count_are_listed(phantoms, tmp_path):
    from utils.pipelines.compare import run_compare
    _, a, b = phantoms
    b2 = tmp_path / "b2"
    shutil.copytree(b, b2)
    stems = sorted(p.stem for p in (a / "annotations").glob("*.csv"))
    (b2 / "images" / f"{stems[0]}.png").unlink()
    (b2 / "annotations" / f"{stems[0]}.csv").unlink()
    (b2 / "annotations" / f"{stems[1]}.csv").write_text('"(1,2)","(3,4)","(5,6)"\n')     # 3 points
    res = run_compare(a, b2, tmp_path / "o", overlays=False, n_resamples=100)
    assert res["n_images"] == N_IMAGES - 2
    assert res["matching"]["only_a"] == [stems[0], stems[1]]
    assert any(stems[1] in s["item"] and "3 keypoint pairs" in s["problem"] for s in res["skipped"])
    md = (tmp_path / "o" / "agreement.md").read_text()
    assert f"only in Dataset A (2): {stems[0]}, {stems[1]}" in md


def test_bad_input_exits_2(phantoms, tmp_path, capsys):
    from compare_annotations import main
    tmp, a, _ = phantoms
    other = generate_dataset(tmp_path / "other", 3, seed=9, size=128, progress=False)
    for p in other.rglob("synth_*"):
        p.rename(p.with_name("x" + p.name))
    user_error(main, ["--dataset_a", a, "--dataset_b", other, "--output_dir", tmp_path / "o"], capsys,
               "no overlapping images")
    user_error(main, ["--dataset_a", a, "--dataset_b", tmp_path / "nope", "--output_dir", tmp_path / "o"], capsys,
               "not found")
    m8 = generate_dataset(tmp_path / "m8", 3, seed=5, size=128, layout="mtddh8", progress=False)
    user_error(main, ["--dataset_a", a, "--dataset_b", m8, "--output_dir", tmp_path / "o"], capsys,
               "same number of points", "12 vs 8")
    (tmp_path / "x.txt").write_text("hi")
    user_error(main, ["--dataset_a", a, "--dataset_b", tmp_path / "x.txt", "--output_dir", tmp_path / "o"], capsys,
               "neither a dataset folder nor a predictions .csv")


# ------------------------------------------------------------------ two experiments: paired AI errors
def test_paired_ai_error_test_matches_by_stem_and_side():
    rng = np.random.default_rng(11)
    stems = [f"s{i:03d}" for i in range(60)]
    ea = {(s, side): abs(rng.normal(0, 3)) for s in stems for side in ("left", "right")}
    eb = {k: v + abs(rng.normal(1.0, 0.5)) for k, v in ea.items()}          # B is worse on every hip
    eb[("extra", "left")] = 0.0
    del eb[(stems[0], "right")]
    eb[(stems[1], "left")] = float("nan")                                   # not detected in B
    r = A.paired_ai_error_test(ea, eb)
    assert r["n_pairs"] == 118 and r["n_only_a"] == 1 and r["n_only_b"] == 1 and r["n_missing"] == 1
    assert r["mean_diff"] > 0.5 and r["better"] == "a" and r["test"]["p"] < 1e-6
    assert (r["test"]["name"] == "paired_t") == (r["normality"]["p"] > 0.05)
    flipped = A.paired_ai_error_test(eb, ea)
    assert flipped["better"] == "b" and flipped["test"]["p"] == pytest.approx(r["test"]["p"])
    # order of the keys does not matter: a shuffled mapping gives the same result
    keys = list(eb)
    rng.shuffle(keys)
    assert A.paired_ai_error_test(ea, {k: eb[k] for k in keys})["test"] == r["test"]
    same = A.paired_ai_error_test(ea, ea)
    assert same["better"] is None and same["test"]["name"] is None
    with pytest.raises(ValueError):
        A.paired_ai_error_test({("s", "middle"): 1.0}, ea)


def test_paired_ai_error_test_on_predictions_dataframes():
    import pandas as pd
    from utils.evaluation.metrics import prediction_row
    rng = np.random.default_rng(2)
    gt_rows, rows_a, rows_b = [], [], []
    base = np.array([[100, 100], [130, 95], [160, 110], [110, 150], [125, 148], [140, 146],
                     [240, 110], [270, 95], [300, 100], [260, 146], [275, 148], [290, 150]], float)
    for i in range(40):
        gt = base + rng.normal(0, 2, base.shape)
        rows_a.append(prediction_row(f"im{i}", gt + rng.normal(0, 1.0, gt.shape), "ihdi12", gt_kps=gt))
        rows_b.append(prediction_row(f"im{i}", gt + rng.normal(0, 4.0, gt.shape), "ihdi12", gt_kps=gt))
    da, db = pd.DataFrame(rows_a), pd.DataFrame(rows_b)
    r = A.paired_ai_error_test(da, db)
    errs_a = A.hip_ai_errors(da)
    assert errs_a[("im3", "left")] == pytest.approx(abs(da.loc[3, "pred_ai_left"] - da.loc[3, "gt_ai_left"]))
    assert r["n_pairs"] == 80 and r["better"] == "a" and r["mae_b"] > r["mae_a"]
    db.loc[0, "detected_left"] = False
    assert A.paired_ai_error_test(da, db)["n_missing"] == 1


def test_compare_honours_each_sources_gate(phantoms, tmp_path):
    """A hip that the predictions file's gate failed (qc reasons, grade 0) is graded nothing: it is
    counted as ungradable in that source, left out of the IHDI agreement, and the kappa equals the
    one predict reports over the gradable hips."""
    import pandas as pd
    from utils.pipelines.compare import run_compare
    tmp, a, b = phantoms
    pcsv = _write_predictions_csv(tmp_path / "predictions.csv", a, b)
    df = M.read_predictions(pcsv)
    for s in ("left", "right"):
        df[f"qc_{s}"] = df[f"qc_{s}"].fillna("").astype(object)
    failed = sorted(df["stem"])[:5]
    sel = df["stem"].isin(failed)
    df.loc[sel, "qc_right"] = "ai_out_of_range"
    df.loc[sel, "pred_ihdi_right"] = 0
    df.loc[df["stem"] == failed[0], "qc_left"] = "h_line_tilt;ai_out_of_range"
    df.loc[df["stem"] == failed[0], "pred_ihdi_left"] = 0
    df.to_csv(pcsv, index=False)
    res = run_compare(a, pcsv, tmp_path / "gated", label_b="Model", overlays=False, n_resamples=50)
    ih = res["ihdi"]
    assert ih["n_ungradable_b"] == 6 and ih["n_ungradable_a"] == 0 and ih["n_ungradable"] == 6
    assert ih["n"] == 2 * N_IMAGES - 6
    assert ih["ungradable_reasons"]["b"] == {"ai_out_of_range": 6, "h_line_tilt": 1}
    per = pd.read_csv(tmp_path / "gated" / "per_image.csv", dtype={"stem": str}).set_index("stem")
    assert (per.loc[failed, "ihdi_b_right"] == 0).all() and per.loc[failed[0], "ihdi_b_left"] == 0
    assert (per.loc[failed, "qc_b_right"] == "ai_out_of_range").all()
    # kappa by hand over the hips both graded
    ga = np.concatenate([per[f"ihdi_a_{s}"] for s in ("left", "right")])
    gb = np.concatenate([per[f"ihdi_b_{s}"] for s in ("left", "right")])
    keep = gb != 0
    assert keep.sum() == ih["n"]
    assert ih["kappa_quadratic"] == pytest.approx(cohen_kappa_score(ga[keep].astype(int), gb[keep].astype(int),
                                                                    weights="quadratic", labels=[1, 2, 3, 4]))
    # the same number as predict's gradable-hips kappa on the same file (A's grades are its gt grades)
    m = M.evaluate_predictions(df)
    assert m["ihdi_gradable"]["pooled"]["kappa_quadratic"] == pytest.approx(ih["kappa_quadratic"])
    assert m["ihdi_gradable"]["pooled"]["n"] == ih["n"]
    md = (tmp_path / "gated" / "agreement.md").read_text()
    assert "Ungradable in either source: 6" in md and "Model: 6" in md
    assert res["ai_gradable"]["n"] == 2 * N_IMAGES - 6 and res["ai"]["n"] == 2 * N_IMAGES
