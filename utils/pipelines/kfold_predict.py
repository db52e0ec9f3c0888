"""K-fold evaluation: run ``utils.pipelines.predict.run_prediction`` on each fold's test split, then
write the paper table (mean ± SD across folds) and pooled out-of-fold metrics and plots. Each
fold's models come from path templates with ``{fold}``, or from a per-fold pipeline manifest
(``utils.pipelines.manifest``)."""
from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence

from utils.config import PredictConfig
from utils.errors import UserError
from utils.pipelines.folds import fill_template as _fill, parse_folds
from utils.evaluation.agreement import paired_ai_error_test
from utils.evaluation.metrics import evaluate_predictions, read_predictions, to_jsonable, write_metrics_csv
from utils.evaluation.plots import plot_all
from utils.evaluation.tables import compare_experiments, write_comparison, write_kfold_summary
from utils.pipelines.manifest import load_pipeline, prediction_options
from utils.pipelines.predict import run_prediction
from utils.pipelines.predict_full_image import run_full_image_prediction

log = logging.getLogger("hipkp")


def fold_test_dir(data_root, fold: int, test_subdir: Optional[str] = None) -> Path:
    """The test data of ``fold``: ``data_root/fold{i}`` (kfold_split.py's layout) or a subfolder."""
    d = Path(data_root) / f"fold{fold}"
    if test_subdir:
        d = d / test_subdir
    if not d.is_dir():
        raise UserError(f"fold {fold} test data not found: {d} (run kfold_split.py first)")
    return d


def run_kfold_prediction(data_root, output_dir, k: int = 5, folds: Optional[str] = None,
                         kp_left_tpl: Optional[str] = None, kp_right_tpl: Optional[str] = None,
                         yolo_tpl: Optional[str] = None, use_gt_box: bool = PredictConfig.use_gt_box,
                         test_subdir: Optional[str] = None, summarize_only: bool = False,
                         pipeline: str = "hip_crop", refine_tpl: Optional[str] = None,
                         pipeline_tpl: Optional[str] = None, **predict_kwargs) -> Dict:
    """Predict each fold's test split into ``output_dir/fold{i}`` and summarise all folds found.
    ``pipeline`` "full_image": ``kp_left_tpl`` names each fold's full-image checkpoint (no YOLO).
    ``refine_tpl``: each fold's refiner(s) (``refine_path``: a template, or a list of them such as a
    roof and a femur refiner), two-stage pipeline only. ``pipeline_tpl``: each fold's pipeline
    manifest (a template with {fold}); the templates given and ``predict_kwargs`` override its
    models and settings."""

    out = Path(output_dir)
    if not summarize_only:
        if not Path(data_root).is_dir():
            raise UserError(f"--data_root not found: {data_root}")
        refine_tpls = [refine_tpl] if isinstance(refine_tpl, str) else list(refine_tpl or [])
        if refine_tpls and pipeline == "full_image":
            raise UserError("--refine_tpl refines the two-stage model's points: it needs --pipeline hip_crop")
        if pipeline_tpl and "{fold}" not in str(pipeline_tpl):
            raise UserError(f"--pipeline {pipeline_tpl!r}: a per-fold manifest template needs {{fold}}, e.g. "
                            "weights/cv_fold{fold}_pipeline.json (or give hip_crop or full_image)")
        fold_list = parse_folds(folds, k)
        # every fold's manifest read (and checked) before the first fold runs
        manifests = {i: load_pipeline(_fill(pipeline_tpl, i)) for i in fold_list} if pipeline_tpl else {}
        for i in fold_list:
            print(f"\n=== fold {i}/{k} ===")
            if pipeline == "full_image":
                keep = inspect.signature(run_full_image_prediction).parameters   # its settings, not YOLO's
                kw = {key: v for key, v in predict_kwargs.items() if key in keep}
                run_full_image_prediction(fold_test_dir(data_root, i, test_subdir), out / f"fold{i}",
                                          kp_path=_fill(kp_left_tpl, i), **kw)
                continue
            models = {"kp_left_path": _fill(kp_left_tpl, i), "kp_right_path": _fill(kp_right_tpl, i),
                      "yolo_weights": _fill(yolo_tpl, i), "refine_path": [_fill(t, i) for t in refine_tpls] or None}
            given = dict(predict_kwargs, use_gt_box=use_gt_box)
            if pipeline_tpl:   # the manifest's models, except those given as templates
                models = {key: v for key, v in models.items() if v is not None}
                if not use_gt_box:   # not asked for: the manifest says (a manifest without a detector)
                    given.pop("use_gt_box")
            kw = prediction_options(manifests.get(i), {**models, **given})
            run_prediction(fold_test_dir(data_root, i, test_subdir), out / f"fold{i}", **kw)
    return summarize_folds(out, k)


def summarize_folds(output_dir, k: int) -> Dict:
    """Collect ``fold{i}/metrics.json`` and ``fold{i}/predictions.csv`` for every fold present."""
    import pandas as pd


    out = Path(output_dir)
    present = [i for i in range(1, k + 1) if (out / f"fold{i}" / "metrics.json").is_file()]
    if not present:
        raise UserError(f"no fold results (fold*/metrics.json) in {out}")
    fold_metrics = [json.loads((out / f"fold{i}" / "metrics.json").read_text()) for i in present]
    frames = []
    for i in present:
        df = read_predictions(out / f"fold{i}" / "predictions.csv")
        frames.append(pd.concat([pd.Series(i, index=df.index, name="fold"), df], axis=1))
    pooled = pd.concat(frames, ignore_index=True)
    pooled.to_csv(out / "oof_predictions.csv", index=False)
    pooled_metrics = evaluate_predictions(pooled)
    (out / "oof_metrics.json").write_text(json.dumps(pooled_metrics, indent=2))
    write_metrics_csv(out / "oof_metrics.csv", pooled_metrics)
    paths = write_kfold_summary(fold_metrics, out, title=f"{len(present)}-fold cross-validation "
                                                         f"(folds {', '.join(map(str, present))})",
                                fold_ids=present, pooled=pooled_metrics)
    plot_all(pooled, out / "oof_plots")
    missing = sorted(set(range(1, k + 1)) - set(present))
    if missing:
        log.warning("folds %s have no results yet; the summary covers folds %s", missing, present)
    print(paths["md"].read_text())
    return {"folds": present, "missing": missing, "paths": {k_: str(v) for k_, v in paths.items()},
            "oof_metrics": pooled_metrics}


def compare_results(result_dirs: Sequence[str], output_dir, names: Optional[Sequence[str]] = None) -> Dict:
    """One table, a row per experiment, from k-fold result folders (kfold_summary.csv) or single
    prediction folders (metrics.json)."""

    exps = {}
    for j, d in enumerate(result_dirs):
        d = Path(d)
        name = names[j] if names and j < len(names) else d.name
        if (d / "kfold_summary.csv").is_file():
            exps[name] = d / "kfold_summary.csv"
        elif (d / "metrics.json").is_file():
            exps[name] = json.loads((d / "metrics.json").read_text())
        else:
            raise UserError(f"{d} has neither kfold_summary.csv nor metrics.json")
    df = compare_experiments(exps)
    paired = paired_tests(result_dirs, list(exps))
    notes = [f"{k}: {v['n_pairs']} hips in both, AI MAE {v['mae_a']:.2f}° vs {v['mae_b']:.2f}°, "
             f"{v['test']['name'] or 'no test'} p = {_p(v['test'].get('p'))}" for k, v in paired.items()]
    paths = write_comparison(df, output_dir, title="Comparison of experiments", notes=notes)
    if paired:
        paths["paired"] = Path(output_dir) / "paired_tests.json"
        paths["paired"].write_text(json.dumps(to_jsonable(paired), indent=2))
    print(paths["md"].read_text())
    return {"paths": {k: str(v) for k, v in paths.items()}, "paired": paired}


def _p(p) -> str:
    return "n/a" if p is None or p != p else f"{p:.4g}"


def paired_tests(result_dirs: Sequence[str], names: Sequence[str]) -> Dict[str, Dict]:
    """A paired test of the per-hip AI errors for each pair of experiments that share hips
    (matched by image stem and side), from their oof_predictions.csv or predictions.csv."""
    preds = {}
    for name, d in zip(names, result_dirs):
        f = next((Path(d) / n for n in ("oof_predictions.csv", "predictions.csv") if (Path(d) / n).is_file()), None)
        if f is not None:
            preds[name] = read_predictions(f)
    keys = list(preds)
    out = {f"{a} vs {b}": paired_ai_error_test(preds[a], preds[b]) for i, a in enumerate(keys) for b in keys[i + 1:]}
    return {k: v for k, v in out.items() if v["n_pairs"]}
