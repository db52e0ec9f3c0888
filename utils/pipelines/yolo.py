"""Training the YOLO hip detector (one split, or several k-fold splits).

``train_detector`` is the one training function; ``train_kfold`` calls it once per fold.
Everything runs offline (see ``utils.pipelines.yolo_env``): the model is built from a YAML or a local
``.pt``, the data YAML is checked and rewritten with absolute local paths before Ultralytics
sees it, and a name that would need a download is refused with a ``UserError``.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml

from datasets.formats import CLASS_NAMES, list_images
from utils.devices import yolo_device
from utils.errors import UserError
from utils.fileio import atomic_write, one_line
from utils.pipelines.folds import parse_folds
from utils.pipelines.detection import YoloDetector, evaluate_detector
from utils.pipelines.yolo_env import ultralytics, yolo_class

log = logging.getLogger("hipkp")

# Augmentation defaults for AP pelvis films. Horizontal flips stay off: they would turn a
# LeftHip into a RightHip while keeping its label.
# hsv_v (brightness), scale and translate keep Ultralytics' own defaults, exposed as flags so
# that a run on phantoms can widen them (domain randomisation for real films).
AUGMENT_DEFAULTS = {"fliplr": 0.0, "flipud": 0.0, "degrees": 5.0, "shear": 0.0,
                    "perspective": 0.0, "mosaic": 0.0, "mixup": 0.0,
                    "hsv_v": 0.4, "scale": 0.5, "translate": 0.1}
METRIC_KEYS = ("mAP50", "mAP50-95", "precision", "recall")
DETECT_CONF = 0.25  # confidence of the pipeline's detector (YoloDetector's default)
MIN_TOP1_RECALL = 0.5  # below this a trained detector is reported as not usable (recall_warning)


# ---------------------------------------------------------------- CLI arguments
def add_training_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training flags shared by train_yolo.py and kfold_train_yolo.py (the original study's names)."""
    p.add_argument("--model", default="yolo12n.yaml",
                   help="model YAML (yolo12n.yaml, yolo12s.yaml, ...: trained from scratch) or a local .pt to fine-tune")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default=None,
                   help='"cpu", "0", or "0,1" (multi-GPU, Ultralytics DDP); default or "auto": "0" if CUDA is available, else "cpu"')
    p.add_argument("--workers", type=int, default=8, help="data loader workers")
    p.add_argument("--project", default="runs/train", help="folder of the Ultralytics run folders")
    p.add_argument("--name", default=None, help="run name; also the weights file name (default: hip_<model stem>)")
    p.add_argument("--pretrained", default=None, metavar="PT",
                   help="local .pt whose weights initialise the model (matching layers only)")
    p.add_argument("--resume", action="store_true", help="resume <project>/<name>/weights/last.pt")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--patience", type=int, default=100, help="epochs without improvement before stopping")
    p.add_argument("--nbs", type=int, default=64,
                   help="nominal batch size: gradients are accumulated to this many images per optimiser step "
                        "(Ultralytics' default 64; set it to --batch on small data sets for more steps per epoch)")
    p.add_argument("--exist_ok", action="store_true", help="reuse <project>/<name> instead of making <name>2, ...")
    for k, v in AUGMENT_DEFAULTS.items():
        extra = " (must stay 0: a horizontal flip swaps LeftHip and RightHip)" if k == "fliplr" else ""
        p.add_argument(f"--{k}", type=float, default=v, help=f"Ultralytics augmentation '{k}'{extra}")
    p.add_argument("--plots", action="store_true", help="let Ultralytics draw its training plots")
    p.add_argument("--no_val", dest="val", action="store_false",
                   help="validate only after the last epoch (Ultralytics' val=False), not after every one: the "
                        "weights copied are then the last epoch's; saves a validation pass per epoch")
    p.add_argument("--weights_dir", default="weights", help="where the best weights are copied as <name>.pt")
    p.add_argument("--strict", action="store_true",
                   help=f"exit with an error (code 2) when the final detector's top-1 recall of a side on the "
                        f"validation images is below {MIN_TOP1_RECALL} (without it: a warning)")
    return p


def check_augment(augment: Dict[str, float]) -> Dict[str, float]:
    aug = {**AUGMENT_DEFAULTS, **{k: float(v) for k, v in augment.items() if v is not None}}
    if aug["fliplr"] > 0:
        raise UserError(f"--fliplr {aug['fliplr']:g} refused: a horizontal flip turns the image-left hip into "
                        "the image-right one while keeping its LeftHip label; keep --fliplr 0")
    for k, v in aug.items():
        if v < 0:
            raise UserError(f"--{k} must be >= 0, got {v:g}")
    return aug


# ---------------------------------------------------------------- data YAML
def _as_list(v) -> List[str]:
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]


def split_images(sources: Sequence[str]) -> List[Path]:
    """Image files of a split given as folders and/or .txt lists of image paths."""
    out: List[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out += list_images(p)
        elif p.is_file():
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
            out += [Path(ln) if Path(ln).is_absolute() else (p.parent / ln).resolve() for ln in lines]
    return out


def label_paths(images: Sequence[Path]) -> List[Path]:
    """Where Ultralytics reads each image's labels: the last ``/images/`` becomes ``/labels/``."""

    ultralytics()
    from ultralytics.data.utils import img2label_paths

    return [Path(p) for p in img2label_paths([str(i) for i in images])]


def load_data_yaml(path) -> Dict:
    """Check an Ultralytics data YAML and return it with absolute, existing local paths.

    Refused (``UserError``): a missing file, a ``download:`` key, class names other than
    LeftHip/RightHip, a train/val entry that does not exist or holds no images, and images
    without label files. A relative ``path:`` is taken relative to the YAML's folder (or to the
    working folder, as Ultralytics does, when only that exists); without ``path:`` the YAML's
    folder is the dataset root.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data YAML not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable YAML file ({one_line(e, with_type=False)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with train/val/names")
    if "download" in data:
        raise UserError(f"{path}: has a 'download:' key; this toolkit never downloads data. "
                        "Remove the key and point train/val at local folders")
    names = data.get("names")
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else names
    if [str(n) for n in (names or [])] != list(CLASS_NAMES):
        raise UserError(f"{path}: names must be {list(CLASS_NAMES)} (class 0 LeftHip, 1 RightHip), got {names}")
    root = Path(str(data.get("path") or "."))
    if not root.is_absolute():
        near_yaml = (path.parent / root).resolve()
        root = near_yaml if near_yaml.exists() or not root.exists() else root.resolve()
    out = {"path": str(root), "names": {i: n for i, n in enumerate(CLASS_NAMES)}, "nc": len(CLASS_NAMES)}
    for split in ("train", "val", "test"):
        if not data.get(split):
            if split == "test":
                continue
            raise UserError(f"{path}: no '{split}:' entry")
        sources = [str(root / s) if not Path(s).is_absolute() else s for s in _as_list(data[split])]
        for s in sources:
            if not Path(s).exists():
                raise UserError(f"{path}: {split} images not found: {s}")
        images = split_images(sources)
        if not images:
            raise UserError(f"{path}: no images in the {split} split ({', '.join(sources)})")
        labels = label_paths(images)
        if not any(lab.is_file() for lab in labels):
            hint = labels[0].parent
            raise UserError(f"{path}: no YOLO label files for the {split} images (Ultralytics reads "
                            f"{hint}/<stem>.txt, the 'images' folder renamed 'labels')")
        out[split] = sources if isinstance(data[split], (list, tuple)) else sources[0]
    return out


def write_data_yaml(data: Dict, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


# ---------------------------------------------------------------- model
def check_model_spec(model: str) -> str:
    """A model YAML (local or one Ultralytics ships) or an existing local .pt; never a download."""
    m = str(model)
    if "://" in m:
        raise UserError(f"--model {m}: URLs are not supported (nothing is downloaded); give a local file")
    suffix = Path(m).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return m
    if suffix == ".pt":
        if not Path(m).is_file():
            raise UserError(f"--model {m}: weights file not found (nothing is downloaded; use a model YAML "
                            "such as yolo12n.yaml to train from scratch, or a local .pt)")
        return m
    raise UserError(f"--model {m}: expected a model YAML (e.g. yolo12n.yaml) or a local .pt file")


def build_yolo(model: str):

    try:
        return yolo_class()(model, task="detect")
    except FileNotFoundError as e:
        raise UserError(f"--model {model}: {one_line(e, with_type=False)}") from None
    except Exception as e:  # a corrupt or foreign .pt: one line, not a traceback
        if not str(model).lower().endswith(".pt"):
            raise
        raise UserError(f"cannot load {model}: {one_line(e)}") from None


# ---------------------------------------------------------------- metrics
def summarize_metrics(metrics) -> Dict:
    """Ultralytics ``DetMetrics`` -> {"mAP50", "mAP50-95", "precision", "recall", "per_class"}."""
    if metrics is None or not hasattr(metrics, "box"):
        return {}
    box = metrics.box
    out = {"mAP50": float(box.map50), "mAP50-95": float(box.map),
           "precision": float(box.mp), "recall": float(box.mr), "per_class": {}}
    for i, c in enumerate(metrics.ap_class_index):
        p, r, ap50, ap = metrics.class_result(i)
        out["per_class"][metrics.names[int(c)]] = {"precision": float(p), "recall": float(r),
                                                   "mAP50": float(ap50), "mAP50-95": float(ap)}
    return out


def format_table(rows: List[Dict], cols: Sequence[str]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def report(result: Dict) -> str:
    """Printable summary of one training: overall and per-class metrics, pipeline recall, weights."""
    m = result["metrics"]
    rows = [{"class": "all", **{k: m.get(k, float("nan")) for k in METRIC_KEYS}}]
    for name, pc in m.get("per_class", {}).items():
        rows.append({"class": name, **pc})
    det = result.get("detector", {})
    for row in rows[1:]:
        side = {"LeftHip": "left", "RightHip": "right"}.get(row["class"])
        if side in det:
            row["top1_recall@0.5"] = det[side]["recall"]
            row["top1_mean_iou"] = det[side]["mean_iou"]
    cols = ["class", *METRIC_KEYS] + (["top1_recall@0.5", "top1_mean_iou"] if det else [])
    return (f"validation metrics ({result['save_dir']}):\n" + format_table(rows, cols)
            + "\n(precision/recall: Ultralytics, at IoU 0.5 and its best-F1 confidence; top1_*: the "
              f"highest-confidence box per side at conf {DETECT_CONF}, as the pipeline uses it)"
            + f"\nbest weights: {result['weights']}")


# ---------------------------------------------------------------- training
def keep_cpu_threads(yolo) -> None:
    """Keep torch's CPU thread count in the trainer that ``yolo.train`` creates. Ultralytics'
    ``select_device`` sets it to min(8, CPUs - 1) when the trainer starts: one thread on a
    2-core machine, half of it (bench/cpu_threads.py measures the difference). The trainer's
    ``on_pretrain_routine_start`` callback runs right after that and sets it back."""
    import torch

    n = torch.get_num_threads()
    yolo.add_callback("on_pretrain_routine_start", lambda trainer: torch.set_num_threads(n))


def train_detector(data, model: str = "yolo12n.yaml", epochs: int = 100, imgsz: int = 640,
                   batch: int = 8, device: Optional[str] = None, workers: int = 8,
                   project="runs/train", name: Optional[str] = None, pretrained: Optional[str] = None,
                   resume: bool = False, seed: int = 42, patience: int = 100, plots: bool = False,
                   weights_dir="weights", evaluate: bool = True, nbs: int = 64, exist_ok: bool = False,
                   val: bool = True, **augment) -> Dict:
    """Train the hip detector on one split and copy its best weights to ``<weights_dir>/<name>.pt``
    (``val`` False: validated after the last epoch only, so those are the last epoch's weights).

    Returns {"weights", "save_dir", "metrics" (see ``summarize_metrics``), "detector" (top-box
    recall per side on the val images, see ``utils.pipelines.detection.evaluate_detector``)}.
    """
    unknown = set(augment) - set(AUGMENT_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown training options: {sorted(unknown)}")
    aug = check_augment(augment)
    name = name or f"hip_{Path(str(model)).stem}"
    project = Path(project).resolve()  # relative projects would land in Ultralytics' own runs_dir
    if epochs < 1 or imgsz < 32 or batch < 1:
        raise UserError(f"need epochs >= 1, imgsz >= 32 and batch >= 1 (got {epochs}, {imgsz}, {batch})")
    if pretrained is not None and not Path(pretrained).is_file():
        raise UserError(f"--pretrained {pretrained}: weights file not found (nothing is downloaded)")
    device = yolo_device(device)
    amp = device.lower() not in ("cpu", "mps")  # on CUDA Ultralytics' AMP check decides

    if resume:
        last = project / name / "weights" / "last.pt"
        if not last.is_file():
            raise UserError(f"--resume: no checkpoint at {last}")
        yolo = build_yolo(str(last))
        ckpt = yolo.ckpt or {}
        if ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None:  # stripped when a run completes
            raise UserError(f"--resume: {last} is from a finished run; nothing to resume")
        keep_cpu_threads(yolo)
        yolo.train(resume=True, device=device, workers=workers)
    else:
        data_abs = load_data_yaml(data)
        model = check_model_spec(model)
        data_file = write_data_yaml(data_abs, project / f"{name}.data.yaml")
        yolo = build_yolo(model)
        kwargs = dict(data=str(data_file), epochs=epochs, imgsz=imgsz, batch=batch, device=device,
                      workers=workers, project=str(project), name=name, seed=seed, deterministic=True,
                      patience=patience, amp=amp, plots=plots, nbs=nbs, exist_ok=exist_ok, val=bool(val), **aug)
        if pretrained:
            kwargs["pretrained"] = str(pretrained)
        log.info("training %s on %s (device %s, amp %s)", model, data, device, amp)
        keep_cpu_threads(yolo)
        yolo.train(**kwargs)

    trainer = yolo.trainer
    best = trainer.best if Path(trainer.best).is_file() else trainer.last
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    dst = weights_dir / f"{name}.pt"
    shutil.copyfile(best, dst)
    result = {"weights": str(dst), "save_dir": str(trainer.save_dir),
              "metrics": summarize_metrics(getattr(yolo, "metrics", None)), "detector": {}}
    if evaluate and os.environ.get("RANK", "-1") in ("-1", "0"):

        images = split_images(_as_list(trainer.data["val"]))
        det = YoloDetector(dst, device=device.split(",")[0], imgsz=trainer.args.imgsz, conf=DETECT_CONF)
        result["detector"] = evaluate_detector(det, images, label_paths(images))
    return result


def recall_warning(detector: Dict[str, Dict[str, float]], what: str = "the detector") -> Optional[str]:
    """One line when a side's top-1 recall (``evaluate_detector``) is below ``MIN_TOP1_RECALL``,
    saying what to try; None when both sides reach it (or nothing was evaluated)."""
    low = {s: r["recall"] for s, r in (detector or {}).items()
           if r.get("n") and not float(r["recall"]) >= MIN_TOP1_RECALL}
    if not low:
        return None
    found = ", ".join(f"{s} {v:.2f}" for s, v in low.items())
    return (f"{what} finds too few hips: top-1 recall {found} on the validation images (below {MIN_TOP1_RECALL}; "
            "prediction would leave those hips ungradable). Train longer (--epochs), on more films, or at a "
            "larger --imgsz (README, \"A 5-fold study, step by step\", has a small recipe that works)")


def train_one(data, strict: bool = False, **kwargs) -> Dict:
    """``train_detector`` and print its report (the body of train_yolo.py); then the recall guard
    (``recall_warning``): a warning, or with ``strict`` a ``UserError``."""
    result = train_detector(data, **kwargs)
    print(report(result))
    _guard([recall_warning(result.get("detector"))], strict)
    return result


def _guard(warnings: Sequence[Optional[str]], strict: bool) -> None:
    lines = [w for w in warnings if w]
    for w in lines:
        log.warning("%s", w)
    if lines and strict:
        raise UserError(lines[0] if len(lines) == 1 else f"{len(lines)} detectors find too few hips (see the "
                                                          f"warnings above); the first: {lines[0]}")


# ---------------------------------------------------------------- k-fold
def _merge_csv(path: Path, rows: List[Dict], cols: Sequence[str]) -> List[Dict]:
    """Write ``rows`` into the CSV, replacing earlier rows of the same folds (folds run as separate jobs)."""
    old = []
    if path.is_file():
        with open(path, newline="") as f:
            old = [r for r in csv.DictReader(f)]
    new_folds = {str(r["fold"]) for r in rows}
    merged = [r for r in old if str(r.get("fold")) not in new_folds] + rows
    merged.sort(key=lambda r: int(r["fold"]))
    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(cols), extrasaction="ignore")
        w.writeheader()
        w.writerows(merged)
    return merged


def train_kfold(data_tpl: str, k: int = 5, folds: Optional[str] = None, name: Optional[str] = None,
                model: str = "yolo12n.yaml", log_dir="logs", strict: bool = False, **kwargs) -> List[Dict]:
    """Train one detector per fold with ``train_detector``; weights ``<name>_fold{i}.pt``.

    Prints a per-fold table and merges it into ``<log_dir>/<name>_kfold_yolo.csv``; then the recall
    guard of each fold (``recall_warning``): warnings, or with ``strict`` a ``UserError``.
    Every requested fold is trained (none is skipped as finished).
    """
    if "{fold}" not in data_tpl:
        raise UserError(f"--data_tpl {data_tpl!r} must contain '{{fold}}', e.g. data_kfold/data_fold{{fold}}.yaml")
    fold_list = parse_folds(folds, k)
    name = name or f"hip_{Path(str(model)).stem}"
    for f in fold_list:  # fail before the first fold trains, not after it
        load_data_yaml(data_tpl.format(fold=f))
    rows, warnings = [], []
    for f in fold_list:
        res = train_detector(data_tpl.format(fold=f), model=model, name=f"{name}_fold{f}", **kwargs)
        warnings.append(recall_warning(res.get("detector"), f"fold {f}'s detector"))
        m = res["metrics"]
        row = {"fold": f, **{c: m.get(c, float("nan")) for c in METRIC_KEYS}, "weights": res["weights"]}
        for cls, pc in m.get("per_class", {}).items():
            row[f"recall_{cls}"] = pc["recall"]
        rows.append(row)
        print(f"fold {f}: " + ", ".join(f"{c} {row[c]:.4f}" for c in METRIC_KEYS) + f" -> {res['weights']}")
    cols = ["fold", *METRIC_KEYS, *(f"recall_{c}" for c in CLASS_NAMES), "weights"]
    csv_path = Path(log_dir) / f"{name}_kfold_yolo.csv"
    merged = _merge_csv(csv_path, rows, cols)
    table = [{c: (float(r[c]) if c in METRIC_KEYS else r[c]) for c in ("fold", *METRIC_KEYS)} for r in merged]
    if len(table) > 1:
        table.append({"fold": "mean", **{c: sum(r[c] for r in table) / len(table) for c in METRIC_KEYS}})
    print(f"k-fold detector metrics ({csv_path}):\n" + format_table(table, ["fold", *METRIC_KEYS]))
    _guard(warnings, strict)
    return rows
