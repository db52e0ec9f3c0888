"""A trained pipeline as one file: the pipeline manifest, ``weights/<name>_pipeline.json``.

A manifest names the models of a two-stage pipeline and the prediction settings chosen for
them, so that every consumer (predict_hip_crop_keypoints.py, the k-fold predictor, the review
app's pre-fill, export_onnx.py, the calibration and latency benches) runs the same pipeline
from one argument, ``--pipeline FILE``::

    {
      "format": "hipkp-pipeline",
      "version": 1,
      "detector": "demo_yolo.pt",
      "kp_left": ["demo_kp_best.pth"],
      "kp_right": [],
      "refiners": ["demo_roof_best.pth", "demo_femur_best.pth"],
      "settings": {"imgsz": null, "conf": 0.25, "min_conf": 0.25, "ai_samples": 200,
                   "ai_interval_scale": 0.5, "flip_test": false, "decode": null}
    }

- Paths are relative to the manifest's own folder (absolute paths are kept as they are).
  ``detector`` may be null (crop on ground-truth boxes: ``--use_gt_box``); ``kp_left`` /
  ``kp_right`` are lists (several paths: an ensemble); at least one keypoint model.
  ``refiners`` are run in the order of their stages (the roof, then the femur).
- ``settings`` holds ``utils.config.PredictConfig.manifest_settings()``; ``imgsz`` null means
  the detector's own training size. A setting left out takes ``PredictConfig``'s default.
- Everything else a model needs travels in its checkpoint (input size, crop margin, histogram
  equalisation, mean/std, codec, decode mode, layout, side, stage) or its detector file (input
  size, class names).

``load_pipeline(path)`` validates a manifest (one-line ``UserError`` for a missing file, a bad
key or a bad value); ``prediction_options(pipeline, given)`` is ``run_prediction``'s keyword
arguments: the manifest's models and settings with the explicitly given ones over them.
``write_pipeline(path, ...)`` writes one (``--write_pipeline FILE``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from utils.config import PredictConfig
from utils.errors import UserError
from utils.fileio import atomic_write_text

FORMAT = "hipkp-pipeline"
VERSION = 1
# manifest key -> run_prediction's keyword (a PredictConfig field)
MEMBERS = {"detector": "yolo_weights", "kp_left": "kp_left_path", "kp_right": "kp_right_path",
           "refiners": "refine_path"}
LISTS = ("kp_left", "kp_right", "refiners")
KEYS = ("format", "version", *MEMBERS, "settings")
FLAG = "--pipeline"


@dataclass
class Pipeline:
    """A loaded manifest: its file, its models (absolute paths, by run_prediction's keywords)
    and its settings (every ``PredictConfig.manifest_settings()`` key)."""
    path: Path
    models: Dict[str, object] = field(default_factory=dict)
    settings: Dict[str, object] = field(default_factory=dict)

    def predict_kwargs(self) -> Dict[str, object]:
        """``run_prediction``'s keyword arguments for this pipeline (no detector: crops on the
        ground-truth boxes, ``use_gt_box``)."""
        return {**self.models, **self.settings, "use_gt_box": self.models.get("yolo_weights") is None}


def _setting_fields() -> Dict[str, dataclasses.Field]:
    names = set(PredictConfig.manifest_settings())
    return {f.name: f for f in dataclasses.fields(PredictConfig) if f.name in names}


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _check_setting(where: str, name: str, value, f: dataclasses.Field):
    """``value`` of setting ``name`` as its field's type, or a one-line ``UserError``."""
    if value is None:
        if _default(f) is None:
            return None
        raise UserError(f"{where}: settings.{name} may not be null")
    if f.metadata["action"] == "bool" or isinstance(_default(f), bool):
        ok, typ = isinstance(value, bool), "true or false"
    elif f.metadata["type"] is int:
        ok, typ = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif f.metadata["type"] is float:
        ok, typ = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        ok, typ = isinstance(value, str), "a string"
    if not ok:
        raise UserError(f"{where}: settings.{name} must be {typ}, got {value!r}")
    return float(value) if f.metadata["type"] is float else value


def _as_list(where: str, key: str, value) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise UserError(f"{where}: {key} must be a path or a list of paths, got {value!r}")


def load_pipeline(path, flag: str = FLAG) -> Pipeline:
    """The manifest at ``path``, checked: its format and version, its keys, each model file (which
    must exist, relative to the manifest's folder) and each setting's type."""
    path = Path(path)
    where = f"{flag} {path}"
    if not path.is_file():
        raise UserError(f"{flag}: pipeline manifest not found: {path} (write one with "
                        "predict_hip_crop_keypoints.py --write_pipeline FILE)")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{where}: not a JSON pipeline manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{where}: not a pipeline manifest (expected \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{where}: \"version\" must be a positive integer, got {version!r}")
    if version > VERSION:
        raise UserError(f"{where}: manifest version {version} is newer than this toolkit reads ({VERSION})")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise UserError(f"{where}: settings must be an object, got {settings!r}")
    fields = _setting_fields()
    bad = sorted(set(settings) - set(fields))
    if bad:
        raise UserError(f"{where}: unknown setting(s) {', '.join(bad)} (known: {', '.join(fields)})")
    resolved = {name: (_check_setting(where, name, settings[name], f) if name in settings else _default(f))
                for name, f in fields.items()}
    base = path.resolve().parent
    models: Dict[str, object] = {}
    for key, kwarg in MEMBERS.items():
        value = data.get(key)
        if key == "detector":
            if value is not None and not (isinstance(value, str) and value):
                raise UserError(f"{where}: detector must be a path or null, got {value!r}")
            paths = [value] if value else []
        else:
            paths = _as_list(where, key, value)
        full = []
        for p in paths:
            q = Path(p) if Path(p).is_absolute() else base / p
            if not q.is_file():
                raise UserError(f"{where}: {key} file not found: {q}")
            full.append(str(q))
        models[kwarg] = (full[0] if full else None) if key == "detector" else (full or None)
    if not (models["kp_left_path"] or models["kp_right_path"]):
        raise UserError(f"{where}: names no keypoint model (kp_left and kp_right are both empty)")
    return Pipeline(path=path, models=models, settings=resolved)


def _relative(p, base: Path) -> str:
    """``p`` relative to the folder ``base`` (as written into a manifest there)."""
    q = Path(p).resolve()
    try:
        return Path(os.path.relpath(q, base)).as_posix()
    except ValueError:   # another drive (Windows): keep it absolute
        return str(q)


def manifest_dict(base, kp_left_path=None, kp_right_path=None, refine_path=None, yolo_weights=None,
                  **settings) -> Dict[str, object]:
    """The manifest of these models and settings, its paths relative to the folder ``base``.
    Settings not given take ``PredictConfig``'s defaults; a model file must exist."""
    from utils.pipelines.predict import checkpoint_paths   # (torch: only writing a manifest needs it)
    fields = _setting_fields()
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise TypeError(f"not pipeline settings: {', '.join(unknown)}")
    base = Path(base).resolve()
    members = {"detector": yolo_weights, "kp_left": kp_left_path, "kp_right": kp_right_path,
               "refiners": refine_path}
    out: Dict[str, object] = {"format": FORMAT, "version": VERSION}
    for key, value in members.items():
        flag = f"--{MEMBERS[key]}"
        paths = checkpoint_paths(value)
        for p in paths:
            if not Path(p).is_file():
                raise UserError(f"{flag}: file not found: {p}")
        rel = [_relative(p, base) for p in paths]
        out[key] = (rel[0] if rel else None) if key == "detector" else rel
    if not (out["kp_left"] or out["kp_right"]):
        raise UserError("a pipeline needs a keypoint model: give --kp_left_path and/or --kp_right_path")
    out["settings"] = {name: _check_setting("pipeline", name, settings.get(name, _default(f)), f)
                       for name, f in fields.items()}
    return out


def write_pipeline(path, **models_and_settings) -> Path:
    """Write the manifest of ``models_and_settings`` (``manifest_dict``'s keywords) to ``path``."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise UserError(f"--write_pipeline {path}: a pipeline manifest is a .json file")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = manifest_dict(path.parent, **models_and_settings)
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def prediction_options(pipeline: Optional[Pipeline], given: Mapping[str, object]) -> Dict[str, object]:
    """``run_prediction``'s keyword arguments: ``pipeline``'s models and settings (None: none),
    with ``given`` (the settings a command line gave explicitly) over them."""
    return {**(pipeline.predict_kwargs() if pipeline else {}), **given}


def add_pipeline_args(parser, write: bool = True):
    """``--pipeline FILE`` (and ``--write_pipeline FILE``) of a prediction script."""
    parser.add_argument(FLAG, metavar="FILE", dest="pipeline",
                        help="a pipeline manifest (weights/<name>_pipeline.json): the detector, keypoint model(s), "
                             "refiners and prediction settings in one file (docs/outputs.md, \"Pipeline "
                             "manifest\"); flags given on the command line override its values")
    if write:
        parser.add_argument("--write_pipeline", metavar="FILE",
                            help="write a pipeline manifest of the given models and settings to FILE (paths "
                                 "relative to its folder); then predict with it when --data is given, else exit")
    return parser
