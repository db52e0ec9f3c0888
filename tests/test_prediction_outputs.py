"""Prediction outputs: the plausibility gate (qc columns, grade 0, metrics over all vs gradable
hips), CE / Toennis / h / d columns, the AI interval (SimCC sampler, columns, calibration
metric) and the overlays that show them. See docs/outputs.md.

The exact cases reuse tests/test_predict.py's perfect model (a stand-in network that answers
each crop with its training target), so every measured value must equal the ground truth.
"""
import math
import warnings

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import utils.pipelines.detection
import utils.pipelines.predict as P
from datasets.formats import load_dataset, read_annotation
from datasets.layouts import SIDES, get_layout
from models import build_codec
from tests.helpers import _side_points
from tests.test_predict import (FakeDetector, _install_perfect, ckpt_left, data, data_mtddh8,  # noqa: F401
                                fake_detector)
from utils.evaluation import overlays as O
from utils.evaluation.metrics import evaluate_predictions, ihdi_metrics, prediction_row, read_predictions
from utils.hip_geometry import (ce_angle, format_reasons, grade_name, hilgenreiner_distances, plausibility_gate,
                                tonnis_grade)
from utils.pipelines.detection import Detection


# ---------------------------------------------------------------------------- the SimCC sampler
def test_sampler_of_a_delta_distribution_returns_the_decoded_point():
    codec = build_codec("simcc_2d", 64, split_ratio=2.0)
    n = codec.num_bins
    bins = torch.tensor([[[10, 77], [3, 120], [64, 64]]])               # (1, K=3, 2) bin of x, y
    logits = torch.full((1, 3, 2, n), -1e4)
    logits.scatter_(-1, bins[..., None], 0.0)
    out = {"x": logits[:, :, 0], "y": logits[:, :, 1]}
    coords, _ = codec.decode(out)
    s = codec.sample(out, 50, torch.Generator().manual_seed(1))
    assert s.shape == (1, 50, 3, 2)
    torch.testing.assert_close(s, coords[:, None].expand_as(s), rtol=0, atol=1e-6)
    torch.testing.assert_close(coords[0], bins[0].float() / 2)


def test_sample_mean_approximates_the_soft_argmax_and_the_draw_is_seeded():
    codec = build_codec("simcc_2d", 48, split_ratio=2.0)
    torch.manual_seed(0)
    out = {"x": torch.randn(2, 4, codec.num_bins) * 2, "y": torch.randn(2, 4, codec.num_bins) * 2}
    coords, _ = codec.decode(out)
    s = codec.sample(out, 20000, torch.Generator().manual_seed(3))
    assert s.shape == (2, 20000, 4, 2)
    assert float((s.mean(1) - coords).abs().max()) < 0.3            # std of a mean of 20000 draws: < 0.1 px
    assert float(s.std(1).min()) > 1.0                              # a wide distribution gives a wide spread
    again = codec.sample(out, 20000, torch.Generator().manual_seed(3))
    assert torch.equal(s, again)
    reg = build_codec("direct_regression", 48)
    assert reg.sample({"coords": torch.rand(1, 4, 2)}, 10) is None  # no distribution: no interval


# ---------------------------------------------------------------------------- gate on a constructed case
class GTBoxDetector:
    """A detector that returns each image's ground-truth boxes (found by image content), with
    fixed confidences per side: the perfect model's crops then match its training crops."""
    conf = {"left": 0.9, "right": 0.1}
    boxes = {}

    def __init__(self, weights, device="cpu", imgsz=640, conf=0.25):
        pass

    def predict(self, images, batch_size=8):
        return [{s: Detection(np.asarray(self.boxes[img.tobytes()][s], float), self.conf[s]) for s in SIDES}
                for img in images]


def _gt_box_detector(monkeypatch, records):
    from datasets.formats import read_record_image
    boxes = {read_record_image(r)[0].tobytes(): r.boxes for r in records}
    monkeypatch.setattr(GTBoxDetector, "boxes", boxes)
    monkeypatch.setattr(utils.pipelines.detection, "YoloDetector", GTBoxDetector)


def test_low_confidence_hip_is_ungradable_keeps_its_ai_and_is_summarised(data, tmp_path, monkeypatch, capsys):
    split = data / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    paths, _ = _install_perfect(monkeypatch, tmp_path, records, "ihdi12", {"L": ("left", "simcc_2d")})
    _gt_box_detector(monkeypatch, records)
    out = tmp_path / "out"
    s = P.run_prediction(split, out, kp_left_path=paths["L"], yolo_weights="gt.pt", device="cpu", batch_size=3,
                         progress=False, make_plots=False, max_overlays=1, worst_n=0)
    n = len(records)
    assert s["gate"] == f"{n} of {2 * n} hips ungradable: low_confidence {n}"
    P.print_summary(s, out)
    assert s["gate"] in capsys.readouterr().out
    df = read_predictions(out / "predictions.csv")
    assert {"qc_left", "qc_right"} <= set(df.columns)
    assert df["qc_left"].isna().all()                                  # "" in the file: passed
    assert (df["qc_right"] == "low_confidence").all()
    assert (df["pred_ihdi_right"] == 0).all() and (df["pred_ihdi_left"] == df["gt_ihdi_left"]).all()
    # a failed hip keeps its measured AI
    np.testing.assert_allclose(df["pred_ai_right"], df["gt_ai_right"], atol=0.05)
    m = evaluate_predictions(df, layout="ihdi12")
    assert m["gate"]["pooled"]["gradable_rate"] == 0.5 and m["gate"]["right"]["gradable_rate"] == 0.0
    assert m["gate"]["right"]["reasons"]["low_confidence"] == n
    # over all detected hips a failed hip counts: AI with its value, IHDI as an error
    assert m["ai"]["pooled"]["n"] == 2 * n and m["ai"]["pooled"]["mae"] < 0.05
    assert m["ihdi"]["pooled"]["accuracy"] == 0.5 and m["ihdi"]["pooled"]["n_failed_as_error"] == n
    assert m["ihdi"]["right"]["accuracy"] == 0.0
    # over the gradable hips only
    assert m["ai_gradable"]["pooled"]["n"] == n and m["ihdi_gradable"]["pooled"]["n"] == n
    assert m["ihdi_gradable"]["pooled"]["accuracy"] == 1.0
    # --min_conf 0.05 lets the same hips through
    s2 = P.run_prediction(split, tmp_path / "low", kp_left_path=paths["L"], yolo_weights="gt.pt", device="cpu",
                          progress=False, make_plots=False, overlays=False, min_conf=0.05)
    assert s2["gate"] == f"0 of {2 * n} hips ungradable"


def test_metrics_over_all_and_over_gradable_hips():
    rng = np.random.default_rng(2)
    rows = []
    for i in range(8):
        gt = np.concatenate([_side_points(rng, "left", 1 + i % 4, 256, "ihdi12"),
                             _side_points(rng, "right", 1 + (i + 1) % 4, 256, "ihdi12")])
        pred = gt.copy()
        if i < 2:                                  # two right hips with an AI error of 12 degrees
            t = math.radians(12.0 if i else -12.0)
            rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
            pred[8] = gt[6] + rot @ (gt[8] - gt[6])
        conf = {"left": 0.9, "right": 0.1 if i < 2 else 0.9}
        rows.append(prediction_row(f"r{i}", pred, "ihdi12", gt_kps=gt, image_width=256, det_conf=conf,
                                   pred_boxes={"left": (0, 0, 1, 1), "right": (0, 0, 1, 1)}))
    df = pd.DataFrame(rows)
    assert (df.loc[:1, "qc_right"] == "low_confidence").all() and (df.loc[:1, "pred_ihdi_right"] == 0).all()
    m = evaluate_predictions(df, layout="ihdi12")
    assert m["gate"]["pooled"] == {**m["gate"]["pooled"], "n_hips": 16, "n_gradable": 14,
                                   "gradable_rate": pytest.approx(14 / 16)}
    err = np.abs(df["pred_ai_right"] - df["gt_ai_right"]).to_numpy()
    assert err[:2] == pytest.approx([12.0, 12.0]) and err[2:].max() < 1e-9
    assert m["ai"]["right"]["mae"] == pytest.approx(err.mean())               # all detected hips
    assert m["ai_gradable"]["right"]["mae"] == pytest.approx(0.0, abs=1e-9)   # the gradable ones
    assert m["ai_gradable"]["right"]["n"] == 6
    assert m["ihdi"]["right"]["accuracy"] == pytest.approx(6 / 8)
    assert m["ihdi_gradable"]["right"]["accuracy"] == 1.0
    # ihdi_metrics(failed=...): an ungradable failed hip is an error everywhere, in the kappa as the grade
    # farthest from its reference (II -> IV). By hand, quadratic weights (i-j)^2/9 over pairs (1,1) (2,2)
    # (3,3) (2,4): observed 4/9/4 = 1/9; expected from rows (1,2,1,0), columns (1,1,1,1): 32/9/16 = 2/9;
    # kappa = 1 - (1/9)/(2/9) = 0.5
    r = ihdi_metrics([1, 2, 3, 2], [1, 2, 3, 0], failed=[False, False, False, True])
    assert r["accuracy"] == 0.75 and r["n_failed_as_error"] == 1 and r["kappa_quadratic"] == pytest.approx(0.5)
    assert r["n"] == 4 and r["n_graded"] == 3
    graded = ihdi_metrics([1, 2, 3, 2], [1, 2, 3, 0])
    assert graded["kappa_quadratic"] == 1.0 and graded["n"] == 3       # the gradable-only kappa differs
    assert r["confusion"]["gt_II"]["pred_ungradable"] == 1 and r["screening"]["fn"] == 1
    assert r["per_grade"]["II"]["recall"] == 0.5
    plain = ihdi_metrics([1, 2, 3, 2], [1, 2, 3, 0])                           # without the gate: left out
    assert plain["accuracy"] == 1.0 and plain["n"] == 3 and "n_failed_as_error" not in plain


# ---------------------------------------------------------------------------- CE / Toennis / h / d, mtddh8
def test_ce_tonnis_h_d_columns_exact_with_the_perfect_model(data_mtddh8, tmp_path, monkeypatch):
    split = data_mtddh8 / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    paths, _ = _install_perfect(monkeypatch, tmp_path, records, "mtddh8", {"L": ("left", "simcc_2d")})
    out = tmp_path / "out"
    s = P.run_prediction(split, out, kp_left_path=paths["L"], use_gt_box=True, device="cpu", progress=False,
                         make_plots=False, worst_n=0)
    df = read_predictions(out / "predictions.csv").set_index("stem")
    lay = get_layout("mtddh8")
    for r in records:
        row, gt = df.loc[r.stem], read_annotation(r.image_path.parent.parent / "annotations" / f"{r.stem}.csv")
        ce, tg, hd = ce_angle(gt, lay), tonnis_grade(gt, lay), hilgenreiner_distances(gt, lay)
        for k, side in enumerate(SIDES):
            assert row[f"gt_ce_{side}"] == pytest.approx(ce[k], abs=1e-9)
            assert int(row[f"gt_tonnis_{side}"]) == tg[k] and int(row[f"pred_tonnis_{side}"]) == tg[k]
            assert abs(row[f"pred_ce_{side}"] - ce[k]) < 0.1 and abs(row[f"err_ce_{side}"]) < 0.1
            for m in ("h", "d"):
                assert row[f"gt_{m}_{side}"] == pytest.approx(hd[m][k], abs=1e-9)
                assert abs(row[f"err_{m}_{side}"]) < 0.05
                spacing = row["pixel_spacing_mm"]                           # the phantom's metadata.csv
                assert spacing > 0 and row[f"gt_{m}_mm_{side}"] == pytest.approx(hd[m][k] * spacing, abs=1e-9)
                assert abs(row[f"err_{m}_mm_{side}"]) < 0.05 * spacing
            # the interval: present, and around the measured AI of this well-behaved (near-delta) model
            lo, hi, ai = row[f"pred_ai_{side}_lo"], row[f"pred_ai_{side}_hi"], row[f"pred_ai_{side}"]
            assert lo <= ai <= hi and hi - lo < 5.0          # points jitter by <= 1 bin (0.5 crop px)
            assert row[f"qc_{side}"] != row[f"qc_{side}"]                   # NaN: "" in the file, passed
    m = s["metrics"]
    assert m["ce"]["pooled"]["mae"] < 0.1 and m["ce"]["pooled"]["n"] == 2 * len(records)
    assert m["tonnis"]["pooled"]["accuracy"] == 1.0
    assert m["h_px"]["pooled"]["mae"] < 0.05 and m["d_px"]["pooled"]["mae"] < 0.05
    assert m["ai_interval"]["pooled"]["n"] == 2 * len(records) and m["ai_interval"]["pooled"]["coverage"] > 0.5


def test_regression_model_writes_nan_intervals(data, tmp_path, monkeypatch):
    split = data / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    paths, _ = _install_perfect(monkeypatch, tmp_path, records, "ihdi12", {"R": ("right", "direct_regression")})
    P.run_prediction(split, tmp_path / "out", kp_right_path=paths["R"], use_gt_box=True, device="cpu",
                     progress=False, make_plots=False, overlays=False)
    df = read_predictions(tmp_path / "out" / "predictions.csv")
    cols = [f"pred_ai_{s}_{b}" for s in SIDES for b in ("lo", "hi")]
    assert df[cols].isna().all().all() and np.isfinite(df[["pred_ai_left", "pred_ai_right"]]).all().all()
    assert "pred_ce_left" not in df.columns and "pred_h_left" in df.columns       # ihdi12: h and d only


# ---------------------------------------------------------------------------- overlays
def _mtddh8_pelvis():
    rng = np.random.default_rng(4)
    return np.concatenate([_side_points(rng, "left", 2, 1000, "mtddh8"),
                           _side_points(rng, "right", 1, 1000, "mtddh8")])


def _has_colour(img, p, colour, r=2):
    x, y = int(round(p[0])), int(round(p[1]))
    patch = img[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 3).astype(int)
    return bool(np.any(np.abs(patch - np.array(colour)).max(1) <= 12))


def test_mtddh8_overlay_draws_ce_and_sma_lines_and_a_warning(tmp_path):
    kps = _mtddh8_pelvis()
    img = np.full((1000, 1000), 60, np.uint8)          # lines 2 px wide: their colour is exact on the line
    qc = {"left": "", "right": "low_confidence"}
    out = O.draw_overlay(img, kps, "mtddh8", qc=qc, ai_interval={"left": (20.0, 26.0), "right": (np.nan, np.nan)},
                         title="mtddh8 overlay")
    cv2.imwrite(str(tmp_path / "overlay_mtddh8.png"), out)
    from utils.hip_geometry import head_lines
    seg = head_lines(kps, "mtddh8")
    for s in SIDES:
        c, e = seg[s]["ce"]
        assert _has_colour(out, 0.5 * (c + e), O.COLORS["ce"])               # C -> E
        v0, v1 = seg[s]["vertical"]
        assert _has_colour(out, 0.5 * (v0 + v1), O.COLORS["ce"])             # the perpendicular through C
        a, b = seg[s]["sma"]
        assert _has_colour(out, 0.25 * a + 0.75 * b, O.COLORS["sma"])        # the SMA line, away from E
    frames = O._measure(kps, get_layout("mtddh8"))[1]
    labels = O.hip_labels(frames, None, qc=qc, ai_interval={"left": (20.0, 26.0)},
                          head={"left": (30.0, 1), "right": (10.0, 2)})
    ai_left = float(frames["left"]["ai_deg"])
    assert [t for t, _ in labels["left"]] == [f"L: AI {ai_left:.1f} deg (20.0-26.0)",
                                              f"IHDI {grade_name(frames['left']['grade'])}", "CE 30.0 deg, Tonnis I"]
    assert labels["right"][0] == (f"R: AI {float(frames['right']['ai_deg']):.1f} deg, IHDI ungradable",
                                  O.COLORS["warn"])
    assert labels["right"][1] == ("CE 10.0 deg, Tonnis ungradable", O.COLORS["warn"])
    assert labels["right"][-1] == ("ungradable: low_confidence", O.COLORS["warn"])
    assert np.sum(np.all(np.abs(out.astype(int) - O.COLORS["warn"]) <= 12, axis=-1)) > 50   # warning drawn
    # ihdi12 has no head centre: no CE/SMA colour anywhere
    from tests.test_plots import GRADE_HP, hip_kps
    plain = O.draw_overlay(np.full((1000, 1000), 60, np.uint8), hip_kps(GRADE_HP[1], GRADE_HP[2]), "ihdi12")
    assert not np.any(np.all(plain == O.COLORS["ce"], axis=-1))


# ---------------------------------------------------------------------------- real films: the gate's contract
@pytest.mark.parametrize("fmt", ["jpg", "dicom"])
def test_real_films_no_implausible_hip_is_graded(fmt, shared_dir, ckpt_left, fake_detector, tmp_path):
    folder = shared_dir / "real_xray" / fmt
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    films = sorted(p.stem for p in folder.iterdir() if p.is_file() and not p.name.endswith(".md"))
    out = tmp_path / "out"
    s = P.run_prediction(folder, out, kp_left_path=str(ckpt_left), yolo_weights="fake.pt", device="cpu",
                         batch_size=4, progress=False, min_conf=0.85)      # the fake's right boxes (0.8) are low
    df = read_predictions(out / "predictions.csv")
    assert sorted(df["stem"]) == films and {"qc_left", "qc_right"} <= set(df.columns)
    lay = get_layout("ihdi12")
    n_bad = 0
    for _, row in df.iterrows():
        kps = np.array([[row[f"pred_x_{j}"], row[f"pred_y_{j}"]] for j in range(lay.num_points)])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            want = plausibility_gate(kps, row["width"], lay, confidences=(row["det_conf_left"], row["det_conf_right"]),
                                     detected=(row["detected_left"], row["detected_right"]), min_conf=0.85)
        for side, reasons in zip(SIDES, want):
            qc = row[f"qc_{side}"] if isinstance(row[f"qc_{side}"], str) else ""
            assert qc == format_reasons(reasons), (row["stem"], side)
            if reasons:                                                    # implausible: never graded
                n_bad += 1
                assert row[f"pred_ihdi_{side}"] == 0
            else:
                assert row[f"pred_ihdi_{side}"] in (1, 2, 3, 4)
        assert "low_confidence" in row["qc_right"]
    assert s["gate"].startswith(f"{n_bad} of {2 * len(films)} hips ungradable") and n_bad >= len(films)
