"""utils.evaluation.schema: column names, the predictions row and metric keys in one place, checked
against the code."""
import csv
import dataclasses

import numpy as np
import pandas as pd
import pytest

import utils.pipelines.predict as P
from datasets.formats import load_dataset
from datasets.layouts import SIDES, get_layout
from tests.helpers import _side_points
from tests.test_plots import frame
from tests.test_predict import _install_perfect, data, data_mtddh8  # noqa: F401  (fixtures)
from utils.evaluation import schema, tables
from utils.evaluation.metrics import evaluate_predictions, flatten_metrics, make_row, prediction_row


def _keys(keys):
    return {k.format(side=s) for k in keys for s in schema.METRIC_SIDES}


def mtddh8_frame(n=12, seed=0):
    """Predictions rows of mtddh8 hips (noisy points around helper-made GT), gated, with AI intervals."""
    rng = np.random.default_rng(seed)
    lay = get_layout("mtddh8")
    rows = []
    for i in range(n):
        gt = np.concatenate([_side_points(rng, "left", 1 + i % 4, 256, "mtddh8"),
                             _side_points(rng, "right", 1 + (i // 2) % 4, 256, "mtddh8")])
        pred = gt + rng.normal(0, 1.5, gt.shape)
        boxes = {s: (*gt[lay.side_slice(s)].min(0) - 10, *gt[lay.side_slice(s)].max(0) + 10) for s in SIDES}
        rows.append(prediction_row(f"m{i}", pred, "mtddh8", gt_kps=gt, pixel_spacing_mm=0.2, image_width=256,
                                   pred_boxes=boxes, gt_boxes=boxes,
                                   ai_interval={"left": (10.0, 40.0), "right": (10.0, 40.0)}))
    return pd.DataFrame(rows)


def test_every_schema_metric_key_is_produced_by_the_metrics():
    df = frame(n=12)
    df["pixel_spacing_mm"] = 0.2
    flat = {k for k, _ in flatten_metrics(evaluate_predictions(df, layout="ihdi12"))}
    # ihdi12 has no head centre: every key but the CE / Toennis ones, and none of those
    missing = sorted(_keys(schema.METRIC_KEYS - schema.HEAD_CENTRE_METRIC_KEYS) - flat)
    assert not missing, missing
    assert not _keys(schema.HEAD_CENTRE_METRIC_KEYS) & flat
    flat8 = {k for k, _ in flatten_metrics(evaluate_predictions(mtddh8_frame(), layout="mtddh8"))}
    missing = sorted(_keys(schema.METRIC_KEYS) - flat8)
    assert not missing, missing


def test_a_table_key_the_metrics_do_not_produce_is_an_error():
    schema.check_metric_keys(["ai/{side}/mae", "ihdi/pooled/accuracy"])
    with pytest.raises(KeyError, match="ai/pooled/mea"):
        schema.check_metric_keys(["ai/pooled/mea"])
    for m in tables.PAPER_ROWS + tables.COMPARE_COLUMNS:
        assert all(schema.known_metric_key(k) for k in m.keys), m


def test_error_columns_are_read_back_by_index_without_parsing_other_names():
    cols = [schema.column("err_px", side="left", j=j) for j in (10, 2, 0)] + ["err_px_left_x", "err_px_right_1", "stem"]
    assert schema.error_columns(cols, "left") == [("err_px_left_0", 0), ("err_px_left_2", 2),
                                                  ("err_px_left_10", 10)]
    assert schema.error_columns(cols, "right") == [("err_px_right_1", 1)]
    assert [schema.column("point", kind="pred", axis="x", j=j) for j in range(2)] == ["pred_x_0", "pred_x_1"]


# ---------------------------------------------------------------------------- the predictions row
@pytest.mark.parametrize("layout", ["ihdi12", "mtddh8"])
def test_row_columns_are_the_header_of_a_perfect_model_run(layout, request, tmp_path, monkeypatch):
    split = request.getfixturevalue("data_mtddh8" if layout == "mtddh8" else "data") / "test"
    records = load_dataset(split, require_annotations=True, require_boxes=True)
    paths, _ = _install_perfect(monkeypatch, tmp_path, records, layout, {"L": ("left", "simcc_2d")})
    P.run_prediction(split, tmp_path / "out", kp_left_path=paths["L"], use_gt_box=True, device="cpu",
                     progress=False, make_plots=False, overlays=False)
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == schema.row_columns(layout, with_gt=True)
    assert header == [k for k, _ in schema.PredictionRow.blank(layout).cells()]
    assert header[:2] == ["stem", "layout"] and header[-3:] == ["mean_err_mm_left", "mean_err_mm_right", "mean_err_mm"]
    no_gt = schema.row_columns(layout, with_gt=False)
    assert no_gt == [c for c in header if not c.startswith("mean_err_mm")]
    assert ("pred_ce_left" in header) == (layout == "mtddh8")


def test_a_row_with_a_missing_field_is_an_error():
    blank = schema.PredictionRow.blank("ihdi12")
    hip = dataclasses.asdict(blank.hips["left"])
    del hip["iou"]
    with pytest.raises(TypeError, match="iou"):
        schema.HipCells(**hip)
    with pytest.raises(TypeError, match="mean_err_px"):
        schema.PredictionRow("s", "ihdi12", blank.hips, 0.1, 5.0, blank.pred_points, blank.gt_points)
    with pytest.raises(ValueError, match="hips"):
        dataclasses.replace(blank, hips={"left": blank.hips["left"]})


def test_the_row_dict_is_the_dataclass_without_its_empty_cells():
    rng = np.random.default_rng(3)
    gt = np.concatenate([_side_points(rng, "left", 2, 256, "mtddh8"), _side_points(rng, "right", 1, 256, "mtddh8")])
    kw = dict(gt_kps=gt, pixel_spacing_mm=0.2, image_width=256, ai_interval={"left": (10.0, 30.0)})
    row = make_row("m0", gt + 0.5, "mtddh8", **kw)
    d = prediction_row("m0", gt + 0.5, "mtddh8", **kw)
    assert list(d) == list(row.as_dict())
    np.testing.assert_equal(list(d.values()), list(row.as_dict().values()))   # (NaN equal to NaN)
    assert list(d) == [k for k in schema.row_columns("mtddh8") if k in d]     # in the file's order
    assert not {"image", "status", "conf_left_0", "mean_err_mm"} & set(d)      # a prediction run's own cells
    assert d["err_h_left"] == d["pred_h_left"] - d["gt_h_left"] and d["pred_ai_left_lo"] == 10.0
    row.hips["left"].conf = {0: 0.5}
    row.image, row.mean_err_mm = "a.png", 1.0
    assert {"image": "a.png", "conf_left_0": 0.5, "mean_err_mm": 1.0}.items() <= row.as_dict().items()
    assert "conf_left_1" not in row.as_dict() and "width" not in row.as_dict()
