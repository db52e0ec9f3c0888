"""ONNX Runtime inference for exported keypoint models (``models.onnx_export``).

``load_onnx_keypoint_model(path, device)`` returns ``(model, codec, config)``, the same
triple as ``models.load_keypoint_model``: ``model`` is an ``OnnxKeypointModel`` that takes a
float batch (B, 3, S, S) as a torch tensor or numpy array and returns the torch model's
output dict (``{"x", "y"}`` SimCC logits, ``{"coords"}`` or ``{"heatmaps"}``) as float32 torch tensors, so
the codec decodes it unchanged. The config and the codec come from the file's metadata
alone.

Execution providers: CPU always; CUDA first when ``device`` is a CUDA device and the
installed onnxruntime has it (the ``onnxruntime-gpu`` build).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from utils.fileio import one_line as _one_line

from .checkpoint import REQUIRED_CONFIG
from .codecs import build_codec
from .onnx_export import CONFIG_KEY, FORMAT_KEY, INPUT_NAME, ONNX_FORMAT, OUTPUTS_KEY

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")


def providers_for(device) -> list:
    """ONNX Runtime providers for a torch-style device name: CUDA (when present) then CPU."""
    import onnxruntime as ort

    dev = torch.device(str(device)) if device not in (None, "", "auto") else torch.device("cpu")
    if dev.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(intra_op_threads: int = 0, graph_opt: str = "all", spinning: bool = False):
    """``onnxruntime.SessionOptions``: ``intra_op_threads`` (0 = onnxruntime's default, one per
    physical core), a graph optimisation level (one of ``GRAPH_OPT_LEVELS``) and whether idle
    intra-op threads spin. Spinning is off by default: the pipeline runs torch and numpy work
    (decoding, crops) between the model calls, and spinning threads would take their CPUs."""
    import onnxruntime as ort

    if graph_opt not in GRAPH_OPT_LEVELS:
        raise ValueError(f"unknown graph optimisation level {graph_opt!r}; known: {', '.join(GRAPH_OPT_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[graph_opt]
    so.intra_op_num_threads = int(intra_op_threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3  # errors only: no per-node provider-assignment warnings
    return so


def read_onnx_config(path) -> Tuple[dict, list]:
    """(config, output names) from an exported keypoint model's metadata.

    Raises ``ValueError`` naming the file when it is missing, not ONNX, or not one of ours."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: ONNX model not found")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise ValueError(f"{p}: not a readable ONNX file ({_one_line(e)})") from None
    meta = {m.key: m.value for m in proto.metadata_props}
    if meta.get(FORMAT_KEY) != ONNX_FORMAT or CONFIG_KEY not in meta:
        raise ValueError(f"{p}: not a hip keypoint ONNX model (no {CONFIG_KEY!r} metadata; export one with "
                         f"export_onnx.py; a YOLO .onnx goes to --yolo_weights)")
    try:
        cfg = json.loads(meta[CONFIG_KEY])
        names = json.loads(meta.get(OUTPUTS_KEY, "null")) or [o.name for o in proto.graph.output]
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: unreadable {CONFIG_KEY} metadata ({e})") from None
    missing = [k for k in REQUIRED_CONFIG if k not in cfg]
    if missing:
        raise ValueError(f"{p}: ONNX metadata config lacks {', '.join(missing)}")
    return cfg, list(names)


class OnnxKeypointModel:
    """An exported keypoint model in an ONNX Runtime session, called like the torch model.

    ``model(x)`` with x (B, 3, S, S) float (torch tensor on any device, or numpy array)
    returns ``{name: float32 torch tensor}`` on x's device (CPU for numpy input).
    ``to(...)``, ``eval()`` and ``float()`` are accepted and return the model, so code written
    for the torch model runs unchanged; the session's provider is chosen at load time."""

    def __init__(self, path, device="cpu", intra_op_threads: int = 0, graph_opt: str = "all",
                 spinning: bool = False, providers: Optional[list] = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.config, self.output_names = read_onnx_config(self.path)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(intra_op_threads, graph_opt, spinning),
                                                providers=providers or providers_for(device))
        except Exception as e:
            raise ValueError(f"{self.path}: ONNX Runtime cannot load it ({_one_line(e)})") from None
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name if inputs else INPUT_NAME
        self.input_size = int(self.config["input_size"])
        self.model_name = self.config["model_name"]
        self.head_type = self.config["head_type"]
        self.num_keypoints = int(self.config["num_keypoints"])
        self.training = False

    @property
    def providers(self) -> list:
        return self.session.get_providers()

    def __repr__(self) -> str:
        return (f"OnnxKeypointModel({self.path.name}: {self.model_name} + {self.head_type} @ {self.input_size}, "
                f"{self.providers[0]})")

    def __call__(self, x) -> Dict[str, torch.Tensor]:
        device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", torch.float32).contiguous().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        s = self.input_size
        if x.ndim != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"{self.path.name} takes (B, 3, {s}, {s}) crops, got {tuple(x.shape)}")
        outs = self.session.run(self.output_names, {self.input_name: x})
        return {k: torch.from_numpy(v).to(device) for k, v in zip(self.output_names, outs)}

    forward = __call__

    def to(self, *args, **kwargs) -> "OnnxKeypointModel":
        return self

    def eval(self) -> "OnnxKeypointModel":
        return self

    def float(self) -> "OnnxKeypointModel":
        return self


def load_onnx_keypoint_model(path, device="cpu", **session_kwargs) -> Tuple[OnnxKeypointModel, object, dict]:
    """(ONNX model, codec, config) from an exported ``.onnx`` file; the same triple as
    ``models.load_keypoint_model``. ``session_kwargs`` go to ``OnnxKeypointModel``.
    Raises ``ValueError`` naming the file."""
    model = OnnxKeypointModel(path, device=device, **session_kwargs)
    cfg = model.config
    try:
        codec = build_codec(cfg["head_type"], int(cfg["input_size"]), float(cfg.get("split_ratio", 2.0)),
                            float(cfg.get("sigma", 6.0)), cfg.get("decode"))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: cannot build the codec from its config ({_one_line(e)})") from None
    return model, codec, cfg
