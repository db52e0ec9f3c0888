"""K-fold training of the keypoint model: ``utils.pipelines.train.train`` once per fold.

Layout of ``data_root`` is kfold_split.py's: ``fold1/`` ... ``foldK/``, each a dataset folder.

Modes
- ``outer_inner`` (default): fold i is the test set; the other folds are pooled and split
  into an inner train/val set (``inner_val_ratio``, ``inner_seed``), stratified by the worse
  hip's IHDI grade and kept whole per patient when metadata has ``patient_id``.
- ``val_as_test``: fold i is the validation set, the other folds train.

The inner split is written once per fold as image lists (``{data_root}/inner/fold{i}_train.txt``
and ``_val.txt``): nothing is copied, it is reproducible and can be inspected. A fold whose
result file exists is skipped unless ``overwrite``, but only when its saved configuration has
the requested settings (``fold_settings``); a finished fold with other settings is refused with
one line naming them. ``summarize_only`` just collects results, so folds can run as separate
jobs and be summarised afterwards.

Under torchrun every process runs this function: the process group is joined once, before the
first fold, and each fold's ``train`` uses it. Rank 0 writes the fold lists first (the others
then read them), the per-fold config/result files and the summary.

Outputs per fold (``exp = {exp_name}_fold{i}``): ``{out}/{exp}_best.pth`` / ``_last.pth``,
``{out}/{exp}_config.json`` (the fully resolved configuration), ``{out}/{exp}_result.json``;
logs from ``train``, TensorBoard's in ``{log_dir}/tb/{exp_name}/fold{i}`` (one run per fold). Summary: ``{log_dir}/{exp_name}_kfold_summary.csv`` / ``.txt`` and
``{log_dir}/{exp_name}_kfold_curves.png``.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from utils.config import TrainConfig
from utils.errors import UserError
from utils.evaluation.plots import plot_kfold_curves
from datasets.formats import list_images, load_image_list
from datasets.splits import ratio_assign, worse_grades
from utils.pipelines.distributed import init_distributed, is_main_process, main_process_first
from utils.pipelines.folds import parse_folds
from utils.pipelines.train import default_exp_name, resolve_config, select_device, train

log = logging.getLogger("hipkp")

MODES = ("outer_inner", "val_as_test")
SUMMARY_COLUMNS = ("fold", "best_epoch", "train_loss", "val_loss", "val_nme", "val_px_error", "epochs_run")


def _fold_dirs(data_root: Path, k: int) -> List[Path]:
    dirs = [data_root / f"fold{i}" for i in range(1, k + 1)]
    missing = [str(d) for d in dirs if not (d / "images").is_dir()]
    if missing:
        raise UserError(f"k-fold data incomplete: {', '.join(missing[:3])} not found or without images/ "
                        f"(run kfold_split.py --k {k} first)")
    return dirs


def _list_images(fold_dir: Path) -> List[Path]:
    return [p.resolve() for p in list_images(fold_dir / "images")]


def write_fold_lists(data_root, fold: int, k: int, mode: str = "outer_inner", inner_val_ratio: float = 0.1,
                     inner_seed: int = 42) -> Dict[str, str]:
    """Image lists of one fold's train and val sets (written once; reused when present).

    Returns ``{"train": path, "val": path, "test": path-or-folder}``.
    """

    if mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    root = Path(data_root)
    dirs = _fold_dirs(root, k)
    test_dir = dirs[fold - 1]
    others = [p for j, d in enumerate(dirs) if j != fold - 1 for p in _list_images(d)]
    inner = root / "inner"
    inner.mkdir(exist_ok=True)
    if mode == "val_as_test":
        train_txt = inner / f"fold{fold}_train_valastest.txt"
        if not train_txt.exists():
            train_txt.write_text("\n".join(map(str, others)) + "\n")
        return {"train": str(train_txt), "val": str(test_dir), "test": str(test_dir)}

    train_txt, val_txt = inner / f"fold{fold}_train.txt", inner / f"fold{fold}_val.txt"
    meta_txt = inner / f"fold{fold}_inner.json"
    settings = {"fold": fold, "k": k, "inner_val_ratio": inner_val_ratio, "inner_seed": inner_seed}
    if train_txt.exists() and val_txt.exists() and meta_txt.exists():
        if json.loads(meta_txt.read_text()).get("settings") == settings:
            return {"train": str(train_txt), "val": str(val_txt), "test": str(test_dir)}
        raise UserError(f"{meta_txt} was written with other inner-split settings; "
                        "delete data_root/inner/ or use the same --inner_val_ratio/--inner_seed")
    if not 0 < inner_val_ratio < 1:
        raise UserError(f"--inner_val_ratio must be between 0 and 1, got {inner_val_ratio}")
    pool_txt = inner / f".fold{fold}_pool.txt"
    pool_txt.write_text("\n".join(map(str, others)) + "\n")
    records = load_image_list(pool_txt)
    pool_txt.unlink()
    strata = worse_grades(records)
    pids = [r.meta.get("patient_id") or None for r in records]
    groups = [p or f"__image__:{r.image_path}" for p, r in zip(pids, records)] if any(pids) else None
    assign = ratio_assign(len(records), {"train": 1 - inner_val_ratio, "val": inner_val_ratio},
                          inner_seed, strata=strata, groups=groups)
    tr = [str(r.image_path) for r, a in zip(records, assign) if a == "train"]
    va = [str(r.image_path) for r, a in zip(records, assign) if a == "val"]
    if not va or not tr:
        raise UserError(f"fold {fold}: the inner split left an empty train or val set ({len(tr)}/{len(va)} images)")
    train_txt.write_text("\n".join(tr) + "\n")
    val_txt.write_text("\n".join(va) + "\n")
    meta_txt.write_text(json.dumps({"settings": settings, "n_train": len(tr), "n_val": len(va),
                                    "stratified": strata is not None, "grouped": groups is not None}, indent=2))
    return {"train": str(train_txt), "val": str(val_txt), "test": str(test_dir)}


# Settings a finished fold may have been trained with differently and still count as the same run:
# where the data lists live, the machine, and how the run reported itself.
RUN_ONLY = ("data_dir", "train_dir", "val_dir", "strict", "device", "amp", "compile", "workers", "out", "log_dir",
            "resume", "progress", "tensorboard", "tb_name", "tb_image_every")
FOLD_SETTINGS = ("k", "mode", "inner_val_ratio", "inner_seed")


def fold_settings(cfg, **kfold) -> Dict[str, object]:
    """What decides a fold's model: every training setting except ``RUN_ONLY``, and the k-fold
    settings ``FOLD_SETTINGS`` (from a requested config, or a finished fold's saved one)."""
    flat = TrainConfig.from_flat(cfg, strict=False).to_flat()
    out = {key: v for key, v in flat.items() if key not in RUN_ONLY and key != "exp_name"}
    out.update({key: kfold.get(key, dict(cfg).get(key)) for key in FOLD_SETTINGS})
    return out


def check_finished_fold(config_path: Path, requested: Dict[str, object], fold: int) -> None:
    """Refuse to skip a finished fold that was trained with other settings than ``requested``
    (``fold_settings``): one line naming each difference."""
    if not config_path.is_file():
        raise UserError(f"fold {fold} finished, but its settings were not saved ({config_path} is missing): "
                        "use --overwrite to retrain it, or another --exp_name")
    try:
        saved = fold_settings(json.loads(config_path.read_text()))
    except (ValueError, UserError) as e:
        raise UserError(f"fold {fold}: unreadable saved settings {config_path} ({e})") from None
    diff = [f"{key} {saved[key]!r} -> {requested[key]!r}" for key in requested if saved.get(key) != requested[key]]
    if diff:
        raise UserError(f"fold {fold} finished with other settings ({'; '.join(diff)}; saved in {config_path}): "
                        "use another --exp_name, or --overwrite to retrain it")


def run_kfold_training(cfg: Dict, data_root, k: int = 5, mode: str = "outer_inner", folds: Optional[str] = None,
                       inner_val_ratio: float = 0.1, inner_seed: int = 42, summarize_only: bool = False,
                       overwrite: bool = False) -> Dict:
    """Train the requested folds and write the summary of all finished folds. A finished fold is
    skipped when its saved settings are the requested ones (``fold_settings``), and refused with
    one line naming the differences otherwise (``overwrite``: retrained)."""

    cfg = resolve_config(cfg)
    if not summarize_only:
        init_distributed(select_device(cfg["device"]))  # under torchrun: once, for all folds; else a no-op
    main = is_main_process()
    base = cfg.get("exp_name") or default_exp_name(cfg)
    out, logs = Path(cfg["out"]), Path(cfg["log_dir"])
    if not summarize_only:
        if not Path(data_root).is_dir():
            raise UserError(f"--data_root not found: {data_root} (run kfold_split.py first)")
        requested = fold_settings(cfg, k=k, mode=mode, inner_val_ratio=inner_val_ratio, inner_seed=inner_seed)
        fold_list = parse_folds(folds, k)
        for i in fold_list:   # every finished fold checked before any fold trains
            if (out / f"{base}_fold{i}_result.json").exists() and not overwrite:
                check_finished_fold(out / f"{base}_fold{i}_config.json", requested, i)
        for i in fold_list:
            exp = f"{base}_fold{i}"
            result_path = out / f"{exp}_result.json"
            if result_path.exists() and not overwrite:
                if main:
                    print(f"fold {i}: already finished with the same settings ({result_path}); skipping "
                          "(use --overwrite to retrain)")
                continue
            with main_process_first():  # rank 0 writes the lists, the others read them
                lists = write_fold_lists(data_root, i, k, mode, inner_val_ratio, inner_seed)
            # TensorBoard: {log_dir}/tb/{exp_name}/fold{i}, so `tensorboard --logdir logs/tb` overlays the folds
            fold_cfg = dict(cfg, train_dir=lists["train"], val_dir=lists["val"], exp_name=exp,
                            tb_name=f"{cfg.get('tb_name') or base}/fold{i}")
            if overwrite:
                fold_cfg["resume"] = None
            if main:
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{exp}_config.json").write_text(json.dumps(
                    dict(fold_cfg, fold=i, k=k, mode=mode, inner_val_ratio=inner_val_ratio, inner_seed=inner_seed,
                         test_data=lists["test"]), indent=2, default=str))
                print(f"\n=== fold {i}/{k} ({mode}): train {lists['train']}  val {lists['val']} ===")
            res = train(fold_cfg)
            if main:
                result = {"fold": i, "exp_name": exp, "best_metrics": res.get("best_metrics"),
                          "epochs_run": res.get("epochs_run"), "paths": res.get("paths"), "test_data": lists["test"]}
                result_path.write_text(json.dumps(result, indent=2, default=str))
    if not main:
        return {}
    return summarize_kfold(base, k, out, logs)


def _read_log(path: Path) -> List[Dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def summarize_kfold(base: str, k: int, out_dir, log_dir) -> Dict:
    """Per-fold best epoch (lowest val pixel error) with its losses and errors, plus mean ± SD."""
    out, logs = Path(out_dir), Path(log_dir)
    rows, curves = [], {}
    for i in range(1, k + 1):
        exp = f"{base}_fold{i}"
        if not (out / f"{exp}_result.json").exists():
            continue
        hist = _read_log(logs / f"{exp}_training_log.csv")
        val = [h for h in hist if math.isfinite(h.get("val_px_error", math.nan))]
        if not val:
            continue
        best = min(val, key=lambda h: h["val_px_error"])
        rows.append({"fold": i, "best_epoch": int(best["epoch"]), "train_loss": best["train_loss"],
                     "val_loss": best["val_loss"], "val_nme": best["val_nme"],
                     "val_px_error": best["val_px_error"], "epochs_run": int(max(h["epoch"] for h in hist))})
        curves[i] = val
    if not rows:
        raise UserError(f"no finished folds for {base} in {out} (looked for {base}_fold*_result.json)")
    logs.mkdir(parents=True, exist_ok=True)
    metrics = [c for c in SUMMARY_COLUMNS if c not in ("fold", "best_epoch", "epochs_run")]
    stats = {m: (float(np.mean([r[m] for r in rows])),
                 float(np.std([r[m] for r in rows], ddof=1)) if len(rows) > 1 else math.nan) for m in metrics}
    csv_path, txt_path = logs / f"{base}_kfold_summary.csv", logs / f"{base}_kfold_summary.txt"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SUMMARY_COLUMNS)
        for r in rows:
            w.writerow([r[c] if c in ("fold", "best_epoch", "epochs_run") else f"{r[c]:.6g}" for c in SUMMARY_COLUMNS])
        w.writerow(["mean", "", ""] + [f"{stats[m][0]:.6g}" for m in metrics] + [""])
        w.writerow(["sd", "", ""] + [f"{stats[m][1]:.6g}" for m in metrics] + [""])
    lines = [f"{base}: {len(rows)} of {k} folds finished (folds {', '.join(str(r['fold']) for r in rows)})", "",
             f"{'fold':>5} {'best ep':>8} {'train loss':>11} {'val loss':>9} {'val NME':>8} {'val px err':>11}"]
    for r in rows:
        lines.append(f"{r['fold']:>5} {r['best_epoch']:>8} {r['train_loss']:>11.4f} {r['val_loss']:>9.4f} "
                     f"{r['val_nme']:>8.4f} {r['val_px_error']:>11.3f}")
    lines.append("mean ± SD" + "".join(f"  {m} {stats[m][0]:.4g} ± {stats[m][1]:.2g}" for m in metrics))
    txt = "\n".join(lines) + "\n"
    txt_path.write_text(txt)
    curves_path = logs / f"{base}_kfold_curves.png"
    plot_kfold_curves(curves, curves_path, base)
    print(txt)
    return {"rows": rows, "stats": stats, "paths": {"csv": str(csv_path), "txt": str(txt_path),
                                                     "curves": str(curves_path)}}
