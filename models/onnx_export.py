"""Keypoint model -> ONNX file that is enough, alone, to predict.

``export_keypoint_onnx(model, config, path)`` writes the model with a dynamic batch axis:

- input ``input``: float32 (B, 3, S, S), preprocessed crops as the torch model takes them;
- outputs: the names of the torch model's output dict, in its order (``x``, ``y`` for the
  SimCC heads, ``coords`` for direct regression, ``heatmaps`` for the heatmap head), each
  with a dynamic batch axis.

The checkpoint's config (layout, side, mirror, input_size, codec settings split_ratio /
sigma / decode, preprocessing hist_eq / mean / std / crop_expand, ...) goes into the ONNX
``metadata_props`` as JSON under ``hipkp_config``, next to ``hipkp_format`` and
``hipkp_outputs``; ``models.onnx_runtime.load_onnx_keypoint_model`` reads it back. The graph
is checked with ``onnx.checker`` before the file is moved into place.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used: it needs
only the ``onnx`` package (the dynamo exporter would add ``onnxscript``) and handles every
backbone and head of the registry.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn as nn

from utils.fileio import one_line as _one_line

from .checkpoint import _unwrap, load_keypoint_model, to_plain

ONNX_FORMAT = "hipkp-keypoint-onnx"
ONNX_FORMAT_VERSION = 1
CONFIG_KEY = "hipkp_config"
FORMAT_KEY = "hipkp_format"
VERSION_KEY = "hipkp_format_version"
OUTPUTS_KEY = "hipkp_outputs"
INPUT_NAME = "input"
DEFAULT_OPSET = 17


class _TupleOutputs(nn.Module):
    """The keypoint model with its output dict as a tuple, in ``names`` order (ONNX outputs)."""

    def __init__(self, model: nn.Module, names):
        super().__init__()
        self.model, self.names = model, tuple(names)

    def forward(self, x):
        out = self.model(x)
        return tuple(out[k] for k in self.names)


def export_keypoint_onnx(model: nn.Module, config: dict, path, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (eval mode, CPU, float32) to ``path`` as ONNX with ``config`` in its metadata.

    The file is checked with ``onnx.checker`` and moved into place atomically. Returns the path."""
    import onnx

    path = Path(path)
    base = _unwrap(model).float().cpu().eval()
    cfg = to_plain(dict(config), "config")
    size = int(cfg["input_size"])
    dummy = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        names = list(base(dummy).keys())
    wrapped = _TupleOutputs(base, names).eval()
    axes = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # the legacy-exporter notice, and the heads' feature-size check, which is constant
            # for a fixed input size (the batch is the only dynamic axis)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(wrapped, (dummy,), tmp, input_names=[INPUT_NAME], output_names=names,
                              dynamic_axes=axes, opset_version=int(opset), do_constant_folding=True,
                              dynamo=False)
        proto = onnx.load(tmp)
        meta = {CONFIG_KEY: json.dumps(cfg, default=str), FORMAT_KEY: ONNX_FORMAT,
                VERSION_KEY: str(ONNX_FORMAT_VERSION), OUTPUTS_KEY: json.dumps(names)}
        del proto.metadata_props[:]
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        proto.doc_string = (f"hip keypoint model {cfg.get('model_name')} + {cfg.get('head_type')} @ {size}, "
                            f"layout {cfg.get('layout')}, side {cfg.get('side', 'left')}")
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp's 0600 -> the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def compare_with_torch(model: nn.Module, codec, onnx_model, batch: int = 3, seed: int = 0) -> Dict[str, float]:
    """Max abs differences between the torch model and its ONNX export on one random batch:
    ``outputs`` (raw logits / coordinates) and ``keypoints_px`` (decoded by ``codec``, crop pixels)."""
    size = int(onnx_model.input_size)
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32))
    with torch.inference_mode():
        ref = model.float().cpu().eval()(x)
        got = onnx_model(x)
        out_diff = max(float((ref[k].float() - got[k]).abs().max()) for k in ref)
        kp_diff = float((codec.decode(ref)[0] - codec.decode(got)[0]).abs().max())
    return {"outputs": out_diff, "keypoints_px": kp_diff}


def export_checkpoint_onnx(ckpt_path, out_path, opset: int = DEFAULT_OPSET,
                           verify: bool = True) -> Tuple[Path, Dict[str, float]]:
    """Export the keypoint checkpoint ``ckpt_path`` (see ``models.checkpoint``) to ``out_path``.

    With ``verify`` the file is loaded back with ONNX Runtime (CPU) and compared with the
    torch model (``compare_with_torch``). Returns (path, differences or {}).
    Raises ``ValueError`` naming the file for an unreadable checkpoint or a failed export."""
    model, codec, cfg = load_keypoint_model(ckpt_path, device="cpu")
    try:
        path = export_keypoint_onnx(model, cfg, out_path, opset=opset)
    except Exception as e:  # an exporter or checker failure: one line naming the file
        raise ValueError(f"{ckpt_path}: ONNX export failed ({_one_line(e)})") from None
    diffs = {}
    if verify:
        from .onnx_runtime import OnnxKeypointModel  # (onnx_runtime imports this module: a cycle at import time)
        diffs = compare_with_torch(model, codec, OnnxKeypointModel(path, device="cpu"))
    return path, diffs
