"""utils.evaluation.plots (PNG plots, OpenCV overlays) and utils.evaluation.tables (k-fold and comparison tables)."""
import math
import re

import cv2
import numpy as np
import pandas as pd
import pytest

from utils.evaluation import metrics as M
from utils.evaluation import overlays as O
from utils.evaluation import plots as P
from utils.evaluation import tables as T
from utils.hip_geometry import hip_frames

GRADE_HP = {1: (-10.0, 20.0), 2: (10.0, 20.0), 3: (20.0, 10.0), 4: (10.0, -5.0)}


def hip_kps(left_hp=(-10.0, 20.0), right_hp=(-10.0, 20.0), left_rise=40.0, right_rise=40.0):
    """ihdi12 points, horizontal H-line y = 500 through triradiates x = 400 / 600; lateral edges at
    x = 300 / 700, ``rise`` px above it; H-points at local (x, y) ``*_hp`` (x lateral, y inferior)."""
    k = np.zeros((12, 2))
    k[2], k[0] = (400, 500), (300, 500 - left_rise)
    k[1] = (k[0] + k[2]) / 2
    hp = np.array([300 - left_hp[0], 500 + left_hp[1]])
    k[3], k[4], k[5] = hp + (-10, 0), hp + (0, -5), hp + (10, 0)
    k[6], k[8] = (600, 500), (700, 500 - right_rise)
    k[7] = (k[6] + k[8]) / 2
    hp = np.array([700 + right_hp[0], 500 + right_hp[1]])
    k[9], k[10], k[11] = hp + (-10, 0), hp + (0, -5), hp + (10, 0)
    return k


def near(img, x, y, color, r=2, tol=60):
    """Some pixel within r of (x, y) has roughly ``color`` (anti-aliased lines)."""
    patch = img[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 3).astype(int)
    return bool(np.any(np.abs(patch - np.array(color)).max(axis=1) <= tol))


def frame(n=12, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        gl, gr = 1 + i % 4, 1 + (i // 2) % 4
        gt = hip_kps(GRADE_HP[gl], GRADE_HP[gr], 20 + 2 * i, 50 - 2 * i)
        pred = gt + rng.normal(0, 2, gt.shape)
        rows.append(M.prediction_row(f"img{i}", pred, "ihdi12", gt_kps=gt,
                                     pred_boxes={"left": [250, 420, 450, 580], "right": [550, 420, 750, 580]},
                                     gt_boxes={"left": [255, 425, 450, 580], "right": [550, 420, 745, 585]},
                                     det_conf={"left": 0.9, "right": 0.85},
                                     pixel_spacing_mm=0.2 if i % 3 else None,
                                     crop_sides={"left": 220, "right": 220}))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ plots
def test_plot_all_writes_png_files(tmp_path):
    paths = P.plot_all(frame(), tmp_path)
    names = {p.name for p in paths}
    assert {"ai_scatter.png", "ai_bland_altman.png", "ai_error_vs_true.png", "ihdi_confusion.png", "ihdi_screening_confusion.png",
            "keypoint_errors_px.png", "error_hist_px.png", "keypoint_errors_mm.png", "error_hist_mm.png"} <= names
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
        img = cv2.imread(str(p))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 200


def test_plots_handle_empty_and_partial_frames(tmp_path):
    df = frame(3)
    df[["pred_ai_left", "pred_ai_right"]] = np.nan
    P.plot_ai_scatter(df, tmp_path / "a.png")
    P.plot_bland_altman(df, tmp_path / "b.png")
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "b.png").stat().st_size > 0
    with pytest.raises(ValueError):
        P.plot_confusion(df, tmp_path / "c.png", kind="3class")


def test_ai_scatter_and_bland_altman_take_axis_labels_and_draw_the_agreement_plots(tmp_path, monkeypatch):
    from utils.evaluation import agreement_plots as AP
    seen, real = [], P._save

    def save(fig, path):
        ax = fig.axes[0]
        seen.append((ax.get_xlabel(), ax.get_ylabel(), len(ax.collections)))
        return real(fig, path)

    monkeypatch.setattr(P, "_save", save)
    P.plot_ai_scatter(frame(), tmp_path / "a.png")
    P.plot_bland_altman(frame(), tmp_path / "b.png", labels=("mean", "diff"))
    ai = {s: np.array([20.0, 25.0, np.nan]) for s in ("left", "right")}
    AP.plot_ai_agreement_scatter(ai, {s: v + 1 for s, v in ai.items()}, tmp_path / "c.png", "R1", "R2")
    AP.plot_ai_bland_altman(ai, {s: v + 1 for s, v in ai.items()}, tmp_path / "d.png", "R1", "R2")
    assert [s[:2] for s in seen] == [("Reference AI (°)", "Predicted AI (°)"), ("mean", "diff"),
                                     ("R1: AI (°)", "R2: AI (°)"), ("Mean of R1 and R2 AI (°)", "R2 − R1 AI (°)")]
    assert all(n == 2 for *_, n in seen)                    # one marker set per side, through plots' drawing


# ------------------------------------------------------------------ overlays
def test_overlay_draws_lines_at_the_right_places():
    kps = hip_kps(GRADE_HP[1], GRADE_HP[1])
    blank = np.zeros((1000, 1000), np.uint8)
    out = O.draw_overlay(blank, kps, "ihdi12", legend=False)
    assert out.shape == (1000, 1000, 3) and blank.max() == 0           # input untouched
    C = O.COLORS
    # H-line through both triradiate points (y = 500), continuous between them
    for x in range(415, 590, 10):
        assert near(out, x, 500, C["h_line"]), x
    # P-line: vertical through the lateral edge (x = 300 and 700), below the H-line
    for y in range(545, 595, 10):
        assert near(out, 300, y, C["p_line"]) and near(out, 700, y, C["p_line"]), y
    # D-lines: 45 deg from the P/H intersection, inferolaterally
    for t in range(30, 66, 7):
        assert near(out, 300 - t, 500 + t, C["d_line"]), t
        assert near(out, 700 + t, 500 + t, C["d_line"]), t
        assert not near(out, 300 + t, 500 + t, C["d_line"], r=1)        # not medially
    # roof lines: triradiate -> lateral edge
    assert near(out, 375, 490, C["roof"]) and near(out, 625, 490, C["roof"])
    assert near(out, 325, 470, C["roof"]) and near(out, 675, 470, C["roof"])
    # predicted points in the prediction colour; empty areas stay black
    assert near(out, 400, 500, C["pred"], r=1) and near(out, 700, 460, C["pred"], r=1)
    assert out[700, 500].max() == 0 and out[900, 100].max() == 0


def test_overlay_lines_follow_a_rotated_pelvis():
    kps = hip_kps(GRADE_HP[2], GRADE_HP[1])
    th = math.radians(20)
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    kr = (kps - 500) @ R.T + 500
    out = O.draw_overlay(np.zeros((1000, 1000, 3), np.uint8), kr, "ihdi12", legend=False)
    f = hip_frames(kr, "ihdi12")
    tl, tr = f["left"]["triradiate"], f["right"]["triradiate"]
    for a in np.linspace(0.1, 0.9, 9):
        x, y = (tl + a * (tr - tl)).round().astype(int)
        assert near(out, x, y, O.COLORS["h_line"]), a
    o, d = f["right"]["origin"], (f["right"]["lateral"] + f["right"]["inferior"]) / math.sqrt(2)
    for t in (40, 60, 80):
        x, y = (o + t * d).round().astype(int)
        assert near(out, x, y, O.COLORS["d_line"]), t


def test_overlay_text_gt_boxes_legend_and_missing_side():
    kps = hip_kps(GRADE_HP[1], GRADE_HP[3], left_rise=40, right_rise=100)
    labels = O.hip_labels(hip_frames(kps, "ihdi12"), hip_frames(kps, "ihdi12"))
    assert labels["left"][0][0] == "L: AI 21.8 deg, IHDI I"
    assert labels["right"][0][0] == "R: AI 45.0 deg, IHDI III"
    assert labels["right"][1][0] == "ref: AI 45.0 deg, IHDI III"
    gt = kps + 15.0
    img = np.zeros((1000, 1000), np.uint8)
    out = O.draw_overlay(img, kps, "ihdi12", gt_kps=gt, boxes={"left": ([250, 420, 450, 580], 0.93),
                                                                 "right": [550, 420, 750, 580]},
                         title="case 1")
    assert out.shape[0] > 1000 and out.shape[1] == 1000                 # legend strip below
    assert np.any(out[1000:] > 100)
    assert near(out, int(gt[8, 0]), int(gt[8, 1]), O.COLORS["gt"], r=1)
    assert near(out, 350, 580, O.COLORS["box"]) and near(out, 550, 450, O.COLORS["box"])
    # right side missing: points of the left drawn, no geometry
    k2 = kps.copy()
    k2[6:] = np.nan
    out2 = O.draw_overlay(img, k2, "ihdi12", legend=False)
    assert near(out2, 400, 500, O.COLORS["pred"], r=1)
    assert not near(out2, 500, 500, O.COLORS["h_line"])


def test_overlay_scales_with_image_size():
    kps = hip_kps()
    small = O.draw_overlay(np.zeros((512, 512), np.uint8), kps * 0.512, "ihdi12", legend=False)
    big = O.draw_overlay(np.zeros((3000, 3000), np.uint8), kps * 3, "ihdi12", legend=False)

    def h_thickness(img, x, y0):
        col = img[y0 - 30:y0 + 30, x]
        return int(np.sum(np.abs(col.astype(int) - O.COLORS["h_line"]).max(axis=1) <= 60))

    ts, tb = h_thickness(small, 256, 256), h_thickness(big, 1500, 1500)
    assert 1 <= ts <= 3 and tb >= 4 * ts - 2
    assert O._Style(3000, 3000).font > 2 * O._Style(512, 512).font


def test_save_overlay_and_worst_cases(tmp_path):
    df = frame(6)
    df.loc[3, "mean_err_px"] = 99.0
    img = np.full((1000, 1000), 60, np.uint8)
    p = O.save_overlay(tmp_path / "o.png", img, hip_kps(), "ihdi12", title="x")
    assert cv2.imread(str(p)) is not None
    lookup = {s: img for s in df["stem"] if s != "img5"}
    paths = O.save_worst_cases(df, lookup, tmp_path / "worst", n=3)
    assert paths[0].name == "01_img3.png"
    assert len(paths) <= 3 and all(cv2.imread(str(q)).shape[1] == 1000 for q in paths)
    # a path lookup through the image reader
    f = tmp_path / "img0.png"
    cv2.imwrite(str(f), img)
    paths = O.save_worst_cases(df, lambda s: f if s == "img0" else None, tmp_path / "w2", n=6)
    rank = list(df.sort_values("mean_err_px", ascending=False)["stem"]).index("img0") + 1
    assert [q.name for q in paths] == [f"{rank:02d}_img0.png"]


# ------------------------------------------------------------------ tables
FOLDS = [{"ai/pooled/mae": 1.0, "ai/left/mae": 2.0, "ihdi/pooled/accuracy": 0.90, "keypoints/layout": "ihdi12"},
         {"ai/pooled/mae": 2.0, "ai/left/mae": 2.0, "ihdi/pooled/accuracy": 0.80},
         {"ai/pooled/mae": 4.0, "ai/left/mae": None, "ihdi/pooled/accuracy": 0.85}]


def test_kfold_summary_mean_sd_ddof1():
    s = T.kfold_summary(FOLDS)
    assert s.at["ai/pooled/mae", "mean"] == pytest.approx(7 / 3)
    assert s.at["ai/pooled/mae", "sd"] == pytest.approx(math.sqrt(7 / 3))       # ddof = 1
    assert s.at["ai/left/mae", "n_folds"] == 2 and s.at["ai/left/mae", "sd"] == 0.0
    assert s.at["ihdi/pooled/accuracy", "sd"] == pytest.approx(np.std([0.9, 0.8, 0.85], ddof=1))
    assert "keypoints/layout" not in s.index and list(s.columns[-3:]) == ["fold_1", "fold_2", "fold_3"]
    assert T.format_mean_sd(2.3333, 1.5275, 2) == "2.33 ± 1.53"
    assert T.format_mean_sd(-1.0, float("nan"), 1) == "−1.0"
    assert T.format_mean_sd(float("nan"), 1.0, 1) == "–"


def _md_rows(text):
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not re.fullmatch(r"[|:\- ]+", line.strip())]


def _check_tex(tex, ncol):
    body = "\n".join(l for l in tex.splitlines() if not l.startswith("%"))
    assert body.count("{") == body.count("}")
    assert re.findall(r"\\begin\{(\w+)\}", body) == re.findall(r"\\end\{(\w+)\}", body)[::-1]
    text = re.sub(r"\$[^$]*\$", "", body)                                  # drop inline math
    assert not re.search(r"(?<!\\)[%_#]", text), "unescaped special character"
    assert all(ord(ch) < 128 for ch in body), "unicode left in LaTeX"
    for line in body.splitlines():
        if line.endswith("\\\\") and not line.startswith("\\multicolumn"):
            assert len(re.findall(r"(?<!\\)&", line)) == ncol - 1, line


def test_write_kfold_summary_md_tex_csv(tmp_path):
    df = frame(12)
    folds = [M.evaluate(df.iloc[i::3].reset_index(drop=True)) for i in range(3)]
    paths = T.write_kfold_summary(folds, tmp_path)
    csv = pd.read_csv(paths["csv"], index_col="metric")
    assert csv.at["ai/pooled/mae", "n_folds"] == 3
    maes = [f["ai"]["pooled"]["mae"] for f in folds]
    assert csv.at["ai/pooled/mae", "mean"] == pytest.approx(np.mean(maes))
    assert csv.at["ai/pooled/mae", "sd"] == pytest.approx(np.std(maes, ddof=1))
    md = paths["md"].read_text()
    rows = _md_rows(md)
    assert rows[0] == ["Metric", "Left hip", "Right hip", "Both hips"]
    assert all(len(r) == 4 for r in rows)
    by_name = {r[0]: r for r in rows}
    assert by_name["AI MAE (°)"][3] == f"{np.mean(maes):.2f} ± {np.std(maes, ddof=1):.2f}"
    acc = [f["ihdi"]["pooled"]["accuracy"] * 100 for f in folds]
    assert by_name["IHDI accuracy (%)"][3] == f"{np.mean(acc):.1f} ± {np.std(acc, ddof=1):.1f}"
    # the default table is the compact one a paper reports; every curated row is in the _full file
    compact = {"Detection recall (%)", "MRE (px)", "MRE (mm)", "SDR @ 2 mm (%)", "AI MAE (°)", "AI ICC(2,1)",
               "IHDI accuracy (%)", "IHDI quadratic κ"}
    assert compact <= set(by_name)
    metric_rows = [r for r in rows[1:] if not r[0].startswith("**")]
    assert len(metric_rows) <= 13 and "NME, crop diagonal (%)" not in by_name
    full = {r[0]: r for r in _md_rows(paths["full_md"].read_text())}
    for label in ("Detection recall (%)", "MRE (px)", "MRE (mm)", "NME, crop diagonal (%)", "SDR @ 2 mm (%)",
                  "SDR @ 2.5 mm (%)", "AI ICC(2,1)", "AI 95% LoA, lower (°)", "IHDI quadratic κ",
                  "Screening sensitivity (%)", "Screening specificity (%)"):
        assert label in full, label
    assert not any("CI" in name for name in full)                # fold-level CI bounds are not averaged
    assert not any(k.endswith(("_ci_lo", "_ci_hi")) for k in csv.index)
    for key in ("tex", "full_tex"):
        tex = paths[key].read_text()
        _check_tex(tex, 4)
        assert r"AI MAE ($^\circ$)" in tex and r"$\pm$" in tex and r"IHDI quadratic $\kappa$" in tex


def test_compare_experiments(tmp_path):
    a = {"ai/pooled/mae": 2.0, "ihdi/pooled/accuracy": 0.9, "keypoints/px/pooled/mean": 5.0}
    b = [{"ai/pooled/mae": 1.0, "ihdi/pooled/accuracy": 0.8, "keypoints/px/pooled/mean": 4.0},
         {"ai/pooled/mae": 3.0, "ihdi/pooled/accuracy": 0.9, "keypoints/px/pooled/mean": 4.0}]
    c = T.kfold_summary(b)
    df = T.compare_experiments({"convnext_small_custom/simcc_2d": a, "hrnet_w32_custom/simcc_1d": b,
                                "from_summary": c})
    assert list(df.index) == ["convnext_small_custom/simcc_2d", "hrnet_w32_custom/simcc_1d", "from_summary"]
    assert df.at["convnext_small_custom/simcc_2d", "IHDI acc. (%)"] == pytest.approx(90.0)
    assert math.isnan(df.at["convnext_small_custom/simcc_2d", "IHDI acc. (%) SD"])
    assert df.at["hrnet_w32_custom/simcc_1d", "AI MAE (°) SD"] == pytest.approx(math.sqrt(2))
    assert "MRE (mm)" not in df.columns                                        # absent everywhere
    paths = T.write_comparison(df, tmp_path)
    rows = _md_rows(paths["md"].read_text())
    assert rows[0] == ["Experiment", "MRE (px)", "AI MAE (°)", "IHDI acc. (%)"]
    assert rows[1][rows[0].index("MRE (px)")] == "5.00"
    assert rows[2][rows[0].index("MRE (px)")] == "**4.00 ± 0.00**"               # best (lowest) in bold
    assert rows[1][rows[0].index("IHDI acc. (%)")] == "**90.0**"
    assert all(len(r) == len(rows[0]) for r in rows)
    _check_tex(paths["tex"].read_text(), len(rows[0]))
    assert pd.read_csv(paths["csv"], index_col="experiment").shape[0] == 3


def test_overlay_from_row_reads_text_cells_and_box_columns():
    kps = hip_kps()
    row = {"stem": "r1", "layout": "ihdi12", "mean_err_px": "", "det_conf_left": 0.9, "det_conf_right": "",
           **{f"pred_x_{j}": float(x) for j, (x, _) in enumerate(kps)},
           **{f"pred_y_{j}": float(y) for j, (_, y) in enumerate(kps)},
           **{f"box_left_{c}": v for c, v in zip(("x1", "y1", "x2", "y2"), (250, 420, 450, 580))},
           **{f"box_right_{c}": "" for c in ("x1", "y1", "x2", "y2")}}
    boxes = O.row_boxes(row)
    assert list(boxes) == ["left"] and boxes["left"][1] == pytest.approx(0.9)
    assert O.row_keypoints(row, "ihdi12", "gt") is None
    out = O.overlay_from_row(np.zeros((1000, 1000), np.uint8), row)
    assert out.shape[1] == 1000 and near(out, 250, 450, O.COLORS["box"]) and near(out, 500, 500, O.COLORS["h_line"])


def test_hip_sheet_cuts_each_hip_around_its_box(tmp_path):
    """save_hip_sheet: one 256-px cell per hip, two films a row, sorted by stem; each cell is the square of
    1.7x its box's longer side centred on the box, so a point at the box centre lands at the cell centre and
    a point at the box's lateral edge at 1/1.7 of the half-width from it; a missing detection is a dark cell."""
    df = frame(3)
    img = np.full((1000, 1000), 60, np.uint8)
    img[495:506, 345:356] = 255              # a white square at the left box's centre (350, 500)
    img[495:506, 245:256] = 255              # and one at its image-left edge x = 250
    lookup = {s: img for s in df["stem"]}
    df.loc[0, [c for c in df.columns if c.startswith(("pred_x_", "pred_y_", "gt_x_", "gt_y_"))]] = np.nan  # no lines
    df.loc[2, [f"pred_box_right_{c}" for c in ("x1", "y1", "x2", "y2")]] = np.nan
    p = O.save_hip_sheet(df, lookup, tmp_path / "sheet.png", cell=256)
    sheet = cv2.imread(str(p))
    assert sheet.shape == (2 * 256, 4 * 256, 3)           # 3 films = 6 cells -> 2 rows of 4 (2 blank)
    cell = sheet[:256, :256]                              # img0, left hip: box 250..450 x 420..580, side 200
    k = 256 / (1.7 * 200)
    assert cell[128, 128].min() > 200                     # the box centre
    assert cell[128, int(round(128 - 100 * k))].min() > 200   # the box's edge
    assert cell[128, 128 - 40].max() < 100                # between them: the film's background
    right_img2 = sheet[256:, 256:512]                     # img2's right hip: no box, cut around its points
    assert np.abs(right_img2[40:].astype(int) - 60).max(axis=2).min() < 10 and right_img2[20:].max() > 200
    assert O.save_hip_sheet(df, {}, tmp_path / "none.png") is None
