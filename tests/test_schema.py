"""utils.evaluation.schema: column names and metric keys in one place, checked against the code."""
import numpy as np
import pandas as pd
import pytest

from tests.helpers import _side_points
from tests.test_plots import frame
from utils.evaluation import schema, tables
from utils.evaluation.metrics import evaluate_predictions, flatten_metrics, prediction_row


def _keys(keys):
    return {k.format(side=s) for k in keys for s in schema.METRIC_SIDES}


def mtddh8_frame(n=12, seed=0):
    """Predictions rows of mtddh8 hips (noisy points around helper-made GT), gated, with AI intervals."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        gt = np.concatenate([_side_points(rng, "left", 1 + i % 4, 256, "mtddh8"),
                             _side_points(rng, "right", 1 + (i // 2) % 4, 256, "mtddh8")])
        pred = gt + rng.normal(0, 1.5, gt.shape)
        rows.append(prediction_row(f"m{i}", pred, "mtddh8", gt_kps=gt, pixel_spacing_mm=0.2, image_width=256,
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
