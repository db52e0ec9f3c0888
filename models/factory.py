"""``build_keypoint_model`` (also ``build_model``): backbone (by name) + head (by type) -> one keypoint model.

``model(x)`` with x (B, 3, input_size, input_size) returns a dict: SimCC heads
``{"x": (B, K, N), "y": (B, K, N)}`` logits, direct regression ``{"coords": (B, K, 2)}``
in [0, 1], the heatmap head ``{"heatmaps": (B, K, H, W)}`` (H = W = round(input_size / 4)).
Decode it with the codec from ``build_codec(model.head_type, ...)``.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn

from .backbones import Pretrained, build_backbone, get_backbone_spec
from .heads import build_head
from .necks import build_neck
from .registry import HEADS, NECKS


class KeypointModel(nn.Module):
    """Backbone -> neck (attention, or identity) -> head. ``build_args`` records what rebuilds
    it (used by checkpoints)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, build_args: dict, neck: nn.Module = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck if neck is not None else nn.Identity()
        self.head = head
        self.build_args = dict(build_args)
        self.model_name = build_args["model_name"]
        self.head_type = build_args["head_type"]
        self.num_keypoints = build_args["num_keypoints"]
        self.input_size = build_args["input_size"]
        self.split_ratio = build_args["split_ratio"]
        self.attention = build_args.get("attention", "none")

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.head(self.neck(self.backbone(x)))


@torch.no_grad()
def _feature_hw(backbone: nn.Module, input_size: int):
    """Feature map size for this input size, by one dry forward in eval mode (exact for any
    padding rule; BN statistics are untouched)."""
    was_training = backbone.training
    backbone.eval()
    try:
        p = next(backbone.parameters())
        f = backbone(torch.zeros(1, 3, input_size, input_size, device=p.device, dtype=p.dtype))
    finally:
        backbone.train(was_training)
    return tuple(f.shape[-2:])


def build_keypoint_model(model_name: str, head_type: str, num_keypoints: int, input_size: int,
                split_ratio: float = 2.0, pretrained: Pretrained = None, attention: str = "none",
                **backbone_kwargs) -> KeypointModel:
    """Keypoint model: backbone ``model_name`` (``list_backbones()``) with head ``head_type``
    (``HEADS``) for ``num_keypoints`` points on square ``input_size`` crops, and the attention
    neck ``attention`` (``NECKS``: none, se, cbam, eca) between them.

    ``pretrained``: None, a local state-dict path, or "timm" (see ``models.backbones``).
    ``backbone_kwargs`` go to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """
    HEADS.get(head_type)  # ValueError naming the known heads
    NECKS.get(attention)  # ValueError naming the known attention necks
    if int(num_keypoints) < 1 or int(input_size) < 8 or split_ratio <= 0:
        raise ValueError(f"bad model size: num_keypoints={num_keypoints}, input_size={input_size}, "
                         f"split_ratio={split_ratio}")
    multiple = get_backbone_spec(model_name).size_multiple
    if int(input_size) % multiple:
        raise ValueError(f"backbone {model_name} needs an input_size that is a multiple of {multiple}, "
                         f"got {input_size}")
    backbone = build_backbone(model_name, pretrained=pretrained, **backbone_kwargs)
    feat_hw = _feature_hw(backbone, int(input_size))
    head = build_head(head_type, backbone.out_channels, int(num_keypoints), int(input_size),
                      float(split_ratio), feat_hw, backbone.stride)
    args = dict(model_name=model_name, head_type=head_type, num_keypoints=int(num_keypoints),
                input_size=int(input_size), split_ratio=float(split_ratio), attention=str(attention),
                backbone_kwargs=dict(backbone_kwargs))
    return KeypointModel(backbone, head, args, neck=build_neck(attention, backbone.out_channels))


build_model = build_keypoint_model  # the older public name, kept
