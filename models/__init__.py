"""Keypoint models: timm backbones, heads, SimCC / regression codecs, losses, checkpoints.

    from models import build_model, build_codec, list_backbones, HEADS
    model = build_model("convnext_small_custom", "simcc_2d", num_keypoints=6, input_size=256)
    codec = build_codec("simcc_2d", input_size=256)
    coords_px, confidence = codec.decode(model(x))
"""
from .backbones import BACKBONES, build_backbone, list_backbones
from .checkpoint import load_keypoint_model, read_checkpoint, save_checkpoint
from .codecs import RegressionCodec, SimCCCodec, build_codec
from .factory import KeypointModel, build_model
from .heads import HEADS, SIMCC_HEADS

__all__ = [
    "BACKBONES", "HEADS", "SIMCC_HEADS", "KeypointModel", "RegressionCodec", "SimCCCodec",
    "build_backbone", "build_codec", "build_model", "list_backbones",
    "load_keypoint_model", "read_checkpoint", "save_checkpoint",
]
