"""K-fold tables name a fold whose detector found no hip: a one-line warning and a footnote in
the Markdown and LaTeX tables (utils/evaluation/tables.py, utils/pipelines/kfold_predict.py)."""
import json
import logging

import numpy as np
import pandas as pd

from tests.test_plots import GRADE_HP, frame, hip_kps
from utils.evaluation import metrics as M
from utils.evaluation import tables as T
from utils.pipelines.kfold_predict import summarize_folds

NOTE = "fold {}: no hip detected; the detector is undertrained or the data differ"


def undetected_frame(n=6):
    """Predictions of a fold where YOLO found nothing: every side undetected, keypoints NaN."""
    rows = []
    for i in range(n):
        gt = hip_kps(GRADE_HP[1], GRADE_HP[2], 22, 48)
        rows.append(M.prediction_row(f"u{i}", np.full_like(gt, np.nan), "ihdi12", gt_kps=gt,
                                     pred_boxes={"left": None, "right": None},
                                     gt_boxes={"left": [255, 425, 450, 580], "right": [550, 420, 745, 585]},
                                     det_conf={"left": None, "right": None}))
    return pd.DataFrame(rows)


def test_folds_without_detections_from_real_fold_metrics():
    good, empty = M.evaluate(frame(8)), M.evaluate(undetected_frame())
    assert empty["detection"]["pooled"]["recall"] == 0 and good["detection"]["pooled"]["recall"] == 1
    assert T.folds_without_detections([good, empty, good]) == [2]
    assert T.folds_without_detections([good, empty], fold_ids=[3, 5]) == [5]
    assert T.folds_without_detections([good, {"ai/pooled/mae": 2.0}]) == []   # no detection metric: not flagged
    assert T.folds_without_detections([{"detection/pooled/recall": 0.5}]) == []


def test_write_kfold_summary_warns_and_footnotes(tmp_path, caplog):
    folds = [M.evaluate(frame(8, seed=1)), M.evaluate(undetected_frame()), M.evaluate(frame(8, seed=2))]
    with caplog.at_level(logging.WARNING, logger="hipkp"):
        paths = T.write_kfold_summary(folds, tmp_path, fold_ids=[1, 2, 4])
    assert [r.getMessage() for r in caplog.records] == [NOTE.format(2)]
    md = paths["md"].read_text()
    assert md.rstrip().endswith(f"**Note:** {NOTE.format(2)}.")
    tex = paths["tex"].read_text()
    note = r"\par\smallskip{\footnotesize Note: " + NOTE.format(2) + ".}"
    assert note in tex and tex.index(r"\end{tabular}") < tex.index(note) < tex.index(r"\end{table}")


def test_no_note_when_every_fold_detected(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hipkp"):
        paths = T.write_kfold_summary([M.evaluate(frame(8, seed=s)) for s in (1, 2)], tmp_path)
    assert not caplog.records
    assert "Note:" not in paths["md"].read_text() and "Note:" not in paths["tex"].read_text()


def test_summarize_folds_names_the_fold_by_its_number(tmp_path, caplog):
    for i, df in ((1, frame(6)), (3, undetected_frame())):
        d = tmp_path / f"fold{i}"
        d.mkdir()
        df.to_csv(d / "predictions.csv", index=False)
        (d / "metrics.json").write_text(json.dumps(M.evaluate(df)))
    with caplog.at_level(logging.WARNING, logger="hipkp"):
        s = summarize_folds(tmp_path, k=3)
    msgs = [r.getMessage() for r in caplog.records]
    assert NOTE.format(3) in msgs and s["folds"] == [1, 3]
    assert NOTE.format(3) in (tmp_path / "kfold_summary.md").read_text()
