"""Keypoint models: timm backbones, heads, SimCC / heatmap / regression codecs, losses, checkpoints.

    from models import build_model, build_codec, get_loss, list_backbones, HEADS
    model = build_model("convnext_small_custom", "simcc_2d", num_keypoints=6, input_size=256)
    codec = build_codec("simcc_2d", input_size=256)
    targets, weights = codec.encode(coords_px)
    loss = get_loss(None, "simcc_2d")(model(x), targets, weights)   # the codec's default loss
    coords_px, confidence = codec.decode(model(x))

Backbones, heads, codecs, losses and attention necks are each one registry (``models.registry``).
"""
from . import losses  # noqa: F401  (registers the losses)
from . import mamba_vision  # noqa: F401  (registers MambaVision where its optional package imports)
from .backbones import build_backbone, list_backbones, optional_backbones_help, unavailable_reason
from .checkpoint import load_keypoint_model, read_checkpoint, save_checkpoint
from .codecs import HeatmapCodec, RegressionCodec, SimCCCodec, build_codec
from .factory import KeypointModel, build_keypoint_model, build_model
from .heads import SIMCC_HEADS
from .necks import build_neck
from .registry import (BACKBONES, CODECS, HEADS, LOSSES, NECKS, default_loss_for, get_loss, register_backbone,
                       register_codec, register_head, register_loss, register_neck)

__all__ = [
    "BACKBONES", "CODECS", "HEADS", "LOSSES", "NECKS", "SIMCC_HEADS", "HeatmapCodec", "KeypointModel",
    "RegressionCodec", "SimCCCodec", "build_backbone", "build_codec", "build_neck", "build_keypoint_model",
    "build_model", "default_loss_for", "get_loss",
    "list_backbones", "load_keypoint_model", "optional_backbones_help", "unavailable_reason", "read_checkpoint", "register_backbone", "register_codec",
    "register_head", "register_loss", "register_neck", "save_checkpoint",
]
