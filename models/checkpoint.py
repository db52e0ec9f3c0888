"""Keypoint-model checkpoints: atomic save, safe load.

A checkpoint is a ``torch.save`` file holding one dict of tensors and plain Python
values only (str, int, float, bool, None, list, tuple, dict), so that
``torch.load(path, map_location=..., weights_only=True)`` reads it::

    {"format": "hipkp-keypoint-checkpoint", "format_version": 1,
     "state_dict": {name: tensor},          # no "module." / "_orig_mod." prefixes
     "config": {model_name, head_type, input_size, split_ratio, sigma, decode, layout, side, mirror,
                crop_expand, num_keypoints, hist_eq, mean, std, epoch, metrics, exp_name,
                attention, pipeline, ...},
     **extra}                                # e.g. optimizer, scheduler, epoch, metrics

``num_keypoints`` is the number of points the model predicts: per side for a hip-crop
model, every point of the layout for a full-image one (``pipeline`` "full_image");
``attention`` is the neck (absent in older checkpoints: "none"); ``decode`` the decode mode (None or
absent: the codec's default). ``load_keypoint_model`` rebuilds the
model from the config alone (no pretrained weights are fetched) and never unpickles
anything but tensors and plain values: anything else raises ``ValueError`` naming the file.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn as nn

from utils.fileio import atomic_write, one_line

from .codecs import build_codec
from .factory import build_model

FORMAT = "hipkp-keypoint-checkpoint"
FORMAT_VERSION = 1
REQUIRED_CONFIG = ("model_name", "head_type", "num_keypoints", "input_size")
# config keys that must agree with the model being saved
_MODEL_KEYS = ("model_name", "head_type", "num_keypoints", "input_size", "split_ratio", "attention")


# ---------------------------------------------------------------- saving

def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def clean_state_dict(state_dict: Mapping) -> Dict[str, torch.Tensor]:
    """Detached tensors with leading "module." and any "_orig_mod." components removed."""
    out = {}
    for key, value in state_dict.items():
        parts = [p for p in key.split(".") if p != "_orig_mod"]
        while parts and parts[0] == "module":
            parts = parts[1:]
        out[".".join(parts)] = value.detach()
    return out


def to_plain(obj, where: str = "checkpoint"):
    """``obj`` as tensors and plain Python values (what ``weights_only=True`` can read).

    numpy scalars/arrays and paths are converted; anything else raises ``TypeError``."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if isinstance(k, np.generic):
                k = k.item()
            if not isinstance(k, (str, int, float, bool)):
                raise TypeError(f"{where}: dict key {k!r} of type {type(k).__name__} cannot be saved")
            out[k] = to_plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):  # tuples stay tuples (e.g. Adam's betas)
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise TypeError(f"{where} is a {type(obj).__name__}; a checkpoint holds only tensors and "
                    f"plain Python values (str/int/float/bool/None/list/tuple/dict)")


def save_checkpoint(path, model: nn.Module, config: dict, **extra) -> Path:
    """Write ``model``'s weights, ``config`` and ``extra`` to ``path`` atomically.

    The file is written to a temporary file in the same folder and moved into place with
    ``os.replace``, so a reader never sees a half-written checkpoint. Config keys missing
    from ``config`` are filled from the model's build arguments; conflicting ones raise
    ``ValueError``. Returns the path.
    """
    path = Path(path)
    base = _unwrap(model)
    cfg = to_plain(dict(config), "config")
    build_args = getattr(base, "build_args", None)
    if build_args:
        for key in _MODEL_KEYS:
            if key not in build_args:
                continue
            if key in cfg and cfg[key] != build_args[key]:
                raise ValueError(f"config {key}={cfg[key]!r} does not match the model ({build_args[key]!r})")
            cfg.setdefault(key, build_args[key])
        if build_args.get("backbone_kwargs"):
            cfg.setdefault("backbone_kwargs", to_plain(build_args["backbone_kwargs"], "backbone_kwargs"))
    missing = [k for k in REQUIRED_CONFIG if k not in cfg]
    if missing:
        raise ValueError(f"config lacks {missing}, needed to rebuild the model")
    reserved = {"format", "format_version", "state_dict", "config"} & set(extra)
    if reserved:
        raise ValueError(f"extra keys {sorted(reserved)} are reserved")
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "state_dict": clean_state_dict(base.state_dict()), "config": cfg}
    ckpt.update({k: to_plain(v, k) for k, v in extra.items()})

    with atomic_write(path, "wb", fsync=True) as f:
        torch.save(ckpt, f)
    return path


# ---------------------------------------------------------------- loading


def read_checkpoint(path, map_location="cpu") -> dict:
    """The checkpoint dict at ``path`` (read with ``weights_only=True``: no code runs).

    Raises ``ValueError`` naming the file when it is missing, unreadable, would need
    arbitrary objects, or lacks a state dict and a config."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"{p}: not a valid checkpoint, or it holds objects other than tensors and "
                         f"plain values, which are refused ({one_line(e)})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{p}: not a keypoint checkpoint (a {type(ckpt).__name__}, expected a dict)")
    sd, cfg = ckpt.get("state_dict"), ckpt.get("config")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{p}: not a keypoint checkpoint (no 'state_dict' of tensors; "
                         f"a bare state dict has no config to rebuild the model from)")
    if not isinstance(cfg, dict):
        raise ValueError(f"{p}: not a keypoint checkpoint (no 'config' dict)")
    missing = [k for k in REQUIRED_CONFIG if k not in cfg]
    if missing:
        raise ValueError(f"{p}: checkpoint config lacks {', '.join(missing)}")
    return ckpt


def load_keypoint_model(path, device="cpu") -> Tuple[nn.Module, object, dict]:
    """(model in eval mode on ``device``, codec, config) from a checkpoint file.

    The model is rebuilt from the config alone (``pretrained=None``, nothing downloaded)."""
    p = Path(path)
    ckpt = read_checkpoint(p)
    cfg = ckpt["config"]
    try:
        model = build_model(cfg["model_name"], cfg["head_type"], int(cfg["num_keypoints"]),
                            int(cfg["input_size"]), float(cfg.get("split_ratio", 2.0)), pretrained=None,
                            attention=str(cfg.get("attention", "none")), **dict(cfg.get("backbone_kwargs") or {}))
        codec = build_codec(cfg["head_type"], int(cfg["input_size"]), float(cfg.get("split_ratio", 2.0)),
                            float(cfg.get("sigma", 6.0)), cfg.get("decode"))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{p}: cannot rebuild the model from its config ({one_line(e)})") from None
    sd, own = ckpt["state_dict"], model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in sd if k in own and own[k].shape != sd[k].shape]
    if missing or unexpected or mismatched:
        raise ValueError(f"{p}: weights do not fit {cfg['model_name']} + {cfg['head_type']} "
                         f"({len(missing)} missing, {len(unexpected)} unexpected keys, "
                         f"{len(mismatched)} shape mismatches)")
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval(), codec, cfg
